package store

import (
	"fmt"
	"slices"
	"time"
)

// This file holds the argument checks of the Store contract, shared by every
// backend so that they reject exactly the same inputs. Each check returns an
// error wrapping ErrInvalidArgument.

// ValidateTime checks a time argument: it must be non-zero and in the years 1
// to 9999 (UTC). name says which argument it is, for the message.
func ValidateTime(name string, t time.Time) error {
	if t.IsZero() {
		return fmt.Errorf("%s is not set: %w", name, ErrInvalidArgument)
	}
	if y := t.UTC().Year(); y < 1 || y > 9999 {
		return fmt.Errorf("%s %s is outside the years 1 to 9999: %w", name, t.Format(time.RFC3339), ErrInvalidArgument)
	}
	return nil
}

// Valid reports whether o is one of the defined origins.
func (o Origin) Valid() bool {
	return o == OriginRandom || o == OriginDerived || o == OriginImported
}

// Validate checks one key to be added: a non-empty SealedSecret, a defined
// Origin, and a derivation index for a derived key.
func (k NewKey) Validate() error {
	if len(k.SealedSecret) == 0 {
		return fmt.Errorf("key %s has no sealed secret: %w", k.Pubkey, ErrInvalidArgument)
	}
	if !k.Origin.Valid() {
		return fmt.Errorf("key %s has unknown origin %q: %w", k.Pubkey, k.Origin, ErrInvalidArgument)
	}
	if k.Origin == OriginDerived && !k.HasDerivationIndex {
		return fmt.Errorf("derived key %s has no derivation index: %w", k.Pubkey, ErrInvalidArgument)
	}
	return nil
}

// ValidateNewKeys checks every key with NewKey.Validate and that no pubkey
// appears twice.
func ValidateNewKeys(keys []NewKey) error {
	seen := make(map[Pubkey]struct{}, len(keys))
	for _, k := range keys {
		if err := k.Validate(); err != nil {
			return err
		}
		if _, dup := seen[k.Pubkey]; dup {
			return fmt.Errorf("key %s is given twice: %w", k.Pubkey, ErrInvalidArgument)
		}
		seen[k.Pubkey] = struct{}{}
	}
	return nil
}

// Validate checks the arguments of Store.Claim.
func (p ClaimParams) Validate() error {
	if p.Pod == "" {
		return fmt.Errorf("claim: pod name is empty: %w", ErrInvalidArgument)
	}
	if p.Want < 0 {
		return fmt.Errorf("claim for pod %s: want %d keys, must not be negative: %w", p.Pod, p.Want, ErrInvalidArgument)
	}
	if p.Want == 0 && (p.ReserveToken != "" || p.AllOrNothing) {
		return fmt.Errorf("claim for pod %s: a claim of 0 keys only records a UID; it takes no reservation and no all or nothing: %w", p.Pod, ErrInvalidArgument)
	}
	if err := ValidateTime("claim time", p.Now); err != nil {
		return fmt.Errorf("claim for pod %s: %w", p.Pod, err)
	}
	if p.ReserveToken == "" {
		return nil
	}
	if err := validateToken(p.ReserveToken); err != nil {
		return fmt.Errorf("claim for pod %s: %w", p.Pod, err)
	}
	if p.AllOrNothing {
		return fmt.Errorf("claim for pod %s: a reservation to mint and all or nothing exclude each other: %w", p.Pod, ErrInvalidArgument)
	}
	if err := ValidateTime("reservation expiry", p.ReserveUntil); err != nil {
		return fmt.Errorf("claim for pod %s: %w", p.Pod, err)
	}
	if !p.ReserveUntil.Truncate(time.Microsecond).After(p.Now.Truncate(time.Microsecond)) {
		return fmt.Errorf("claim for pod %s: reservation expiry %s is not after the claim time %s: %w",
			p.Pod, p.ReserveUntil.Format(time.RFC3339Nano), p.Now.Format(time.RFC3339Nano), ErrInvalidArgument)
	}
	return nil
}

// validateToken checks a non-empty reservation token's length.
func validateToken(token string) error {
	if len(token) > MaxTokenLength {
		return fmt.Errorf("reservation token of %d bytes, at most %d allowed: %w", len(token), MaxTokenLength, ErrInvalidArgument)
	}
	return nil
}

// ValidateReleaseReservation checks the arguments of
// Store.ReleaseReservation.
func ValidateReleaseReservation(pod, token string) error {
	if pod == "" {
		return fmt.Errorf("mint reservation: pod name is empty: %w", ErrInvalidArgument)
	}
	if token == "" {
		return fmt.Errorf("mint reservation of pod %s: token is empty: %w", pod, ErrInvalidArgument)
	}
	if err := validateToken(token); err != nil {
		return fmt.Errorf("mint reservation of pod %s: %w", pod, err)
	}
	return nil
}

// ValidateRenewReservation checks the arguments of Store.RenewReservation.
func ValidateRenewReservation(pod, token string, until time.Time) error {
	if err := ValidateReleaseReservation(pod, token); err != nil {
		return err
	}
	if err := ValidateTime("reservation expiry", until); err != nil {
		return fmt.Errorf("renew mint reservation of pod %s: %w", pod, err)
	}
	return nil
}

// Validate checks the arguments of Store.AddAssigned (and of AddPending for
// a pod).
func (p AddParams) Validate() error {
	if p.Pod == "" {
		return fmt.Errorf("add keys: pod name is empty: %w", ErrInvalidArgument)
	}
	if p.Want < 1 {
		return fmt.Errorf("add keys for pod %s: want %d keys, must be at least 1: %w", p.Pod, p.Want, ErrInvalidArgument)
	}
	if len(p.Keys) == 0 {
		return fmt.Errorf("add keys for pod %s: no keys given: %w", p.Pod, ErrInvalidArgument)
	}
	if err := ValidateTime("add time", p.Now); err != nil {
		return fmt.Errorf("add keys for pod %s: %w", p.Pod, err)
	}
	if err := ValidateNewKeys(p.Keys); err != nil {
		return fmt.Errorf("add keys for pod %s: %w", p.Pod, err)
	}
	if err := validateToken(p.ReserveToken); err != nil {
		return fmt.Errorf("add keys for pod %s: %w", p.Pod, err)
	}
	return nil
}

// ValidateAddKeys checks the arguments of Store.AddKeys.
func ValidateAddKeys(keys []NewKey, state State, now time.Time) error {
	if state != StateAvailable && state != StatePendingDeposit {
		return fmt.Errorf("add keys in state %q: only %s and %s are allowed: %w", state, StateAvailable, StatePendingDeposit, ErrInvalidArgument)
	}
	if err := ValidateTime("add time", now); err != nil {
		return fmt.Errorf("add keys: %w", err)
	}
	if err := ValidateNewKeys(keys); err != nil {
		return fmt.Errorf("add keys: %w", err)
	}
	return nil
}

// ValidateRelease checks the arguments of Store.Release.
func ValidateRelease(pod string, until, now time.Time) error {
	if pod == "" {
		return fmt.Errorf("release: pod name is empty: %w", ErrInvalidArgument)
	}
	if err := ValidateTime("release time", now); err != nil {
		return fmt.Errorf("release pod %s: %w", pod, err)
	}
	if err := ValidateTime("cooling-down end", until); err != nil {
		return fmt.Errorf("release pod %s: %w", pod, err)
	}
	if until.Before(now) {
		return fmt.Errorf("release pod %s: cooling-down end %s is before the release time %s: %w",
			pod, until.Format(time.RFC3339Nano), now.Format(time.RFC3339Nano), ErrInvalidArgument)
	}
	return nil
}

// Validate checks the arguments of Store.Release.
func (p ReleaseParams) Validate() error {
	if err := ValidateRelease(p.Pod, p.Until, p.Now); err != nil {
		return err
	}
	for pk, pr := range p.Protection {
		if err := ValidateProtection(pk, pr); err != nil {
			return fmt.Errorf("release pod %s: %w", p.Pod, err)
		}
	}
	return nil
}

// ValidatePending checks the arguments of Store.AddPending: like Validate,
// except that p.Pod may be empty, and then p.PodUID must be empty too and
// p.Want is not checked.
func (p AddParams) ValidatePending() error {
	if p.Pod != "" {
		return p.Validate()
	}
	if p.PodUID != "" {
		return fmt.Errorf("add pending keys: pod UID %q without a pod name: %w", p.PodUID, ErrInvalidArgument)
	}
	if p.ReserveToken != "" {
		return fmt.Errorf("add pending keys: reservation token without a pod name: %w", ErrInvalidArgument)
	}
	if len(p.Keys) == 0 {
		return fmt.Errorf("add pending keys: no keys given: %w", ErrInvalidArgument)
	}
	if err := ValidateTime("add time", p.Now); err != nil {
		return fmt.Errorf("add pending keys: %w", err)
	}
	if err := ValidateNewKeys(p.Keys); err != nil {
		return fmt.Errorf("add pending keys: %w", err)
	}
	return nil
}

// ValidateSetDepositTx checks the arguments of Store.SetDepositTx.
func ValidateSetDepositTx(pubkey Pubkey, tx DepositTx, now time.Time) error {
	if len(tx.Raw) == 0 {
		return fmt.Errorf("record deposit transaction of key %s: no raw transaction: %w", pubkey, ErrInvalidArgument)
	}
	if err := ValidateTime("record time", now); err != nil {
		return fmt.Errorf("record deposit transaction of key %s: %w", pubkey, err)
	}
	return nil
}

// ValidateConfirmDeposit checks the arguments of Store.ConfirmDeposit. Block
// 0 is refused: in a DepositTx it means "not confirmed".
func ValidateConfirmDeposit(pubkey Pubkey, block uint64, now time.Time) error {
	if block == 0 {
		return fmt.Errorf("confirm deposit of key %s: block number 0: %w", pubkey, ErrInvalidArgument)
	}
	if err := ValidateTime("confirmation time", now); err != nil {
		return fmt.Errorf("confirm deposit of key %s: %w", pubkey, err)
	}
	return nil
}

// ValidateFailDeposit checks the arguments of Store.FailDeposit.
func ValidateFailDeposit(pubkey Pubkey, reason string, now time.Time) error {
	if reason == "" {
		return fmt.Errorf("fail deposit of key %s: no reason given: %w", pubkey, ErrInvalidArgument)
	}
	if err := ValidateTime("failure time", now); err != nil {
		return fmt.Errorf("fail deposit of key %s: %w", pubkey, err)
	}
	return nil
}

// Validate checks an audit event given to Store.AppendAudit (or Load): a
// non-empty Action and a valid Time. Seq is not checked.
func (e AuditEvent) Validate() error {
	if e.Action == "" {
		return fmt.Errorf("audit event: action is empty: %w", ErrInvalidArgument)
	}
	if err := ValidateTime("audit event time", e.Time); err != nil {
		return fmt.Errorf("audit event %q: %w", e.Action, err)
	}
	return nil
}

// ValidateListAudit checks the arguments of Store.ListAudit.
func ValidateListAudit(limit int) error {
	if limit < 1 {
		return fmt.Errorf("list audit events: limit %d, must be at least 1: %w", limit, ErrInvalidArgument)
	}
	return nil
}

// ValidateLoad checks the input of Store.Load: every key must be a record
// the store could hold, and together they must keep the store's invariants.
//
//   - each key: a defined State and Origin, a non-empty SealedSecret, a
//     derivation index when derived, CreatedAt and Since set, every set time
//     valid (see ValidateTime), a DepositTx (when present) with RecordedAt
//     set;
//   - Pod: non-empty with LastPod = Pod when assigned, empty in every state
//     but assigned and pending-deposit; PodUID only with a Pod;
//   - CoolingUntil set exactly in cooling-down; RetiredReason empty but in
//     retired and deposit-failed;
//   - no pubkey twice; all keys of one pod (assigned and pending) carry one
//     PodUID;
//   - snap: binding names non-empty; audit events valid (see
//     AuditEvent.Validate) with Seq >= 1 and strictly increasing.
func ValidateLoad(snap Snapshot, keys []Key) error {
	seen := make(map[Pubkey]struct{}, len(keys))
	podUID := make(map[string]string)
	for i := range keys {
		k := &keys[i]
		if err := validateLoadedKey(k); err != nil {
			return fmt.Errorf("load: key %d (%s): %w", i, k.Pubkey, err)
		}
		if _, dup := seen[k.Pubkey]; dup {
			return fmt.Errorf("load: key %s is given twice: %w", k.Pubkey, ErrInvalidArgument)
		}
		seen[k.Pubkey] = struct{}{}
		if k.Pod == "" {
			continue
		}
		if uid, ok := podUID[k.Pod]; ok && uid != k.PodUID {
			return fmt.Errorf("load: pod %s holds keys under UIDs %q and %q: %w", k.Pod, uid, k.PodUID, ErrInvalidArgument)
		}
		podUID[k.Pod] = k.PodUID
	}
	for name := range snap.Bindings {
		if name == "" {
			return fmt.Errorf("load: binding with an empty name: %w", ErrInvalidArgument)
		}
	}
	var last uint64
	for i, e := range snap.Audit {
		if e.Seq <= last {
			return fmt.Errorf("load: audit event %d has Seq %d after Seq %d; want Seq >= 1, strictly increasing: %w", i, e.Seq, last, ErrInvalidArgument)
		}
		last = e.Seq
		if err := e.Validate(); err != nil {
			return fmt.Errorf("load: audit event %d (Seq %d): %w", i, e.Seq, err)
		}
	}
	return nil
}

func validateLoadedKey(k *Key) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrInvalidArgument)
	}
	if !k.State.Valid() {
		return bad("undefined state %q", k.State)
	}
	if err := (NewKey{Pubkey: k.Pubkey, SealedSecret: k.SealedSecret, Origin: k.Origin, HasDerivationIndex: k.HasDerivationIndex}).Validate(); err != nil {
		return err
	}
	for _, tm := range []struct {
		name     string
		t        time.Time
		required bool
	}{
		{"CreatedAt", k.CreatedAt, true},
		{"Since", k.Since, true},
		{"CoolingUntil", k.CoolingUntil, false},
		{"ReleasedAt", k.ReleasedAt, false},
	} {
		if tm.t.IsZero() && !tm.required {
			continue
		}
		if err := ValidateTime(tm.name, tm.t); err != nil {
			return err
		}
	}
	if k.DepositTx != nil {
		if err := ValidateTime("DepositTx.RecordedAt", k.DepositTx.RecordedAt); err != nil {
			return err
		}
	}
	switch k.State {
	case StateAssigned:
		if k.Pod == "" {
			return bad("assigned without a pod")
		}
		if k.LastPod != k.Pod {
			return bad("assigned to %q but LastPod is %q", k.Pod, k.LastPod)
		}
	case StatePendingDeposit:
	default:
		if k.Pod != "" {
			return bad("%s but has pod %q", k.State, k.Pod)
		}
	}
	if k.Pod == "" && k.PodUID != "" {
		return bad("PodUID %q without a pod", k.PodUID)
	}
	if (k.State == StateCoolingDown) == k.CoolingUntil.IsZero() {
		return bad("CoolingUntil must be set exactly in %s", StateCoolingDown)
	}
	if k.RetiredReason != "" && !k.State.HasReason() {
		return bad("%s with RetiredReason %q", k.State, k.RetiredReason)
	}
	if k.Protection != nil {
		if err := ValidateProtection(k.Pubkey, *k.Protection); err != nil {
			return err
		}
	}
	return nil
}

// HasReason reports whether keys in state s carry a RetiredReason.
func (s State) HasReason() bool {
	return s == StateRetired || s == StateDepositFailed || s == StateStillSigning || s == StateExiting
}

// ValidateStates checks that every state in states is defined.
func ValidateStates(states []State) error {
	for _, st := range states {
		if !st.Valid() {
			return fmt.Errorf("unknown key state %q: %w", st, ErrInvalidArgument)
		}
	}
	return nil
}

// ValidateRecoverDeposit checks the arguments of Store.RecoverDeposit.
func ValidateRecoverDeposit(pubkey Pubkey, block uint64, reason string, now time.Time) error {
	if block == 0 {
		return fmt.Errorf("recover deposit of key %s: block number 0: %w", pubkey, ErrInvalidArgument)
	}
	if reason == "" {
		return fmt.Errorf("recover deposit of key %s: no reason given: %w", pubkey, ErrInvalidArgument)
	}
	if err := ValidateTime("recovery time", now); err != nil {
		return fmt.Errorf("recover deposit of key %s: %w", pubkey, err)
	}
	return nil
}

// ValidateQuarantine checks the arguments of Store.Quarantine.
func ValidateQuarantine(reason string, now time.Time) error {
	if reason == "" {
		return fmt.Errorf("quarantine keys: no reason given: %w", ErrInvalidArgument)
	}
	if err := ValidateTime("quarantine time", now); err != nil {
		return fmt.Errorf("quarantine keys: %w", err)
	}
	return nil
}

// ValidateCoolDown checks the arguments of Store.CoolDown.
func ValidateCoolDown(until, now time.Time) error {
	if err := ValidateTime("cooling-down end", until); err != nil {
		return fmt.Errorf("cool down keys: %w", err)
	}
	if err := ValidateTime("cool-down time", now); err != nil {
		return fmt.Errorf("cool down keys: %w", err)
	}
	return nil
}

// ValidateProtection checks watermarks: an attestation's source is not
// after its target (EIP-3076's conditions).
func ValidateProtection(pk Pubkey, p Protection) error {
	if p.HasAttestation && p.SourceEpoch > p.TargetEpoch {
		return fmt.Errorf("slashing protection of key %s: source epoch %d after target epoch %d: %w", pk, p.SourceEpoch, p.TargetEpoch, ErrInvalidArgument)
	}
	return nil
}

// ValidateRetire checks the arguments of Store.Retire.
func ValidateRetire(pubkey Pubkey, now time.Time) error {
	if err := ValidateTime("retire time", now); err != nil {
		return fmt.Errorf("retire key %s: %w", pubkey, err)
	}
	return nil
}

// ValidateSweep checks the argument of Store.Sweep.
func ValidateSweep(now time.Time) error {
	if err := ValidateTime("sweep time", now); err != nil {
		return fmt.Errorf("sweep: %w", err)
	}
	return nil
}

// Validate checks the options of Store.ListKeys: every state defined,
// Pod and Pods not both set, no empty name in Pods.
func (o ListOptions) Validate() error {
	if err := ValidateStates(o.States); err != nil {
		return fmt.Errorf("list keys: %w", err)
	}
	if o.Pod != "" && len(o.Pods) > 0 {
		return fmt.Errorf("list keys: both Pod and Pods set: %w", ErrInvalidArgument)
	}
	if slices.Contains(o.Pods, "") {
		return fmt.Errorf("list keys: an empty name in Pods: %w", ErrInvalidArgument)
	}
	return nil
}

// PodNames is the pod filter of o, Pod or Pods, without repeated names;
// nil when o lists keys of every pod.
func (o ListOptions) PodNames() []string {
	if o.Pod != "" {
		return []string{o.Pod}
	}
	if len(o.Pods) == 0 {
		return nil
	}
	names := slices.Clone(o.Pods)
	slices.Sort(names)
	return slices.Compact(names)
}

// ValidateReserveIndices checks the argument of Store.ReserveIndices.
func ValidateReserveIndices(count int) error {
	if count < 1 {
		return fmt.Errorf("reserve %d derivation indices: count must be at least 1: %w", count, ErrInvalidArgument)
	}
	return nil
}

// ValidateBind checks the name of Store.Bind.
func ValidateBind(name string) error {
	if name == "" {
		return fmt.Errorf("bind: name is empty: %w", ErrInvalidArgument)
	}
	return nil
}
