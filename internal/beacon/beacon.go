// Package beacon reads what pkmanager needs from consensus-layer beacon
// nodes through the standard beacon API: the chain's genesis and timing,
// validator indices and states by public key, and validator liveness (was a
// validator seen signing in an epoch?).
//
// Several nodes may be given for redundancy: every call goes to the node
// that answered last and moves on to the next when it fails. All nodes must
// be on one chain (the same genesis), checked at Dial.
//
// Genesis, the spec, validators (the standard POST
// /eth/v1/beacon/states/head/validators, in chunks of validatorChunk) and
// voluntary exits are read and sent with github.com/attestantio/go-eth2-client;
// liveness is asked with plain requests decoded into its types. A node that
// does not serve a POST form is asked the older GET form instead (Lodestar
// 1.5.1: GET /eth/v1/validator/liveness?epoch=&indices=, GET
// /eth/v1/beacon/states/head/validators?id=, in chunks of idChunk).
package beacon

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	eth2client "github.com/attestantio/go-eth2-client"
	"github.com/attestantio/go-eth2-client/api"
	apiv1 "github.com/attestantio/go-eth2-client/api/v1"
	eth2http "github.com/attestantio/go-eth2-client/http"
	"github.com/attestantio/go-eth2-client/spec/phase0"
	"github.com/rs/zerolog"

	"github.com/pkmanager/pkmanager/internal/redact"
	"github.com/pkmanager/pkmanager/internal/store"
)

// Chain is the consensus chain's genesis and timing.
type Chain struct {
	GenesisTime           time.Time
	GenesisValidatorsRoot [32]byte
	GenesisForkVersion    [4]byte // the config's GENESIS_FORK_VERSION (deposit signatures)
	// CapellaForkVersion is the config's CAPELLA_FORK_VERSION: voluntary
	// exits are signed with it (EIP-7044); zero when the node's config has
	// none.
	CapellaForkVersion [4]byte
	SecondsPerSlot     time.Duration
	SlotsPerEpoch      uint64
}

// Equal reports whether c and o describe the same chain and timing.
func (c Chain) Equal(o Chain) bool {
	return c.GenesisTime.Equal(o.GenesisTime) && c.GenesisValidatorsRoot == o.GenesisValidatorsRoot &&
		c.GenesisForkVersion == o.GenesisForkVersion && c.CapellaForkVersion == o.CapellaForkVersion &&
		c.SecondsPerSlot == o.SecondsPerSlot && c.SlotsPerEpoch == o.SlotsPerEpoch
}

// EpochDuration is the length of one epoch.
func (c Chain) EpochDuration() time.Duration {
	return c.SecondsPerSlot * time.Duration(c.SlotsPerEpoch)
}

// Epoch is the epoch t falls in (0 before genesis).
func (c Chain) Epoch(t time.Time) uint64 {
	if !t.After(c.GenesisTime) {
		return 0
	}
	return uint64(t.Sub(c.GenesisTime) / c.EpochDuration())
}

// Slot is the slot t falls in (0 before genesis).
func (c Chain) Slot(t time.Time) uint64 {
	if !t.After(c.GenesisTime) {
		return 0
	}
	return uint64(t.Sub(c.GenesisTime) / c.SecondsPerSlot)
}

// EpochStart is when epoch e begins.
func (c Chain) EpochStart(e uint64) time.Time {
	return c.GenesisTime.Add(time.Duration(e) * c.EpochDuration())
}

// Defaults.
const (
	DefaultTimeout = 10 * time.Second
	// livenessChunk, validatorChunk and idChunk bound one request: indices
	// or public keys in a POST body (validatorChunk keeps a request near 1
	// MB and its answer near 5 MB, within what nodes accept), ids in a GET
	// query (URLs stay short).
	livenessChunk  = 1000
	validatorChunk = 10000
	idChunk        = 64
)

// ErrUnavailable: no beacon node answered.
var ErrUnavailable = errors.New("no beacon node answered")

// Node is a client of one or more beacon nodes of one chain. It is safe for
// concurrent use.
type Node struct {
	urls   []string
	svcs   []eth2client.Service // go-eth2-client's client of each URL
	hc     *http.Client
	chain  Chain
	log    *slog.Logger
	active atomic.Int32 // the node that answered last

	mu     sync.Mutex
	known  map[store.Pubkey]Validator // validators whose activation epoch is set (Known)
	calls  atomic.Int64               // requests sent (for benchmarks and metrics)
	legacy sync.Map                   // url -> true once the POST forms were refused
}

// Options configure Dial.
type Options struct {
	Timeout time.Duration // per request; 0 means DefaultTimeout
	Logger  *slog.Logger
	// HTTPClient replaces the default client (tests).
	HTTPClient *http.Client
}

// Dial reads the genesis and spec of every node in urls, checks that they
// are one chain, and returns the client. It fails when a node does not
// answer: a node given at start must work.
func Dial(ctx context.Context, urls []string, opts Options) (*Node, error) {
	if len(urls) == 0 {
		return nil, errors.New("beacon: no node URL")
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	hc := opts.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: opts.Timeout}
	}
	n := &Node{hc: hc, log: opts.Logger, known: map[store.Pubkey]Validator{}}
	for i, raw := range urls {
		u := strings.TrimRight(raw, "/")
		if _, err := url.ParseRequestURI(u); err != nil || !strings.HasPrefix(u, "http") {
			return nil, fmt.Errorf("beacon node %s: want an http:// or https:// URL", redact.URL(raw))
		}
		redact.Remember(raw)
		c, svc, err := readChain(ctx, u, hc, opts.Timeout)
		if err != nil {
			return nil, fmt.Errorf("beacon node %s: %w", redact.URL(raw), redact.Error(err))
		}
		if i > 0 && !c.Equal(n.chain) {
			return nil, fmt.Errorf("beacon node %s is on another chain than %s (genesis_validators_root 0x%x, not 0x%x)",
				redact.URL(raw), redact.URL(urls[0]), c.GenesisValidatorsRoot, n.chain.GenesisValidatorsRoot)
		}
		n.chain = c
		n.urls = append(n.urls, u)
		n.svcs = append(n.svcs, svc)
	}
	return n, nil
}

// readChain reads one node's genesis and spec with go-eth2-client.
func readChain(ctx context.Context, u string, hc *http.Client, timeout time.Duration) (Chain, eth2client.Service, error) {
	svc, err := eth2http.New(ctx, eth2http.WithAddress(u), eth2http.WithTimeout(timeout), eth2http.WithHTTPClient(hc),
		eth2http.WithLogLevel(zerolog.Disabled), eth2http.WithAllowDelayedStart(true))
	if err != nil {
		return Chain{}, nil, fmt.Errorf("connect: %w", err)
	}
	c, err := chainOf(ctx, svc)
	return c, svc, err
}

func chainOf(ctx context.Context, svc eth2client.Service) (Chain, error) {
	g, err := svc.(eth2client.GenesisProvider).Genesis(ctx, &api.GenesisOpts{})
	if err != nil {
		return Chain{}, fmt.Errorf("read genesis: %w", err)
	}
	sp, err := svc.(eth2client.SpecProvider).Spec(ctx, &api.SpecOpts{})
	if err != nil {
		return Chain{}, fmt.Errorf("read spec: %w", err)
	}
	c := Chain{GenesisTime: g.Data.GenesisTime.UTC(), GenesisValidatorsRoot: g.Data.GenesisValidatorsRoot, GenesisForkVersion: g.Data.GenesisForkVersion}
	sps, ok := sp.Data["SECONDS_PER_SLOT"].(time.Duration)
	if !ok || sps <= 0 {
		return Chain{}, fmt.Errorf("spec has no SECONDS_PER_SLOT (%v)", sp.Data["SECONDS_PER_SLOT"])
	}
	spe, ok := sp.Data["SLOTS_PER_EPOCH"].(uint64)
	if !ok || spe == 0 {
		return Chain{}, fmt.Errorf("spec has no SLOTS_PER_EPOCH (%v)", sp.Data["SLOTS_PER_EPOCH"])
	}
	c.SecondsPerSlot, c.SlotsPerEpoch = sps, spe
	// Deposits are signed over the config's GENESIS_FORK_VERSION; the
	// genesis endpoint may answer the genesis state's fork instead (a chain
	// that starts in a later fork, like Lodestar's dev chain in Altair).
	if v, ok := sp.Data["GENESIS_FORK_VERSION"].(phase0.Version); ok {
		c.GenesisForkVersion = v
	}
	if v, ok := sp.Data["CAPELLA_FORK_VERSION"].(phase0.Version); ok {
		c.CapellaForkVersion = v
	}
	return c, nil
}

// Chain returns the chain's genesis and timing.
func (n *Node) Chain() Chain { return n.chain }

// Calls returns how many requests the client has sent.
func (n *Node) Calls() int64 { return n.calls.Load() }

// URLs returns the nodes' URLs, for messages (redact them before printing).
func (n *Node) URLs() []string { return n.urls }

// do runs call against the nodes, starting with the one that answered last,
// until one succeeds.
func (n *Node) do(ctx context.Context, what string, call func(base string) error) error {
	return n.doSvc(ctx, what, func(base string, _ eth2client.Service) error { return call(base) })
}

// doSvc is do for calls that also use the node's go-eth2-client service.
func (n *Node) doSvc(ctx context.Context, what string, call func(base string, svc eth2client.Service) error) error {
	start := int(n.active.Load())
	var errs []error
	for i := range n.urls {
		j := (start + i) % len(n.urls)
		err := call(n.urls[j], n.svcs[j])
		if err == nil {
			n.active.Store(int32(j))
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", what, ctx.Err())
		}
		errs = append(errs, fmt.Errorf("%s: %w", redact.URL(n.urls[j]), err))
	}
	return redact.Error(fmt.Errorf("%s: %w: %w", what, ErrUnavailable, errors.Join(errs...)))
}

// statusError is a node's answer other than 200.
type statusError struct {
	code int
	body string
}

func (e *statusError) Error() string { return fmt.Sprintf("status %d: %s", e.code, e.body) }

// notServed reports whether err (ours or go-eth2-client's) says the node
// does not serve the route.
func notServed(err error) bool {
	code := 0
	var se *statusError
	var ae *api.Error
	switch {
	case errors.As(err, &se):
		code = se.code
	case errors.As(err, &ae):
		code = ae.StatusCode
	}
	return code == http.StatusNotFound || code == http.StatusMethodNotAllowed || code == http.StatusBadRequest
}

func (n *Node) request(ctx context.Context, method, u string, body []byte, out any) error {
	n.calls.Add(1)
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := n.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return &statusError{resp.StatusCode, strings.TrimSpace(string(b[:min(len(b), 300)]))}
	}
	return json.Unmarshal(b, out)
}

// Validator is what the node says of one validator.
type Validator struct {
	Index   uint64
	Pubkey  store.Pubkey
	Status  apiv1.ValidatorState
	Balance uint64 // gwei
	// ActivationEpoch and ExitEpoch (FAR_FUTURE_EPOCH while not set).
	ActivationEpoch, ExitEpoch uint64
	Slashed                    bool
}

// Validators returns what the head state holds of each of pubkeys that is a
// validator (keys not in the state yet, e.g. deposits not processed, are
// absent: "not found" never means "not deposited"). It asks with the
// standard POST /eth/v1/beacon/states/head/validators, validatorChunk keys
// a call (100,000 keys: 10 calls), or, on a node that does not serve it,
// with GET ?id=, idChunk keys a call.
func (n *Node) Validators(ctx context.Context, pubkeys []store.Pubkey) (map[store.Pubkey]Validator, error) {
	out := make(map[store.Pubkey]Validator, len(pubkeys))
	add := func(v *apiv1.Validator) {
		if v == nil || v.Validator == nil {
			return
		}
		pk := store.Pubkey(v.Validator.PublicKey)
		out[pk] = Validator{
			Index: uint64(v.Index), Pubkey: pk, Status: v.Status, Balance: uint64(v.Balance),
			ActivationEpoch: uint64(v.Validator.ActivationEpoch), ExitEpoch: uint64(v.Validator.ExitEpoch),
			Slashed: v.Validator.Slashed,
		}
	}
	for start := 0; start < len(pubkeys); start += validatorChunk {
		chunk := pubkeys[start:min(start+validatorChunk, len(pubkeys))]
		err := n.doSvc(ctx, "read validators", func(base string, svc eth2client.Service) error {
			if _, legacy := n.legacy.Load(base + " validators"); !legacy {
				ids := make([]phase0.BLSPubKey, len(chunk))
				for i, pk := range chunk {
					ids[i] = phase0.BLSPubKey(pk)
				}
				n.calls.Add(1)
				resp, err := svc.(eth2client.ValidatorsProvider).Validators(ctx, &api.ValidatorsOpts{State: "head", PubKeys: ids})
				if err == nil {
					for _, v := range resp.Data {
						add(v)
					}
					return nil
				}
				if !notServed(err) {
					return err
				}
				n.legacy.Store(base+" validators", true)
				n.log.Info("beacon node does not serve POST /eth/v1/beacon/states/head/validators; using GET ?id=", slog.String("node", redact.URL(base)))
			}
			return n.validatorsGET(ctx, base, chunk, add)
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// validatorsGET asks GET /eth/v1/beacon/states/head/validators?id=..., idChunk
// keys a request.
func (n *Node) validatorsGET(ctx context.Context, base string, pubkeys []store.Pubkey, add func(*apiv1.Validator)) error {
	for start := 0; start < len(pubkeys); start += idChunk {
		q := url.Values{}
		for _, pk := range pubkeys[start:min(start+idChunk, len(pubkeys))] {
			q.Add("id", pk.String())
		}
		var resp struct {
			Data []*apiv1.Validator `json:"data"`
		}
		if err := n.request(ctx, http.MethodGet, base+"/eth/v1/beacon/states/head/validators?"+q.Encode(), nil, &resp); err != nil {
			return err
		}
		for _, v := range resp.Data {
			add(v)
		}
	}
	return nil
}

// SubmitVoluntaryExit sends a signed voluntary exit to the node's pool
// (POST /eth/v1/beacon/pool/voluntary_exits), which checks it and gossips
// it.
func (n *Node) SubmitVoluntaryExit(ctx context.Context, e *phase0.SignedVoluntaryExit) error {
	return n.doSvc(ctx, fmt.Sprintf("submit the voluntary exit of validator %d", e.Message.ValidatorIndex), func(_ string, svc eth2client.Service) error {
		n.calls.Add(1)
		return svc.(eth2client.VoluntaryExitSubmitter).SubmitVoluntaryExit(ctx, e)
	})
}

// FarFutureEpoch is the consensus spec's FAR_FUTURE_EPOCH: an activation or
// exit epoch not set yet.
const FarFutureEpoch = ^uint64(0)

// ActiveAt reports whether v is active in epoch e (activation_epoch <= e <
// exit_epoch, the spec's is_active_validator): only then does it have
// duties, so only then can liveness show whether it signs.
func (v Validator) ActiveAt(e uint64) bool { return v.ActivationEpoch <= e && e < v.ExitEpoch }

// Known is Validators for callers that need a validator's index and
// activation only, not its balance or status: a validator whose activation
// epoch is set is remembered and not asked for again (index and activation
// epoch never change; an exit epoch set later is missed, so a remembered
// validator may look active after its exit, when it can no longer sign:
// it is then watched in vain, never trusted in vain).
func (n *Node) Known(ctx context.Context, pubkeys []store.Pubkey) (map[store.Pubkey]Validator, error) {
	out := make(map[store.Pubkey]Validator, len(pubkeys))
	var ask []store.Pubkey
	n.mu.Lock()
	for _, pk := range pubkeys {
		if v, ok := n.known[pk]; ok {
			out[pk] = v
		} else {
			ask = append(ask, pk)
		}
	}
	n.mu.Unlock()
	if len(ask) == 0 {
		return out, nil
	}
	vs, err := n.Validators(ctx, ask)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	for pk, v := range vs {
		out[pk] = v
		if v.ActivationEpoch != FarFutureEpoch {
			n.known[pk] = v
		}
	}
	n.mu.Unlock()
	return out, nil
}

// Indices returns the validator index of each of pubkeys that is a
// validator (see Known).
func (n *Node) Indices(ctx context.Context, pubkeys []store.Pubkey) (map[store.Pubkey]uint64, error) {
	vs, err := n.Known(ctx, pubkeys)
	if err != nil {
		return nil, err
	}
	out := make(map[store.Pubkey]uint64, len(vs))
	for pk, v := range vs {
		out[pk] = v.Index
	}
	return out, nil
}

// Liveness returns, for each of indices, whether the node saw the validator
// sign (attest or propose) in epoch. Nodes answer for the current and the
// previous epoch only.
func (n *Node) Liveness(ctx context.Context, epoch uint64, indices []uint64) (map[uint64]bool, error) {
	out := make(map[uint64]bool, len(indices))
	for start := 0; start < len(indices); start += livenessChunk {
		chunk := indices[start:min(start+livenessChunk, len(indices))]
		err := n.do(ctx, fmt.Sprintf("read liveness of epoch %d", epoch), func(base string) error {
			got, err := n.liveness(ctx, base, epoch, chunk)
			if err != nil {
				return err
			}
			for i, live := range got {
				out[i] = live
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (n *Node) liveness(ctx context.Context, base string, epoch uint64, indices []uint64) (map[uint64]bool, error) {
	if _, legacy := n.legacy.Load(base); !legacy {
		ids := make([]string, len(indices))
		for i, x := range indices {
			ids[i] = strconv.FormatUint(x, 10)
		}
		body, _ := json.Marshal(ids)
		var resp struct {
			Data []*apiv1.ValidatorLiveness `json:"data"`
		}
		err := n.request(ctx, http.MethodPost, fmt.Sprintf("%s/eth/v1/validator/liveness/%d", base, epoch), body, &resp)
		if err == nil {
			out := make(map[uint64]bool, len(resp.Data))
			for _, l := range resp.Data {
				if l != nil {
					out[uint64(l.Index)] = l.IsLive
				}
			}
			return out, complete(out, indices)
		}
		if !notServed(err) {
			return nil, err
		}
		n.legacy.Store(base, true)
		n.log.Info("beacon node does not serve POST /eth/v1/validator/liveness/{epoch}; using GET /eth/v1/validator/liveness", slog.String("node", redact.URL(base)))
	}
	out := make(map[uint64]bool, len(indices))
	for start := 0; start < len(indices); start += idChunk {
		q := url.Values{"epoch": {strconv.FormatUint(epoch, 10)}}
		for _, x := range indices[start:min(start+idChunk, len(indices))] {
			q.Add("indices", strconv.FormatUint(x, 10))
		}
		var resp struct {
			Data []struct {
				Index  json.Number `json:"index"`
				IsLive bool        `json:"is_live"`
			} `json:"data"`
		}
		if err := n.request(ctx, http.MethodGet, base+"/eth/v1/validator/liveness?"+q.Encode(), nil, &resp); err != nil {
			return nil, err
		}
		for _, l := range resp.Data {
			i, err := strconv.ParseUint(string(l.Index), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("liveness answer with index %q", l.Index)
			}
			out[i] = l.IsLive
		}
	}
	return out, complete(out, indices)
}

// complete fails when the answer leaves out an index asked for: a missing
// answer is never taken as "not live".
func complete(got map[uint64]bool, asked []uint64) error {
	for _, i := range asked {
		if _, ok := got[i]; !ok {
			return fmt.Errorf("the answer says nothing of validator %d", i)
		}
	}
	return nil
}

// ParseRoot reads a 0x-prefixed 32-byte hex root.
func ParseRoot(s string) ([32]byte, error) {
	var r [32]byte
	b, err := hex.DecodeString(strings.TrimPrefix(s, "0x"))
	if err != nil || len(b) != 32 {
		return r, fmt.Errorf("%q is not a 32-byte hex root", s)
	}
	copy(r[:], b)
	return r, nil
}
