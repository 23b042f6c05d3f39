package keysync

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/keymanager"
	"github.com/pkmanager/pkmanager/internal/keys"
	"github.com/pkmanager/pkmanager/internal/keystore"
	"github.com/pkmanager/pkmanager/internal/slashing"
	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/test/testbin"
)

var testGVR = [32]byte{0xab, 0xcd}

// fakeVC is a validator client's keymanager API: it decrypts what it is
// given, keeps a slashing-protection database (kept after a delete, as
// clients do) and answers DELETE with the deleted keys' history.
type fakeVC struct {
	t     *testing.T
	token string
	srv   *httptest.Server

	mu        sync.Mutex
	loaded    map[store.Pubkey]bool
	readonly  map[store.Pubkey]bool
	history   map[store.Pubkey]store.Protection
	passwords []string
	imports   [][]byte // slashing_protection of each import ("" for none)
	deletes   int
	// sticky: the first DELETE of a key answers "deleted" but keeps it
	// loaded (Lodestar 1.5.1).
	sticky      bool
	deletedOnce map[store.Pubkey]bool
	// never: DELETE answers "deleted" and keeps every key.
	never bool
	// failDelete: DELETE answers HTTP 500.
	failDelete bool
	// otherChain: DELETE's interchange names another chain.
	otherChain bool
	// block, if set, holds every import until it is closed; posted gets
	// a value when one arrives.
	block  chan struct{}
	posted chan struct{}
}

func newFakeVC(t *testing.T) *fakeVC {
	v := &fakeVC{t: t, token: "vc-token-" + strings.Repeat("7", 24), loaded: map[store.Pubkey]bool{}, readonly: map[store.Pubkey]bool{},
		history: map[store.Pubkey]store.Protection{}, deletedOnce: map[store.Pubkey]bool{}}
	v.srv = httptest.NewServer(http.HandlerFunc(v.serve))
	t.Cleanup(v.srv.Close)
	return v
}

func (v *fakeVC) client(t *testing.T) *keymanager.Client {
	t.Helper()
	f := filepath.Join(t.TempDir(), "api-token.txt")
	if err := os.WriteFile(f, []byte(v.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := keymanager.New(v.srv.URL, keymanager.Options{TokenFile: f, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (v *fakeVC) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/eth/v1/keystores" {
		http.NotFound(w, r)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+v.token {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"message":"bad token"}`))
		return
	}
	if r.Method == http.MethodPost && v.block != nil {
		v.posted <- struct{}{}
		<-v.block
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	reply := func(x any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(x)
	}
	type status struct {
		Status  string `json:"status"`
		Message string `json:"message,omitempty"`
	}
	switch r.Method {
	case http.MethodGet:
		type item struct {
			Pubkey   string `json:"validating_pubkey"`
			Readonly bool   `json:"readonly"`
		}
		data := []item{}
		for pk := range v.loaded {
			data = append(data, item{pk.String(), v.readonly[pk]})
		}
		reply(map[string]any{"data": data})
	case http.MethodPost:
		var body struct {
			Keystores          []string `json:"keystores"`
			Passwords          []string `json:"passwords"`
			SlashingProtection string   `json:"slashing_protection"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body.Keystores) != len(body.Passwords) {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if body.SlashingProtection != "" {
			marks, err := slashing.Parse([]byte(body.SlashingProtection), testGVR, nil)
			if err != nil {
				w.WriteHeader(http.StatusBadRequest)
				_, _ = w.Write([]byte(`{"message":"bad interchange"}`))
				return
			}
			for pk, m := range marks {
				v.history[pk] = v.history[pk].Merge(m)
			}
		}
		v.imports = append(v.imports, []byte(body.SlashingProtection))
		var out []status
		for i, js := range body.Keystores {
			ks, err := keystore.Parse([]byte(js))
			if err != nil {
				out = append(out, status{"error", "bad keystore"})
				continue
			}
			secret, err := ks.Decrypt(body.Passwords[i])
			if err != nil {
				out = append(out, status{"error", "wrong password"})
				continue
			}
			sk, err := keys.SecretKeyFromBytes(secret)
			pub, _ := ks.Pubkey()
			if err != nil || sk.PublicKey() != pub {
				out = append(out, status{"error", "secret does not match"})
				continue
			}
			v.passwords = append(v.passwords, body.Passwords[i])
			if v.loaded[pub] {
				out = append(out, status{"duplicate", ""})
				continue
			}
			v.loaded[pub] = true
			out = append(out, status{"imported", ""})
		}
		reply(map[string]any{"data": out})
	case http.MethodDelete:
		v.deletes++
		if v.failDelete {
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(`{"message":"database locked"}`))
			return
		}
		var body struct {
			Pubkeys []string `json:"pubkeys"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		var out []status
		hist := map[store.Pubkey]store.Protection{}
		for _, s := range body.Pubkeys {
			pub, err := store.ParsePubkey(s)
			if err != nil {
				out = append(out, status{"error", "bad pubkey"})
				continue
			}
			if h, ok := v.history[pub]; ok {
				hist[pub] = h
			}
			switch {
			case v.loaded[pub] && v.readonly[pub]:
				out = append(out, status{"error", "read-only"})
			case v.loaded[pub]:
				if v.never || (v.sticky && !v.deletedOnce[pub]) {
					v.deletedOnce[pub] = true
				} else {
					delete(v.loaded, pub)
				}
				out = append(out, status{"deleted", ""})
			case v.history[pub] != (store.Protection{}):
				out = append(out, status{"not_active", ""})
			default:
				out = append(out, status{"not_found", ""})
			}
		}
		gvr := testGVR
		if v.otherChain {
			gvr[31] ^= 1
		}
		sp, err := slashing.Write(gvr, hist)
		if err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		reply(map[string]any{"data": out, "slashing_protection": string(sp)})
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

// sign records that the client signed with pk (its database grows).
func (v *fakeVC) sign(pk store.Pubkey, p store.Protection) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.history[pk] = v.history[pk].Merge(p)
}

func (v *fakeVC) keys() []store.Pubkey {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []store.Pubkey
	for pk := range v.loaded {
		out = append(out, pk)
	}
	sortPubkeys(out)
	return out
}

// fakeServer is pkmanager for one pod.
type fakeServer struct {
	mu         sync.Mutex
	keys       []Key
	sp         []byte
	gvr        []byte
	requestErr error
	releaseErr error
	releases   [][]byte
	requests   int
}

func (s *fakeServer) Request(context.Context) (Assignment, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	if s.requestErr != nil {
		return Assignment{}, s.requestErr
	}
	a := Assignment{SlashingProtection: s.sp, GenesisValidatorsRoot: s.gvr}
	for _, k := range s.keys {
		a.Keys = append(a.Keys, Key{Pubkey: k.Pubkey, Secret: bytes.Clone(k.Secret), Path: k.Path})
	}
	return a, nil
}

func (s *fakeServer) Release(_ context.Context, sp []byte) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.releaseErr != nil {
		return "", s.releaseErr
	}
	s.releases = append(s.releases, sp)
	return "released", nil
}

func (s *fakeServer) released() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.releases
}

func newKeys(t *testing.T, n int) []Key {
	t.Helper()
	var out []Key
	for range n {
		sk, err := keys.GenerateRandom()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, Key{Pubkey: sk.PublicKey(), Secret: sk.Bytes()})
	}
	return out
}

func pubkeys(ks []Key) []store.Pubkey {
	var out []store.Pubkey
	for _, k := range ks {
		out = append(out, k.Pubkey)
	}
	sortPubkeys(out)
	return out
}

func newSyncer(t *testing.T, srv Server, vc *fakeVC, logs *testbin.Buffer) *Syncer {
	t.Helper()
	var lg *slog.Logger
	if logs != nil {
		lg = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	s, err := New(Config{Server: srv, Client: vc.client(t), Interval: time.Hour, Keystore: keystore.Options{Insecure: true},
		Logger: lg})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func marks(t *testing.T, sp []byte) map[store.Pubkey]slashing.Watermarks {
	t.Helper()
	m, err := slashing.Parse(sp, testGVR, nil)
	if err != nil {
		t.Fatalf("interchange %s: %v", sp, err)
	}
	return m
}

func interchange(t *testing.T, m map[store.Pubkey]slashing.Watermarks) []byte {
	t.Helper()
	b, err := slashing.Write(testGVR, m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSyncPushesTheAssignmentWithItsHistory: the client gets the pod's keys
// with exactly their history, a second sync changes nothing, and no secret
// reaches the logs.
func TestSyncPushesTheAssignmentWithItsHistory(t *testing.T) {
	ks := newKeys(t, 2)
	prev := store.Protection{HasBlock: true, BlockSlot: 96, HasAttestation: true, SourceEpoch: 2, TargetEpoch: 3}
	srv := &fakeServer{keys: ks, gvr: testGVR[:], sp: interchange(t, map[store.Pubkey]slashing.Watermarks{ks[0].Pubkey: prev})}
	vc := newFakeVC(t)
	logs := &testbin.Buffer{}
	s := newSyncer(t, srv, vc, logs)
	ctx := t.Context()

	res, err := s.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res != (Result{Assigned: 2, Imported: 2}) {
		t.Fatalf("first sync: %+v", res)
	}
	if got := vc.keys(); len(got) != 2 || got[0] != pubkeys(ks)[0] || got[1] != pubkeys(ks)[1] {
		t.Fatalf("client holds %v, want %v", got, pubkeys(ks))
	}
	if len(vc.imports) != 1 {
		t.Fatalf("%d imports, want 1", len(vc.imports))
	}
	m := marks(t, vc.imports[0])
	if len(m) != 1 || m[ks[0].Pubkey] != prev {
		t.Fatalf("imported history %v, want only %s's %+v", m, ks[0].Pubkey, prev)
	}
	res, err = s.Sync(ctx)
	if err != nil || res != (Result{Assigned: 2}) || len(vc.imports) != 1 {
		t.Fatalf("second sync: %+v %v, %d imports", res, err, len(vc.imports))
	}
	out := logs.String()
	for _, secret := range append(append([]string{vc.token}, vc.passwords...), hex.EncodeToString(ks[0].Secret), hex.EncodeToString(ks[1].Secret)) {
		if strings.Contains(out, secret) {
			t.Fatalf("a secret is in the logs:\n%s", out)
		}
	}
	if len(vc.passwords) != 2 || vc.passwords[0] == vc.passwords[1] {
		t.Fatalf("passwords: %d, want 2 different ones", len(vc.passwords))
	}
}

// TestSyncDeletesKeysThePodNoLongerHolds: a key released while the pod runs
// leaves the client (DELETE repeated while it is listed), a new one comes.
func TestSyncDeletesKeysThePodNoLongerHolds(t *testing.T) {
	ks := newKeys(t, 3)
	srv := &fakeServer{keys: ks[:2], gvr: testGVR[:]}
	vc := newFakeVC(t)
	vc.sticky = true
	s := newSyncer(t, srv, vc, nil)
	if _, err := s.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	srv.mu.Lock()
	srv.keys = ks[1:]
	srv.mu.Unlock()
	res, err := s.Sync(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if res != (Result{Assigned: 2, Imported: 1, Deleted: 1}) || vc.deletes != 2 {
		t.Fatalf("sync: %+v, %d DELETEs (want 2: the first leaves it listed)", res, vc.deletes)
	}
	want := pubkeys(ks[1:])
	if got := vc.keys(); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("client holds %v, want %v", got, want)
	}
}

// TestSyncRefusesABadHistory: an interchange for a key the pod does not
// hold, or one without the chain's root, imports nothing.
func TestSyncRefusesABadHistory(t *testing.T) {
	ks := newKeys(t, 2)
	for name, srv := range map[string]*fakeServer{
		"foreign key": {keys: ks[:1], gvr: testGVR[:], sp: interchange(t, map[store.Pubkey]slashing.Watermarks{ks[1].Pubkey: {HasBlock: true, BlockSlot: 1}})},
		"no root":     {keys: ks[:1], sp: interchange(t, map[store.Pubkey]slashing.Watermarks{ks[0].Pubkey: {HasBlock: true, BlockSlot: 1}})},
		"short root":  {keys: ks[:1], gvr: testGVR[:31]},
	} {
		t.Run(name, func(t *testing.T) {
			vc := newFakeVC(t)
			_, err := newSyncer(t, srv, vc, nil).Sync(t.Context())
			if err == nil || len(vc.keys()) != 0 || len(vc.imports) != 0 {
				t.Fatalf("sync: %v; client holds %v after %d imports", err, vc.keys(), len(vc.imports))
			}
		})
	}
}

// TestShutdownReleasesWithTheClientsHistory: every key leaves the client
// (Lodestar 1.5.1 needs a second DELETE), then the release carries what the
// client signed, and only the pod's keys.
func TestShutdownReleasesWithTheClientsHistory(t *testing.T) {
	ks := newKeys(t, 2)
	stray := newKeys(t, 1)[0]
	srv := &fakeServer{keys: ks, gvr: testGVR[:]}
	vc := newFakeVC(t)
	vc.sticky = true
	s := newSyncer(t, srv, vc, nil)
	if _, err := s.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	signed := store.Protection{HasBlock: true, BlockSlot: 41, HasAttestation: true, SourceEpoch: 4, TargetEpoch: 5}
	vc.sign(ks[1].Pubkey, signed)
	vc.mu.Lock()
	vc.loaded[stray.Pubkey] = true // someone else's key in the client
	vc.mu.Unlock()
	vc.sign(stray.Pubkey, store.Protection{HasBlock: true, BlockSlot: 7})

	msg, err := s.Shutdown(t.Context())
	if err != nil || msg != "released" {
		t.Fatalf("Shutdown: %q %v", msg, err)
	}
	if left := vc.keys(); len(left) != 0 {
		t.Fatalf("client still holds %v", left)
	}
	rel := srv.released()
	if len(rel) != 1 {
		t.Fatalf("%d releases, want 1", len(rel))
	}
	m := marks(t, rel[0])
	if len(m) != 1 || m[ks[1].Pubkey] != signed {
		t.Fatalf("uploaded history %v, want only %s's %+v (not the stray key's)", m, ks[1].Pubkey, signed)
	}
}

// TestShutdownReleasesNothingUnlessFenced: whenever the keys may still be
// in the client, or its history is not acceptable, nothing is released.
func TestShutdownReleasesNothingUnlessFenced(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(vc *fakeVC)
		want  string
	}{
		{"client unreachable", func(vc *fakeVC) { vc.srv.Close() }, "may still sign"},
		{"DELETE fails", func(vc *fakeVC) { vc.failDelete = true }, "HTTP 500: database locked"},
		{"key stays listed", func(vc *fakeVC) { vc.never = true }, "after 5 DELETEs: still listed"},
		{"history of another chain", func(vc *fakeVC) { vc.otherChain = true }, "another chain"},
		{"read-only key of the pod", func(vc *fakeVC) {
			for pk := range vc.loaded {
				vc.readonly[pk] = true
			}
		}, "read-only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ks := newKeys(t, 1)
			srv := &fakeServer{keys: ks, gvr: testGVR[:]}
			vc := newFakeVC(t)
			s := newSyncer(t, srv, vc, nil)
			if _, err := s.Sync(t.Context()); err != nil {
				t.Fatal(err)
			}
			vc.sign(ks[0].Pubkey, store.Protection{HasBlock: true, BlockSlot: 9})
			vc.mu.Lock()
			tc.setup(vc)
			vc.mu.Unlock()
			_, err := s.Shutdown(t.Context())
			if !errors.Is(err, ErrNotReleased) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Shutdown: %v, want ErrNotReleased with %q", err, tc.want)
			}
			if n := len(srv.released()); n != 0 {
				t.Fatalf("%d releases, want none", n)
			}
		})
	}
}

// TestShutdownWithoutChain: a server that keeps no history gets a release
// without one; a failing release is reported.
func TestShutdownWithoutChain(t *testing.T) {
	ks := newKeys(t, 1)
	srv := &fakeServer{keys: ks}
	vc := newFakeVC(t)
	s := newSyncer(t, srv, vc, nil)
	if _, err := s.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(vc.imports) != 1 || len(vc.imports[0]) != 0 {
		t.Fatalf("imports %q, want one without an interchange", vc.imports)
	}
	vc.sign(ks[0].Pubkey, store.Protection{HasBlock: true, BlockSlot: 9})
	srv.releaseErr = errors.New("Unavailable: no answer")
	if _, err := s.Shutdown(t.Context()); !errors.Is(err, ErrNotReleased) || !strings.Contains(err.Error(), "release failed") {
		t.Fatalf("Shutdown with a failing release: %v", err)
	}
	srv.releaseErr = nil
	if _, err := s.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if rel := srv.released(); len(rel) != 1 || rel[0] != nil {
		t.Fatalf("releases %q, want one without history", rel)
	}
}

// TestImportOutlivesCancel: an import sent before the end of Run's context
// is finished, so Shutdown finds (and deletes) what the client loaded.
func TestImportOutlivesCancel(t *testing.T) {
	ks := newKeys(t, 1)
	srv := &fakeServer{keys: ks, gvr: testGVR[:]}
	vc := newFakeVC(t)
	vc.block, vc.posted = make(chan struct{}), make(chan struct{}, 1)
	unblock := sync.OnceFunc(func() { close(vc.block) })
	t.Cleanup(unblock) // before the fake's server closes, which waits for its handlers
	s := newSyncer(t, srv, vc, nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { _, err := s.Sync(ctx); done <- err }()
	select {
	case <-vc.posted:
	case <-time.After(10 * time.Second):
		t.Fatal("no import sent within 10 s")
	}
	cancel()
	select {
	case err := <-done:
		t.Fatalf("Sync returned %v before the import was answered", err)
	case <-time.After(300 * time.Millisecond):
	}
	unblock()
	if err := <-done; err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if got := vc.keys(); len(got) != 1 {
		t.Fatalf("client holds %v after the import, want the key", got)
	}
	if _, err := s.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := vc.keys(); len(got) != 0 || len(srv.released()) != 1 {
		t.Fatalf("after Shutdown the client holds %v; %d releases", got, len(srv.released()))
	}
}

// TestRunRetriesSoon: a failing server is asked again after a second, not
// after the interval.
func TestRunRetriesSoon(t *testing.T) {
	ks := newKeys(t, 1)
	srv := &fakeServer{keys: ks, gvr: testGVR[:], requestErr: errors.New("Unavailable: starting")}
	vc := newFakeVC(t)
	s := newSyncer(t, srv, vc, nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		srv.mu.Lock()
		n := srv.requests
		if n > 0 {
			srv.requestErr = nil
		}
		srv.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Run did not ask the server within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	deadline = time.Now().Add(10 * time.Second)
	for len(vc.keys()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the key was not pushed within 10 s of the server answering")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}
