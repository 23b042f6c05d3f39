package lodestartest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// httpClient bounds every API call (a node on a loaded machine can stall for
// seconds, not for this long).
var httpClient = &http.Client{Timeout: 20 * time.Second}

// apiError is a non-2xx answer.
type apiError struct {
	Method, URL string
	Status      int
	Body        string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s %s: HTTP %d: %s", e.Method, e.URL, e.Status, e.Body)
}

// call sends a JSON request (body nil: none) and decodes the answer into out
// (nil: discarded). headers are extra request headers.
func call(ctx context.Context, method, url string, headers map[string]string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, url, err)
	}
	if resp.StatusCode/100 != 2 {
		s := strings.TrimSpace(string(b))
		if len(s) > 400 {
			s = s[:400] + "..."
		}
		return &apiError{Method: method, URL: url, Status: resp.StatusCode, Body: s}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decoding %.200q: %w", method, url, b, err)
	}
	return nil
}

// get GETs a beacon API path and decodes its "data" into out.
func (c *Chain) get(ctx context.Context, path string, out any) error {
	var env struct {
		Data json.RawMessage `json:"data"`
	}
	if err := call(ctx, http.MethodGet, c.URL+path, nil, nil, &env); err != nil {
		return err
	}
	if err := json.Unmarshal(env.Data, out); err != nil {
		return fmt.Errorf("GET %s: decoding data: %w", path, err)
	}
	return nil
}

// Uint is a uint64 that the APIs write as a decimal string (or, in some
// Lodestar 1.5.1 answers, a JSON number).
type Uint uint64

// UnmarshalJSON accepts "123" and 123.
func (u *Uint) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return fmt.Errorf("not an unsigned integer: %s", b)
	}
	*u = Uint(v)
	return nil
}

// MarshalJSON writes a decimal string.
func (u Uint) MarshalJSON() ([]byte, error) {
	return []byte(`"` + strconv.FormatUint(uint64(u), 10) + `"`), nil
}

// Slot returns the clock's current slot (0 before genesis).
func (c *Chain) Slot() uint64 {
	d := time.Since(c.GenesisTime)
	if d < 0 {
		return 0
	}
	return uint64(d / (time.Duration(c.SecondsPerSlot) * time.Second))
}

// Epoch returns the clock's current epoch (0 before genesis).
func (c *Chain) Epoch() uint64 { return c.Slot() / uint64(c.SlotsPerEpoch) }

// SlotStart returns when slot s starts.
func (c *Chain) SlotStart(s uint64) time.Time {
	return c.GenesisTime.Add(time.Duration(s) * time.Duration(c.SecondsPerSlot) * time.Second)
}

// EpochStart returns when epoch e starts.
func (c *Chain) EpochStart(e uint64) time.Time { return c.SlotStart(e * uint64(c.SlotsPerEpoch)) }

// EpochDuration is the length of an epoch.
func (c *Chain) EpochDuration() time.Duration {
	return time.Duration(c.SlotsPerEpoch*c.SecondsPerSlot) * time.Second
}

// Validator is a validator in the head state
// (/eth/v1/beacon/states/head/validators).
type Validator struct {
	Index            uint64
	Pubkey           string // 0x-prefixed lower-case hex
	Status           string // active_ongoing, pending_queued, exited_slashed, ...
	Balance          uint64 // gwei
	EffectiveBalance uint64 // gwei
	Slashed          bool
	ActivationEpoch  uint64
	ExitEpoch        uint64
}

// Validators returns every validator of the head state, by index. (Lodestar
// 1.5.1 ignores some ?id= filters, so this takes all and filters here.)
func (c *Chain) Validators(ctx context.Context) ([]Validator, error) {
	var raw []struct {
		Index     Uint   `json:"index"`
		Balance   Uint   `json:"balance"`
		Status    string `json:"status"`
		Validator struct {
			Pubkey           string `json:"pubkey"`
			EffectiveBalance Uint   `json:"effective_balance"`
			Slashed          bool   `json:"slashed"`
			ActivationEpoch  Uint   `json:"activation_epoch"`
			ExitEpoch        Uint   `json:"exit_epoch"`
		} `json:"validator"`
	}
	if err := c.get(ctx, "/eth/v1/beacon/states/head/validators", &raw); err != nil {
		return nil, err
	}
	out := make([]Validator, len(raw))
	for i, r := range raw {
		out[i] = Validator{
			Index: uint64(r.Index), Pubkey: strings.ToLower(r.Validator.Pubkey), Status: r.Status,
			Balance: uint64(r.Balance), EffectiveBalance: uint64(r.Validator.EffectiveBalance),
			Slashed: r.Validator.Slashed, ActivationEpoch: uint64(r.Validator.ActivationEpoch), ExitEpoch: uint64(r.Validator.ExitEpoch),
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Index < out[b].Index })
	return out, nil
}

// Validator returns the head-state validator with this public key (0x hex,
// any case).
func (c *Chain) Validator(ctx context.Context, pubkey string) (Validator, error) {
	all, err := c.Validators(ctx)
	if err != nil {
		return Validator{}, err
	}
	want := strings.ToLower(pubkey)
	if !strings.HasPrefix(want, "0x") {
		want = "0x" + want
	}
	for _, v := range all {
		if v.Pubkey == want {
			return v, nil
		}
	}
	return Validator{}, fmt.Errorf("%s is not a validator of the head state (%d validators)", pubkey, len(all))
}

// Liveness reports, for each index, whether the beacon node saw the
// validator sign (attestation, aggregate, block, sync committee) in epoch.
//
// It asks the standard POST /eth/v1/validator/liveness/{epoch} and falls back
// to Lodestar 1.5.1's GET /eth/v1/validator/liveness?epoch=&indices= (1.5.1
// has only that one). Lodestar answers only for epochs current-1..current+1
// of its clock; older epochs are an error.
func (c *Chain) Liveness(ctx context.Context, epoch uint64, indices ...uint64) (map[uint64]bool, error) {
	out := make(map[uint64]bool, len(indices))
	if len(indices) == 0 {
		return out, nil
	}
	var data []struct {
		Index  Uint `json:"index"`
		IsLive bool `json:"is_live"`
	}
	var err error
	if !c.livenessGET.Load() {
		body := make([]string, len(indices))
		for i, x := range indices {
			body[i] = strconv.FormatUint(x, 10)
		}
		var env struct {
			Data json.RawMessage `json:"data"`
		}
		err = call(ctx, http.MethodPost, fmt.Sprintf("%s/eth/v1/validator/liveness/%d", c.URL, epoch), nil, body, &env)
		var ae *apiError
		if errors.As(err, &ae) && (ae.Status == http.StatusNotFound || ae.Status == http.StatusMethodNotAllowed) {
			c.livenessGET.Store(true)
		} else if err == nil {
			err = json.Unmarshal(env.Data, &data)
		}
	}
	if c.livenessGET.Load() {
		q := make([]string, len(indices))
		for i, x := range indices {
			q[i] = "indices=" + strconv.FormatUint(x, 10)
		}
		err = c.get(ctx, fmt.Sprintf("/eth/v1/validator/liveness?epoch=%d&%s", epoch, strings.Join(q, "&")), &data)
	}
	if err != nil {
		return nil, fmt.Errorf("liveness in epoch %d (clock epoch %d): %w", epoch, c.Epoch(), err)
	}
	for _, d := range data {
		out[uint64(d.Index)] = d.IsLive
	}
	for _, x := range indices {
		if _, ok := out[x]; !ok {
			return nil, fmt.Errorf("liveness in epoch %d: no answer for index %d", epoch, x)
		}
	}
	return out, nil
}

// HeadSlot returns the slot of the head block.
func (c *Chain) HeadSlot(ctx context.Context) (uint64, error) {
	var h struct {
		Header struct {
			Message struct {
				Slot Uint `json:"slot"`
			} `json:"message"`
		} `json:"header"`
	}
	if err := c.get(ctx, "/eth/v1/beacon/headers/head", &h); err != nil {
		return 0, err
	}
	return uint64(h.Header.Message.Slot), nil
}

// Checkpoints are the head state's justified and finalized epochs.
type Checkpoints struct {
	PreviousJustified, CurrentJustified, Finalized uint64
}

// FinalityCheckpoints returns the head state's checkpoints.
func (c *Chain) FinalityCheckpoints(ctx context.Context) (Checkpoints, error) {
	type cp struct {
		Epoch Uint `json:"epoch"`
	}
	var f struct {
		PreviousJustified cp `json:"previous_justified"`
		CurrentJustified  cp `json:"current_justified"`
		Finalized         cp `json:"finalized"`
	}
	if err := c.get(ctx, "/eth/v1/beacon/states/head/finality_checkpoints", &f); err != nil {
		return Checkpoints{}, err
	}
	return Checkpoints{uint64(f.PreviousJustified.Epoch), uint64(f.CurrentJustified.Epoch), uint64(f.Finalized.Epoch)}, nil
}

// CheckAlive returns an error if the chain has stopped: its head is a whole
// epoch behind the clock (too few of its proposers run, or the machine
// stalled), or the node does not answer.
func (c *Chain) CheckAlive(ctx context.Context) error {
	if done, err := c.bn.exited(); done {
		return fmt.Errorf("beacon node exited (%v); log %s", err, c.Log)
	}
	clock := c.Slot()
	head, err := c.HeadSlot(ctx)
	if err != nil {
		return fmt.Errorf("beacon node not answering: %w", err)
	}
	if clock > head && clock-head >= uint64(c.SlotsPerEpoch) {
		return fmt.Errorf("chain stalled: head slot %d, clock slot %d, an epoch or more behind (too few of its proposers run, or the machine stalled); log %s",
			head, clock, c.Log)
	}
	return nil
}

// sleepUntil waits until t, or fails with what it was waiting for.
func sleepUntil(ctx context.Context, t time.Time, what string) error {
	d := time.Until(t)
	if d > time.Hour {
		return fmt.Errorf("waiting for %s: %s away, refusing", what, d.Round(time.Second))
	}
	if d <= 0 {
		return nil
	}
	select {
	case <-ctx.Done():
		return fmt.Errorf("waiting for %s (%s left): %w", what, time.Until(t).Round(time.Second), ctx.Err())
	case <-time.After(d):
		return nil
	}
}

// WaitEpoch waits until the clock reaches the start of epoch e (epoch 0:
// genesis).
func (c *Chain) WaitEpoch(ctx context.Context, e uint64) error {
	return sleepUntil(ctx, c.EpochStart(e), fmt.Sprintf("epoch %d", e))
}

// WaitEpochDone waits until epoch e is over and one slot of the next has
// passed (the last attestations of e are in), then checks the chain is alive.
// Liveness for e can be asked until epoch e+2 starts.
func (c *Chain) WaitEpochDone(ctx context.Context, e uint64) error {
	if err := sleepUntil(ctx, c.SlotStart((e+1)*uint64(c.SlotsPerEpoch)+1), fmt.Sprintf("the end of epoch %d", e)); err != nil {
		return err
	}
	return c.CheckAlive(ctx)
}

// WaitLive waits for the first epoch from `from` (at most `epochs` of them) in
// which every index is live, and returns it. It fails when the chain stalls.
func (c *Chain) WaitLive(ctx context.Context, from uint64, epochs int, indices ...uint64) (uint64, error) {
	var last map[uint64]bool
	for e := from; e < from+uint64(epochs); e++ {
		if err := c.WaitEpochDone(ctx, e); err != nil {
			return 0, fmt.Errorf("waiting for validators %v to be live: %w", indices, err)
		}
		if c.Epoch() > e+1 { // too late to ask about e (the machine stalled): ask about the next
			continue
		}
		l, err := c.Liveness(ctx, e, indices...)
		if err != nil {
			return 0, err
		}
		last = l
		all := true
		for _, x := range indices {
			all = all && l[x]
		}
		if all {
			return e, nil
		}
	}
	return 0, fmt.Errorf("validators %v not all live in any of epochs %d..%d (last answer: %v)", indices, from, from+uint64(epochs)-1, last)
}

// WaitJustified waits until the head state's current justified epoch is at
// least epoch, for at most timeout, and returns the checkpoints.
func (c *Chain) WaitJustified(ctx context.Context, epoch uint64, timeout time.Duration) (Checkpoints, error) {
	deadline := time.Now().Add(timeout)
	var last Checkpoints
	for {
		cp, err := c.FinalityCheckpoints(ctx)
		if err == nil {
			last = cp
			if cp.CurrentJustified >= epoch {
				return cp, nil
			}
		}
		if err := c.CheckAlive(ctx); err != nil {
			return last, fmt.Errorf("waiting for epoch %d to be justified: %w", epoch, err)
		}
		if time.Now().After(deadline) {
			return last, fmt.Errorf("epoch %d not justified after %s (clock epoch %d, justified %d, finalized %d)",
				epoch, timeout, c.Epoch(), last.CurrentJustified, last.Finalized)
		}
		if err := sleepUntil(ctx, time.Now().Add(time.Duration(c.SecondsPerSlot)*time.Second), "justification"); err != nil {
			return last, err
		}
	}
}
