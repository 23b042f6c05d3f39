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
type Fake struct {
	Chain beacon.Chain
	// Legacy serves only GET /eth/v1/validator/liveness (Lodestar 1.5.1).
	Legacy bool

	mu         sync.Mutex
	validators map[store.Pubkey]uint64
	epochs     map[uint64][2]uint64       // index -> activation, exit epoch (default 0, FAR_FUTURE)
	live       map[uint64]map[uint64]bool // epoch -> index -> live
	down       bool
	now        func() time.Time
	srv        *httptest.Server
	calls      map[string]int
}

// NewFake starts a fake node of chain (its clock is now).
func NewFake(chain beacon.Chain, now func() time.Time) *Fake {
	f := &Fake{Chain: chain, validators: map[store.Pubkey]uint64{}, epochs: map[uint64][2]uint64{}, live: map[uint64]map[uint64]bool{}, now: now, calls: map[string]int{}}
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
			"SLOTS_PER_EPOCH":      strconv.FormatUint(f.Chain.SlotsPerEpoch, 10),
		}})
	case p == "/eth/v1/node/syncing":
		write(map[string]any{"data": map[string]any{"head_slot": "1", "sync_distance": "0", "is_syncing": false}})
	case p == "/eth/v1/node/version":
		write(map[string]any{"data": map[string]string{"version": "fake/v0"}})
	case strings.HasPrefix(p, "/eth/v1/beacon/states/head/validators") && r.Method == http.MethodGet:
		f.calls["GET validators"]++
		var data []any
		for _, id := range r.URL.Query()["id"] {
			pk, err := store.ParsePubkey(id)
			if err != nil {
				http.Error(w, `{"code":400}`, http.StatusBadRequest)
				return
			}
			i, ok := f.validators[pk]
			if !ok {
				continue
			}
			act, exit, status := uint64(0), beacon.FarFutureEpoch, "active_ongoing"
			if e, ok := f.epochs[i]; ok {
				act, exit = e[0], e[1]
				cur := f.Chain.Epoch(f.now())
				switch {
				case act == beacon.FarFutureEpoch:
					status = "pending_initialized"
				case cur < act:
					status = "pending_queued"
				case exit != beacon.FarFutureEpoch && cur >= exit:
					status = "exited_unslashed"
				case exit != beacon.FarFutureEpoch:
					status = "active_exiting"
				}
			}
			data = append(data, map[string]any{
				"index": strconv.FormatUint(i, 10), "balance": "32000000000", "status": status,
				"validator": map[string]any{
					"pubkey": pk.String(), "withdrawal_credentials": "0x" + strings.Repeat("00", 32),
					"effective_balance": "32000000000", "slashed": false,
					"activation_eligibility_epoch": "0", "activation_epoch": strconv.FormatUint(act, 10),
					"exit_epoch": strconv.FormatUint(exit, 10), "withdrawable_epoch": strconv.FormatUint(exit, 10),
				},
			})
		}
		write(map[string]any{"data": data})
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
