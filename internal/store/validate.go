package store

import (
	"fmt"
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
	if p.Want < 1 {
		return fmt.Errorf("claim for pod %s: want %d keys, must be at least 1: %w", p.Pod, p.Want, ErrInvalidArgument)
	}
	if err := ValidateTime("claim time", p.Now); err != nil {
		return fmt.Errorf("claim for pod %s: %w", p.Pod, err)
	}
	return nil
}

// Validate checks the arguments of Store.AddAssigned.
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

// ValidateStates checks that every state in states is defined.
func ValidateStates(states []State) error {
	for _, st := range states {
		if !st.Valid() {
			return fmt.Errorf("unknown key state %q: %w", st, ErrInvalidArgument)
		}
	}
	return nil
}
