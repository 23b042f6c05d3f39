// Package beacontest has a fake beacon node for unit tests of code that
// uses package beacon.
package beacontest

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pkmanager/pkmanager/internal/beacon"
	"github.com/pkmanager/pkmanager/internal/store"
)

// Fake is a beacon node that answers the requests package beacon makes, from
// state the test sets, the way the beacon API specifies them (the standard
// POST forms, or with Legacy only the older GET forms). It is for tests of
// code that uses a Node; the proof against a real node is in the Lodestar
// tests.
//
// Validator statuses follow the consensus spec's epochs and the beacon
// API's status rules (pending_initialized, pending_queued, active_ongoing,
// active_exiting, active_slashed, exited_unslashed, exited_slashed,
// withdrawal_possible); a voluntary exit it accepts has its signature
// verified (DOMAIN_VOLUNTARY_EXIT with the Capella fork version, EIP-7044)
// and sets the validator's exit epoch as initiate_validator_exit does
// (current epoch + 1 + MAX_SEED_LOOKAHEAD, no churn limit).
type Fake struct {
	Chain beacon.Chain
	// Legacy serves only the GET forms of liveness and validators
	// (Lodestar 1.5.1).
	Legacy bool
	// WithdrawableDelay is MIN_VALIDATOR_WITHDRAWABILITY_DELAY (epochs from
	// exit to withdrawable); 0 means 256, mainnet's.
	WithdrawableDelay uint64

	mu         sync.Mutex
	validators map[store.Pubkey]uint64
	epochs     map[uint64][2]uint64 // index -> activation, exit epoch (default 0, FAR_FUTURE)
	slashed    map[uint64]bool
	exits      []SubmittedExit
	live       map[uint64]map[uint64]bool // epoch -> index -> live
	down       bool
	now        func() time.Time
	srv        *httptest.Server
	calls      map[string]int
}

// NewFake starts a fake node of chain (its clock is now).
func NewFake(chain beacon.Chain, now func() time.Time) *Fake {
	f := &Fake{Chain: chain, validators: map[store.Pubkey]uint64{}, epochs: map[uint64][2]uint64{}, slashed: map[uint64]bool{},
		live: map[uint64]map[uint64]bool{}, now: now, calls: map[string]int{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	return f
}

// URL is the fake's base URL.
func (f *Fake) URL() string { return f.srv.URL }

// Close stops the fake.
func (f *Fake) Close() { f.srv.Close() }

// AddValidator makes pk the validator with index i.
func (f *Fake) AddValidator(pk store.Pubkey, i uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.validators[pk] = i
}

// SetEpochs sets validator i's activation and exit epoch
// (beacon.FarFutureEpoch: not set); AddValidator's are 0 and not set.
func (f *Fake) SetEpochs(i, activation, exit uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.epochs[i] = [2]uint64{activation, exit}
}

// SetSlashed marks validator i slashed, with its exit epoch set as
// slash_validator does (current epoch + 1 + MAX_SEED_LOOKAHEAD) unless one
// is set already.
func (f *Fake) SetSlashed(i uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.slashed[i] = true
	e, ok := f.epochs[i]
	if !ok {
		e = [2]uint64{0, beacon.FarFutureEpoch}
	}
	if e[1] == beacon.FarFutureEpoch {
		e[1] = f.Chain.Epoch(f.now()) + 1 + maxSeedLookahead
	}
	f.epochs[i] = e
}

// maxSeedLookahead is the consensus spec's MAX_SEED_LOOKAHEAD.
const maxSeedLookahead = 4

// SubmittedExit is a voluntary exit the fake accepted.
type SubmittedExit struct {
	Epoch, Index uint64
	Signature    [96]byte
}

// Exits returns the voluntary exits the fake accepted, in order.
func (f *Fake) Exits() []SubmittedExit {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]SubmittedExit(nil), f.exits...)
}

// SetLive says validator i signed in epoch.
func (f *Fake) SetLive(epoch, i uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.live[epoch] == nil {
		f.live[epoch] = map[uint64]bool{}
	}
	f.live[epoch][i] = true
}

// SetDown makes every request fail (503) while down.
func (f *Fake) SetDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

// Calls returns how many requests each route got ("POST liveness", ...).
func (f *Fake) Calls() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]int, len(f.calls))
	for k, v := range f.calls {
		out[k] = v
	}
	return out
}

func (f *Fake) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		http.Error(w, `{"code":503,"message":"down"}`, http.StatusServiceUnavailable)
		return
	}
	p := r.URL.Path
	write := func(v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	switch {
	case p == "/eth/v1/beacon/genesis":
		f.calls["genesis"]++
		write(map[string]any{"data": map[string]string{
			"genesis_time":            strconv.FormatInt(f.Chain.GenesisTime.Unix(), 10),
			"genesis_validators_root": "0x" + hex.EncodeToString(f.Chain.GenesisValidatorsRoot[:]),
			"genesis_fork_version":    "0x" + hex.EncodeToString(f.Chain.GenesisForkVersion[:]),
		}})
	case p == "/eth/v1/config/spec":
		f.calls["spec"]++
		write(map[string]any{"data": map[string]string{
			"SECONDS_PER_SLOT":     strconv.Itoa(int(f.Chain.SecondsPerSlot / time.Second)),
			"GENESIS_FORK_VERSION": "0x" + hex.EncodeToString(f.Chain.GenesisForkVersion[:]),
			"CAPELLA_FORK_VERSION": "0x" + hex.EncodeToString(f.Chain.CapellaForkVersion[:]),
			"SLOTS_PER_EPOCH":      strconv.FormatUint(f.Chain.SlotsPerEpoch, 10),
		}})
	case p == "/eth/v1/node/syncing":
		write(map[string]any{"data": map[string]any{"head_slot": "1", "sync_distance": "0", "is_syncing": false}})
	case p == "/eth/v1/node/version":
		write(map[string]any{"data": map[string]string{"version": "fake/v0"}})
	case p == "/eth/v1/beacon/states/head/validators" && r.Method == http.MethodGet:
		f.calls["GET validators"]++
		data, ok := f.validatorData(r.URL.Query()["id"])
		if !ok {
			http.Error(w, `{"code":400,"message":"bad id"}`, http.StatusBadRequest)
			return
		}
		write(map[string]any{"data": data})
	case p == "/eth/v1/beacon/states/head/validators" && r.Method == http.MethodPost && !f.Legacy:
		f.calls["POST validators"]++
		var body struct {
			IDs      []string `json:"ids"`
			Statuses []string `json:"statuses"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body.Statuses) != 0 {
			http.Error(w, `{"code":400,"message":"bad body"}`, http.StatusBadRequest)
			return
		}
		data, ok := f.validatorData(body.IDs)
		if !ok {
			http.Error(w, `{"code":400,"message":"bad id"}`, http.StatusBadRequest)
			return
		}
		write(map[string]any{"execution_optimistic": false, "finalized": false, "data": data})
	case p == "/eth/v1/beacon/pool/voluntary_exits" && r.Method == http.MethodPost:
		f.calls["POST voluntary_exits"]++
		if msg := f.acceptExit(r); msg != "" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(map[string]any{"code": 400, "message": msg})
			return
		}
		w.WriteHeader(http.StatusOK)
	case strings.HasPrefix(p, "/eth/v1/validator/liveness/") && r.Method == http.MethodPost && !f.Legacy:
		f.calls["POST liveness"]++
		epoch, err := strconv.ParseUint(strings.TrimPrefix(p, "/eth/v1/validator/liveness/"), 10, 64)
		if err != nil || !f.recent(epoch) {
			http.Error(w, `{"code":400,"message":"epoch out of range"}`, http.StatusBadRequest)
			return
		}
		var ids []string
		if err := json.NewDecoder(r.Body).Decode(&ids); err != nil {
			http.Error(w, `{"code":400}`, http.StatusBadRequest)
			return
		}
		var data []any
		for _, id := range ids {
			i, _ := strconv.ParseUint(id, 10, 64)
			data = append(data, map[string]any{"index": id, "is_live": f.live[epoch][i]})
		}
		write(map[string]any{"data": data})
	case p == "/eth/v1/validator/liveness" && r.Method == http.MethodGet && f.Legacy:
		f.calls["GET liveness"]++
		epoch, err := strconv.ParseUint(r.URL.Query().Get("epoch"), 10, 64)
		if err != nil || !f.recent(epoch) {
			http.Error(w, `{"statusCode":500,"message":"Request epoch is more than one epoch before or after the current epoch"}`, http.StatusInternalServerError)
			return
		}
		var data []any
		for _, id := range r.URL.Query()["indices"] {
			i, _ := strconv.ParseUint(id, 10, 64)
			data = append(data, map[string]any{"index": i, "epoch": epoch, "is_live": f.live[epoch][i]})
		}
		write(map[string]any{"data": data})
	default:
		http.Error(w, fmt.Sprintf(`{"message":"Route %s:%s not found"}`, r.Method, p), http.StatusNotFound)
	}
}

// recent: nodes answer liveness for the current and previous epoch only.
func (f *Fake) recent(epoch uint64) bool {
	cur := f.Chain.Epoch(f.now())
	return epoch == cur || epoch+1 == cur
}

// validatorData answers ids (public keys or indices) the way the beacon API
// does: validators the state holds, others left out. f.mu is held.
func (f *Fake) validatorData(ids []string) ([]any, bool) {
	byIndex := make(map[uint64]store.Pubkey, len(f.validators))
	for pk, i := range f.validators {
		byIndex[i] = pk
	}
	data := []any{}
	for _, id := range ids {
		var (
			pk store.Pubkey
			i  uint64
			ok bool
		)
		if strings.HasPrefix(id, "0x") {
			var err error
			if pk, err = store.ParsePubkey(id); err != nil {
				return nil, false
			}
			i, ok = f.validators[pk]
		} else {
			x, err := strconv.ParseUint(id, 10, 64)
			if err != nil {
				return nil, false
			}
			i = x
			pk, ok = byIndex[x]
		}
		if !ok {
			continue
		}
		act, exit := uint64(0), beacon.FarFutureEpoch
		if e, ok := f.epochs[i]; ok {
			act, exit = e[0], e[1]
		}
		withdrawable := beacon.FarFutureEpoch
		if exit != beacon.FarFutureEpoch {
			withdrawable = exit + f.withdrawableDelay()
		}
		data = append(data, map[string]any{
			"index": strconv.FormatUint(i, 10), "balance": "32000000000", "status": f.status(act, exit, withdrawable, f.slashed[i]),
			"validator": map[string]any{
				"pubkey": pk.String(), "withdrawal_credentials": "0x" + strings.Repeat("00", 32),
				"effective_balance": "32000000000", "slashed": f.slashed[i],
				"activation_eligibility_epoch": "0", "activation_epoch": strconv.FormatUint(act, 10),
				"exit_epoch": strconv.FormatUint(exit, 10), "withdrawable_epoch": strconv.FormatUint(withdrawable, 10),
			},
		})
	}
	return data, true
}

func (f *Fake) withdrawableDelay() uint64 {
	if f.WithdrawableDelay == 0 {
		return 256
	}
	return f.WithdrawableDelay
}

// status is the beacon API's status of a validator at the fake's epoch.
func (f *Fake) status(act, exit, withdrawable uint64, slashed bool) string {
	cur := f.Chain.Epoch(f.now())
	switch {
	case act == beacon.FarFutureEpoch:
		return "pending_initialized"
	case cur < act:
		return "pending_queued"
	case cur < exit && exit == beacon.FarFutureEpoch:
		return "active_ongoing"
	case cur < exit && slashed:
		return "active_slashed"
	case cur < exit:
		return "active_exiting"
	case cur < withdrawable && slashed:
		return "exited_slashed"
	case cur < withdrawable:
		return "exited_unslashed"
	default:
		return "withdrawal_possible"
	}
}

// acceptExit checks a submitted voluntary exit as process_voluntary_exit
// does (known, active, not exiting, epoch reached, signature) and initiates
// the exit; it returns the reason of a refusal. f.mu is held.
func (f *Fake) acceptExit(r *http.Request) string {
	var e struct {
		Message struct {
			Epoch          string `json:"epoch"`
			ValidatorIndex string `json:"validator_index"`
		} `json:"message"`
		Signature string `json:"signature"`
	}
	if err := json.NewDecoder(r.Body).Decode(&e); err != nil {
		return "bad body: " + err.Error()
	}
	epoch, err1 := strconv.ParseUint(e.Message.Epoch, 10, 64)
	index, err2 := strconv.ParseUint(e.Message.ValidatorIndex, 10, 64)
	sig, err3 := hex.DecodeString(strings.TrimPrefix(e.Signature, "0x"))
	if err1 != nil || err2 != nil || err3 != nil || len(sig) != 96 {
		return "malformed voluntary exit"
	}
	var pk store.Pubkey
	found := false
	for p, i := range f.validators {
		if i == index {
			pk, found = p, true
		}
	}
	if !found {
		return fmt.Sprintf("validator %d does not exist", index)
	}
	cur := f.Chain.Epoch(f.now())
	act, exit := uint64(0), beacon.FarFutureEpoch
	if ep, ok := f.epochs[index]; ok {
		act, exit = ep[0], ep[1]
	}
	switch {
	case !(act <= cur && cur < exit):
		return fmt.Sprintf("validator %d is not active", index)
	case exit != beacon.FarFutureEpoch:
		return fmt.Sprintf("validator %d is already exiting", index)
	case cur < epoch:
		return fmt.Sprintf("voluntary exit epoch %d is in the future", epoch)
	}
	var s96 [96]byte
	copy(s96[:], sig)
	if !VerifyExit(f.Chain, pk, epoch, index, s96) {
		return "invalid voluntary exit signature"
	}
	f.epochs[index] = [2]uint64{act, cur + 1 + maxSeedLookahead}
	f.exits = append(f.exits, SubmittedExit{Epoch: epoch, Index: index, Signature: s96})
	return ""
}
