package httpapi

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/bolt"
)

// markerSecret is the secret every fake key carries. It must never appear
// in a page or listing.
var markerSecret = bytes.Repeat([]byte{0x5e, 0xc2, 0xe7, 0x01}, 8)

// secretForms are the encodings of markerSecret a leak could take.
func secretForms() []string {
	return []string{
		string(markerSecret),
		hex.EncodeToString(markerSecret),
		strings.ToUpper(hex.EncodeToString(markerSecret)),
		base64.StdEncoding.EncodeToString(markerSecret),
		base64.RawURLEncoding.EncodeToString(markerSecret),
		"5ec2e7015ec2e701", // any 8-byte stretch of it in hex
	}
}

// assertNoSecret fails if body holds any form of markerSecret.
func assertNoSecret(t *testing.T, what string, body []byte) {
	t.Helper()
	for _, f := range secretForms() {
		if bytes.Contains(bytes.ToLower(body), bytes.ToLower([]byte(f))) {
			t.Errorf("%s: response contains the secret marker (%q)", what, f)
		}
	}
}

// pk returns a deterministic fake public key: prefix byte, then n.
func pk(prefix byte, n int) store.Pubkey {
	var p store.Pubkey
	p[0] = prefix
	p[44], p[45], p[46], p[47] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	return p
}

// fakeAllocator records calls and answers with canned results.
type fakeAllocator struct {
	mu      sync.Mutex
	calls   []string
	result  allocator.Result
	release allocator.ReleaseResult
	err     error
	lastPod string
	lastUID string
	lastN   int
	retired store.Pubkey
	reason  string
	handed  [][]byte                          // secrets given out by Request
	prot    map[store.Pubkey]store.Protection // of the last release
}

func (f *fakeAllocator) Request(_ context.Context, pod, podUID string, n int) (allocator.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "request")
	f.lastPod, f.lastUID, f.lastN = pod, podUID, n
	if f.err != nil {
		return allocator.Result{}, f.err
	}
	// Hand out copies: the handler wipes secrets it has written.
	res := f.result
	res.Keys = slices.Clone(res.Keys)
	for i := range res.Keys {
		res.Keys[i].Secret = slices.Clone(res.Keys[i].Secret)
		f.handed = append(f.handed, res.Keys[i].Secret)
	}
	return res, nil
}

func (f *fakeAllocator) ReleaseWithProtection(_ context.Context, pod, podUID string, prot map[store.Pubkey]store.Protection) (allocator.ReleaseResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "release")
	f.lastPod, f.lastUID, f.prot = pod, podUID, prot
	return f.release, f.err
}

func (f *fakeAllocator) Retire(_ context.Context, pubkey store.Pubkey, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "retire")
	f.retired, f.reason = pubkey, reason
	return f.err
}

func (f *fakeAllocator) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// fakeLister serves keys from memory. Unlike a real store it fills
// SealedSecret, so tests prove the handler never shows it.
type fakeLister struct {
	keys      []store.Key
	err       error // returned by ListKeys after failAfter keys
	failAfter int
	counts    map[store.State]int
}

func (f *fakeLister) ListKeys(ctx context.Context, opts store.ListOptions, fn func(store.Key) error) error {
	keys := slices.Clone(f.keys)
	slices.SortFunc(keys, func(a, b store.Key) int { return bytes.Compare(a.Pubkey[:], b.Pubkey[:]) })
	n := 0
	for _, k := range keys {
		if len(opts.States) > 0 && !slices.Contains(opts.States, k.State) {
			continue
		}
		if opts.Pod != "" && k.Pod != opts.Pod {
			continue
		}
		if opts.After != nil && bytes.Compare(k.Pubkey[:], opts.After[:]) <= 0 {
			continue
		}
		if opts.Limit > 0 && n == opts.Limit {
			return nil
		}
		if f.err != nil && n == f.failAfter {
			return f.err
		}
		n++
		k.SealedSecret = slices.Clone(markerSecret)
		if err := fn(k); err != nil {
			return err
		}
	}
	return f.err
}

func (f *fakeLister) Counts(context.Context) (map[store.State]int, error) {
	if f.counts != nil {
		return f.counts, nil
	}
	out := make(map[store.State]int)
	for _, st := range store.States {
		out[st] = 0
	}
	for _, k := range f.keys {
		out[k.State]++
	}
	return out, nil
}

// quietLogger discards logs unless -v is given.
func quietLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// do sends a request to h and returns the recorded response.
func do(t testing.TB, h http.Handler, method, target, body string, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, rd)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// openBolt opens a fresh bbolt store in a temporary directory.
func openBolt(t testing.TB, dir string) store.Store {
	t.Helper()
	s, err := bolt.Open(filepath.Join(dir, "keys.db"), bolt.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("open bolt store: %v", err)
	}
	return s
}

// fixtureNow is the clock of the bolt fixtures.
var fixtureNow = time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)

// newKeys makes n keys with public keys pk(prefix, start..start+n-1).
func newKeys(prefix byte, start, n int) []store.NewKey {
	keys := make([]store.NewKey, n)
	for i := range keys {
		keys[i] = store.NewKey{
			Pubkey:             pk(prefix, start+i),
			SealedSecret:       slices.Clone(markerSecret),
			Origin:             store.OriginDerived,
			DerivationIndex:    uint32(start + i),
			HasDerivationIndex: true,
		}
	}
	return keys
}

// fillAssigned adds perPod*len(pods) available keys to s and has each pod
// claim perPod of them, claims running concurrently (bbolt batches them).
func fillAssigned(t testing.TB, s store.Store, prefix byte, pods []string, perPod int, now time.Time) {
	t.Helper()
	ctx := context.Background()
	if err := s.AddKeys(ctx, newKeys(prefix, 0, perPod*len(pods)), store.StateAvailable, now); err != nil {
		t.Fatalf("add keys: %v", err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(pods))
	sem := make(chan struct{}, 32)
	for _, pod := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			c, err := s.Claim(ctx, store.ClaimParams{Pod: pod, PodUID: "uid-" + pod, Want: perPod, Now: now, AllOrNothing: true})
			if err == nil && (c.Shortfall != 0 || len(c.Keys) != perPod) {
				err = fmt.Errorf("pod %s got %d keys, shortfall %d", pod, len(c.Keys), c.Shortfall)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("claim: %v", err)
	}
}
