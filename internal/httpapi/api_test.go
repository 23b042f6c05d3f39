package httpapi

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/metrics"
	"github.com/pkmanager/pkmanager/internal/store"
)

// apiError is the decoded JSON error body.
type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func decodeError(t *testing.T, rec *httptest.ResponseRecorder) apiError {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type = %q, want application/json", ct)
	}
	var e apiError
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
		t.Fatalf("error body %q is not JSON: %v", rec.Body.String(), err)
	}
	if e.Error.Code == "" || e.Error.Message == "" {
		t.Errorf("error body %q lacks code or message", rec.Body.String())
	}
	return e
}

func newTestHandler(t *testing.T, alloc *fakeAllocator, keys KeyLister, m *metrics.Metrics) http.Handler {
	t.Helper()
	if keys == nil {
		keys = &fakeLister{}
	}
	return NewHandler(Config{Allocator: alloc, Keys: keys, Metrics: m, Logger: quietLogger(t)})
}

func TestRequestKeys(t *testing.T) {
	alloc := &fakeAllocator{result: allocator.Result{
		Keys: []allocator.Key{
			{Pubkey: pk(0xa1, 1), Secret: markerSecret, Origin: store.OriginDerived, DerivationIndex: 3, HasDerivationIndex: true},
			{Pubkey: pk(0xa1, 2), Secret: markerSecret, Origin: store.OriginRandom},
		},
		Recycled: 1, Minted: 1,
	}}
	h := newTestHandler(t, alloc, nil, nil)
	rec := do(t, h, "POST", "/api/v1/keys/request", `{"pod_name":"validator-0","count":2,"pod_uid":"u-1"}`)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d, body %s", rec.Code, rec.Body)
	}
	if got := rec.Header().Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", got)
	}
	if got := rec.Header().Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q", got)
	}
	if alloc.lastPod != "validator-0" || alloc.lastUID != "u-1" || alloc.lastN != 2 {
		t.Errorf("allocator got pod %q uid %q n %d", alloc.lastPod, alloc.lastUID, alloc.lastN)
	}
	var got struct {
		Keys []struct {
			Pubkey         string  `json:"pubkey"`
			SecretKey      string  `json:"secret_key"`
			DerivationPath *string `json:"derivation_path"`
			Origin         string  `json:"origin"`
		} `json:"keys"`
		Recycled int `json:"recycled"`
		Minted   int `json:"minted"`
	}
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if len(got.Keys) != 2 || got.Recycled != 1 || got.Minted != 1 {
		t.Fatalf("got %+v", got)
	}
	wantSecret := "0x" + hex.EncodeToString(markerSecret)
	for i, k := range got.Keys {
		if want := pk(0xa1, i+1).String(); k.Pubkey != want {
			t.Errorf("key %d pubkey %s, want %s", i, k.Pubkey, want)
		}
		if k.SecretKey != wantSecret {
			t.Errorf("key %d secret_key %q, want %q", i, k.SecretKey, wantSecret)
		}
	}
	if p := got.Keys[0].DerivationPath; p == nil || *p != "m/12381/3600/3/0/0" {
		t.Errorf("derivation_path = %v, want m/12381/3600/3/0/0", p)
	}
	if p := got.Keys[1].DerivationPath; p != nil {
		t.Errorf("random key has derivation_path %q", *p)
	}
	if got.Keys[0].Origin != "derived" || got.Keys[1].Origin != "random" {
		t.Errorf("origins %q %q", got.Keys[0].Origin, got.Keys[1].Origin)
	}
	// The plaintext secrets are wiped once written.
	if len(alloc.handed) != 2 {
		t.Fatalf("allocator handed out %d secrets", len(alloc.handed))
	}
	for i, secret := range alloc.handed {
		if len(secret) != len(markerSecret) || slices.ContainsFunc(secret, func(b byte) bool { return b != 0 }) {
			t.Errorf("secret %d not wiped after the response: %x", i, secret)
		}
	}
}

func TestRequestKeysErrors(t *testing.T) {
	internal := errors.New("bbolt: disk on fire at /var/lib/secret-path")
	tests := []struct {
		name       string
		body       string
		allocErr   error
		wantStatus int
		wantCode   string
		wantCall   bool // whether the allocator may be reached
	}{
		{"bad JSON", `{"pod_name":`, nil, 400, "invalid_argument", false},
		{"not an object", `[1,2]`, nil, 400, "invalid_argument", false},
		{"unknown field", `{"pod_name":"validator-0","count":1,"n":3}`, nil, 400, "invalid_argument", false},
		{"wrong type", `{"pod_name":"validator-0","count":"4"}`, nil, 400, "invalid_argument", false},
		{"negative count", `{"pod_name":"validator-0","count":-1}`, nil, 400, "invalid_argument", false},
		{"empty body", ``, nil, 400, "invalid_argument", false},
		{"trailing data", `{"pod_name":"validator-0"} {"pod_name":"x"}`, nil, 400, "invalid_argument", false},
		{"too large", `{"pod_name":"` + strings.Repeat("a", MaxBodyBytes) + `"}`, nil, 413, "too_large", false},
		{"invalid request", `{"pod_name":"Bad_Name"}`, fmt.Errorf("%w: pod name is not valid", allocator.ErrInvalidRequest), 400, "invalid_argument", true},
		{"store invalid argument", `{"pod_name":"validator-0"}`, fmt.Errorf("claim: %w", store.ErrInvalidArgument), 400, "invalid_argument", true},
		{"pool exhausted", `{"pod_name":"validator-0","count":5}`, fmt.Errorf("%w: 0 available", allocator.ErrPoolExhausted), 409, "pool_exhausted", true},
		{"uid mismatch", `{"pod_name":"validator-0","pod_uid":"b"}`, fmt.Errorf("claim: %w", allocator.ErrPodUIDMismatch), 409, "conflict", true},
		{"not found", `{"pod_name":"validator-0"}`, fmt.Errorf("x: %w", store.ErrNotFound), 404, "not_found", true},
		{"internal", `{"pod_name":"validator-0"}`, internal, 500, "internal", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			alloc := &fakeAllocator{err: tt.allocErr}
			h := newTestHandler(t, alloc, nil, nil)
			rec := do(t, h, "POST", "/api/v1/keys/request", tt.body)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d; body %s", rec.Code, tt.wantStatus, truncate(rec.Body.String(), 300))
			}
			e := decodeError(t, rec)
			if e.Error.Code != tt.wantCode {
				t.Errorf("code %q, want %q", e.Error.Code, tt.wantCode)
			}
			if called := alloc.callCount() > 0; called && !tt.wantCall {
				t.Errorf("bad input reached the allocator")
			}
			if tt.wantStatus == 500 && strings.Contains(e.Error.Message, "disk on fire") {
				t.Errorf("internal error text leaked: %q", e.Error.Message)
			}
			if tt.wantStatus != 500 && tt.allocErr != nil && e.Error.Message != tt.allocErr.Error() {
				t.Errorf("message %q, want the error %q", e.Error.Message, tt.allocErr)
			}
		})
	}
}

func TestRelease(t *testing.T) {
	until := time.Date(2025, 1, 2, 15, 4, 5, 0, time.UTC)
	alloc := &fakeAllocator{release: allocator.ReleaseResult{Released: 4, CoolingUntil: until}}
	h := newTestHandler(t, alloc, nil, nil)
	rec := do(t, h, "POST", "/api/v1/keys/release", `{"pod_name":"validator-0","pod_uid":"u-1"}`)
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var got map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got["released"] != 4.0 || got["cooling_until"] != "2025-01-02T15:04:05Z" {
		t.Errorf("got %v", got)
	}
	if msg, _ := got["message"].(string); !strings.Contains(msg, "validator-0") {
		t.Errorf("message %q does not name the pod", msg)
	}
	if alloc.lastPod != "validator-0" || alloc.lastUID != "u-1" {
		t.Errorf("allocator got %q %q", alloc.lastPod, alloc.lastUID)
	}

	alloc.release = allocator.ReleaseResult{}
	rec = do(t, h, "POST", "/api/v1/keys/release", `{"pod_name":"validator-9"}`)
	got = nil
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if _, ok := got["cooling_until"]; ok || got["released"] != 0.0 {
		t.Errorf("empty release answered %v", got)
	}
}

func TestReleaseErrors(t *testing.T) {
	for _, tt := range []struct {
		body   string
		err    error
		status int
	}{
		{`{"pod_name":"validator-0","count":1}`, nil, 400},
		{`{"pod_name":"validator-0","pod_uid":"x"}`, fmt.Errorf("release: %w", store.ErrPodUIDMismatch), 409},
		{`{"pod_name":""}`, fmt.Errorf("%w: pod name is empty", allocator.ErrInvalidRequest), 400},
	} {
		alloc := &fakeAllocator{err: tt.err}
		rec := do(t, newTestHandler(t, alloc, nil, nil), "POST", "/api/v1/keys/release", tt.body)
		if rec.Code != tt.status {
			t.Errorf("%s: status %d, want %d", tt.body, rec.Code, tt.status)
		}
		decodeError(t, rec)
	}
}

func TestRetire(t *testing.T) {
	key := pk(0xb2, 7)
	alloc := &fakeAllocator{}
	h := newTestHandler(t, alloc, nil, nil)
	rec := do(t, h, "POST", "/api/v1/keys/"+key.String()+"/retire", `{"reason":" slashed "}`)
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if alloc.retired != key || alloc.reason != " slashed " {
		t.Errorf("allocator got %s %q", alloc.retired, alloc.reason)
	}
	var got retireResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Pubkey != key.String() || got.State != store.StateRetired || got.Reason != "slashed" {
		t.Errorf("got %+v", got)
	}
	// Without 0x is accepted too.
	rec = do(t, h, "POST", "/api/v1/keys/"+strings.TrimPrefix(key.String(), "0x")+"/retire", `{"reason":"x"}`)
	if rec.Code != 200 {
		t.Errorf("pubkey without 0x: status %d", rec.Code)
	}
}

func TestRetireErrors(t *testing.T) {
	key := pk(0xb2, 7).String()
	for _, tt := range []struct {
		name, path, body string
		err              error
		status           int
		code             string
		called           bool
	}{
		{"not hex", "/api/v1/keys/0xzz/retire", `{"reason":"x"}`, nil, 400, "invalid_argument", false},
		{"short", "/api/v1/keys/0xabcd/retire", `{"reason":"x"}`, nil, 400, "invalid_argument", false},
		{"unknown field", "/api/v1/keys/" + key + "/retire", `{"reason":"x","force":true}`, nil, 400, "invalid_argument", false},
		{"no reason", "/api/v1/keys/" + key + "/retire", `{}`, fmt.Errorf("%w: a reason is required", allocator.ErrInvalidRequest), 400, "invalid_argument", true},
		{"unknown key", "/api/v1/keys/" + key + "/retire", `{"reason":"x"}`, fmt.Errorf("retire: %w", store.ErrNotFound), 404, "not_found", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			alloc := &fakeAllocator{err: tt.err}
			rec := do(t, newTestHandler(t, alloc, nil, nil), "POST", tt.path, tt.body)
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.status, rec.Body)
			}
			if e := decodeError(t, rec); e.Error.Code != tt.code {
				t.Errorf("code %q, want %q", e.Error.Code, tt.code)
			}
			if alloc.callCount() > 0 != tt.called {
				t.Errorf("allocator called: %v, want %v", alloc.callCount() > 0, tt.called)
			}
		})
	}
}

func TestMethodNotAllowedAndNotFound(t *testing.T) {
	alloc := &fakeAllocator{}
	h := newTestHandler(t, alloc, nil, nil)
	for _, tt := range []struct {
		method, path string
		status       int
		allow        string
		json         bool
	}{
		{"GET", "/api/v1/keys/request", 405, "POST", true},
		{"DELETE", "/api/v1/keys", 405, "GET, HEAD", true},
		{"GET", "/api/v1/keys/" + pk(1, 1).String() + "/retire", 405, "POST", true},
		{"POST", "/assignments", 405, "GET, HEAD", false},
		{"POST", "/healthz", 405, "GET, HEAD", false},
		{"GET", "/api/v1/nope", 404, "", true},
		{"GET", "/api/v2/keys", 404, "", true},
	} {
		rec := do(t, h, tt.method, tt.path, "")
		if rec.Code != tt.status {
			t.Errorf("%s %s: status %d, want %d", tt.method, tt.path, rec.Code, tt.status)
		}
		if got := rec.Header().Get("Allow"); got != tt.allow {
			t.Errorf("%s %s: Allow %q, want %q", tt.method, tt.path, got, tt.allow)
		}
		if tt.json {
			decodeError(t, rec)
		}
	}
	if alloc.callCount() != 0 {
		t.Errorf("allocator was called")
	}
}

// boltWithPods returns a bolt store where pods validator-0..2 hold 3 keys
// each, validator-3 released its 2 keys (cooling down) and 4 keys are
// available.
func boltWithPods(t *testing.T) store.Store {
	t.Helper()
	s := openBolt(t, t.TempDir())
	t.Cleanup(func() { _ = s.Close() })
	fillAssigned(t, s, 0x80, []string{"validator-0", "validator-1", "validator-2"}, 3, fixtureNow)
	ctx := context.Background()
	if err := s.AddKeys(ctx, newKeys(0x90, 0, 6), store.StateAvailable, fixtureNow); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(ctx, store.ClaimParams{Pod: "validator-3", Want: 2, Now: fixtureNow}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Release(ctx, store.ReleaseParams{Pod: "validator-3", Until: fixtureNow.Add(time.Hour), Now: fixtureNow.Add(time.Minute)}); err != nil || n != 2 {
		t.Fatalf("release: %d, %v", n, err)
	}
	return s
}

type listedKey struct {
	Pubkey         string `json:"pubkey"`
	State          string `json:"state"`
	PodName        string `json:"pod_name"`
	PodUID         string `json:"pod_uid"`
	LastPodName    string `json:"last_pod_name"`
	Since          string `json:"since"`
	CoolingUntil   string `json:"cooling_until"`
	RetiredReason  string `json:"retired_reason"`
	Origin         string `json:"origin"`
	DerivationPath string `json:"derivation_path"`
}

func listKeysJSON(t *testing.T, h http.Handler, query string) []listedKey {
	t.Helper()
	rec := do(t, h, "GET", "/api/v1/keys"+query, "")
	if rec.Code != 200 {
		t.Fatalf("GET %s: status %d: %s", query, rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	assertNoSecret(t, "key listing", rec.Body.Bytes())
	var got struct {
		Keys []listedKey `json:"keys"`
	}
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("decode listing: %v", err)
	}
	return got.Keys
}

func TestListKeys(t *testing.T) {
	s := boltWithPods(t)
	h := newTestHandler(t, &fakeAllocator{}, s, nil)

	all := listKeysJSON(t, h, "")
	if len(all) != 3*3+6 {
		t.Fatalf("listed %d keys, want 15", len(all))
	}
	byState := map[string]int{}
	for i, k := range all {
		byState[k.State]++
		if i > 0 && all[i-1].Pubkey >= k.Pubkey {
			t.Errorf("not in pubkey order at %d", i)
		}
		if k.Origin != "derived" || !strings.HasPrefix(k.DerivationPath, "m/12381/3600/") {
			t.Errorf("key %s: origin %q path %q", k.Pubkey, k.Origin, k.DerivationPath)
		}
		if _, err := time.Parse(time.RFC3339, k.Since); err != nil {
			t.Errorf("since %q: %v", k.Since, err)
		}
	}
	if byState["assigned"] != 9 || byState["cooling-down"] != 2 || byState["available"] != 4 {
		t.Errorf("states %v", byState)
	}

	cooling := listKeysJSON(t, h, "?state=cooling-down")
	for _, k := range cooling {
		if k.LastPodName != "validator-3" || k.PodName != "" || k.CoolingUntil != "2025-03-14T10:26:53Z" {
			t.Errorf("cooling key %+v", k)
		}
	}
	if len(cooling) != 2 {
		t.Errorf("%d cooling keys, want 2", len(cooling))
	}

	two := listKeysJSON(t, h, "?state=assigned&state=available")
	if len(two) != 13 {
		t.Errorf("assigned+available: %d keys, want 13", len(two))
	}
	if comma := listKeysJSON(t, h, "?state=assigned,available"); len(comma) != 13 {
		t.Errorf("comma-separated states: %d keys, want 13", len(comma))
	}

	pod := listKeysJSON(t, h, "?pod=validator-1")
	if len(pod) != 3 {
		t.Errorf("pod filter: %d keys, want 3", len(pod))
	}
	for _, k := range pod {
		if k.PodName != "validator-1" || k.PodUID != "uid-validator-1" || k.State != "assigned" {
			t.Errorf("pod filter returned %+v", k)
		}
	}
	if none := listKeysJSON(t, h, "?pod=nobody"); len(none) != 0 {
		t.Errorf("unknown pod listed %d keys", len(none))
	}

	rec := do(t, h, "GET", "/api/v1/keys?state=bogus", "")
	if rec.Code != 400 {
		t.Errorf("bad state: status %d", rec.Code)
	}
	if e := decodeError(t, rec); !strings.Contains(e.Error.Message, "bogus") {
		t.Errorf("message %q does not name the bad state", e.Error.Message)
	}
}

func TestListKeysStoreError(t *testing.T) {
	keys := make([]store.Key, 2000)
	for i := range keys {
		keys[i] = store.Key{Pubkey: pk(0x10, i), State: store.StateAvailable, Since: fixtureNow}
	}
	// Failing before anything is written: a clean JSON 500.
	lister := &fakeLister{keys: keys, err: errors.New("disk gone"), failAfter: 5}
	h := newTestHandler(t, &fakeAllocator{}, lister, nil)
	rec := do(t, h, "GET", "/api/v1/keys", "")
	if rec.Code != 500 {
		t.Fatalf("status %d", rec.Code)
	}
	if e := decodeError(t, rec); e.Error.Code != "internal" || strings.Contains(e.Error.Message, "disk gone") {
		t.Errorf("error %+v", e)
	}

	// Failing after a streamed part went out: the response is aborted, so a
	// client cannot take a truncated list for a complete one.
	lister.failAfter = 1500
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/api/v1/keys")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("read a complete body of %d bytes after a store failure (valid JSON: %v)", len(body), json.Valid(body))
	}
	if len(body) == 0 {
		t.Errorf("expected part of the stream before the abort")
	}
}

// depositKeys reads the test deposit_data file into keys with deposits.
func depositKeys(t *testing.T) []store.NewKey {
	t.Helper()
	b, err := os.ReadFile("testdata/deposit_data-mainnet-2.json")
	if err != nil {
		t.Fatal(err)
	}
	entries, err := deposit.ParseCLI(b)
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]store.NewKey, len(entries))
	for i, e := range entries {
		pub, d, err := e.Deposit()
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = store.NewKey{Pubkey: pub, SealedSecret: markerSecret, Origin: store.OriginDerived,
			DerivationIndex: uint32(i), HasDerivationIndex: true, Deposit: &d}
	}
	return keys
}

func TestDepositData(t *testing.T) {
	s := openBolt(t, t.TempDir())
	defer s.Close()
	h := newTestHandler(t, &fakeAllocator{}, s, nil)

	rec := do(t, h, "GET", "/api/v1/deposit-data", "")
	if rec.Code != 404 {
		t.Errorf("empty store: status %d, want 404", rec.Code)
	}
	if got := rec.Header().Get("Content-Disposition"); got != "" {
		t.Errorf("error response has Content-Disposition %q", got)
	}
	decodeError(t, rec)

	keys := depositKeys(t)
	if err := s.AddKeys(context.Background(), keys, store.StatePendingDeposit, fixtureNow); err != nil {
		t.Fatal(err)
	}
	// A key without deposit data is left out.
	if err := s.AddKeys(context.Background(), newKeys(0x70, 0, 1), store.StateAvailable, fixtureNow); err != nil {
		t.Fatal(err)
	}
	// The server deposits pending keys itself: by default they are left out.
	rec = do(t, h, "GET", "/api/v1/deposit-data", "")
	if rec.Code != 404 || !strings.Contains(rec.Body.String(), "left out 2 pending-deposit") {
		t.Errorf("pending keys only: status %d %s, want 404 saying 2 pending were left out", rec.Code, rec.Body)
	}
	before := time.Now().Unix()
	rec = do(t, h, "GET", "/api/v1/deposit-data?all=true", "")
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	cd := rec.Header().Get("Content-Disposition")
	m := regexp.MustCompile(`^attachment; filename="deposit_data-(\d+)\.json"$`).FindStringSubmatch(cd)
	if m == nil {
		t.Fatalf("Content-Disposition %q", cd)
	}
	if ts := m[1]; ts < fmt.Sprint(before) || len(ts) != len(fmt.Sprint(before)) {
		t.Errorf("file name time %s before the request (%d)", ts, before)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	assertNoSecret(t, "deposit data", rec.Body.Bytes())
	entries, err := deposit.ParseCLI(rec.Body.Bytes())
	if err != nil {
		t.Fatalf("response is not a deposit_data file: %v", err)
	}
	if len(entries) != len(keys) {
		t.Fatalf("%d entries, want %d", len(entries), len(keys))
	}
	for i, e := range entries {
		if want := hex.EncodeToString(keys[i].Pubkey[:]); e.Pubkey != want {
			t.Errorf("entry %d pubkey %s, want %s", i, e.Pubkey, want)
		}
		if e.NetworkName != "mainnet" || e.Amount != 32_000_000_000 {
			t.Errorf("entry %d: %+v", i, e)
		}
	}

	if rec := do(t, h, "GET", "/api/v1/deposit-data?state=assigned&all=1", ""); rec.Code != 404 {
		t.Errorf("state=assigned: status %d, want 404", rec.Code)
	}
	if rec := do(t, h, "GET", "/api/v1/deposit-data?state=pending-deposit&all=true", ""); rec.Code != 200 {
		t.Errorf("state=pending-deposit: status %d, want 200", rec.Code)
	}
	if rec := do(t, h, "GET", "/api/v1/deposit-data?all=maybe", ""); rec.Code != 400 {
		t.Errorf("all=maybe: status %d, want 400", rec.Code)
	}
}

// fakeChain says the deposits of the keys in onChain are on chain.
type fakeChain struct{ onChain map[store.Pubkey]bool }

func (f fakeChain) DepositStatuses(_ context.Context, keys []store.Key) ([]deposit.OnChain, error) {
	out := make([]deposit.OnChain, len(keys))
	for i, k := range keys {
		out[i].Status = deposit.StatusNotOnChain
		if f.onChain[k.Pubkey] {
			out[i] = deposit.OnChain{Status: deposit.StatusOnChain, Block: 7}
		}
	}
	return out, nil
}

// An export never carries a deposit already on chain; without a view of
// the chain it is refused unless all is asked for.
func TestDepositDataLeavesOutDepositsOnChain(t *testing.T) {
	s := openBolt(t, t.TempDir())
	defer s.Close()
	keys := depositKeys(t)
	if err := s.AddKeys(context.Background(), keys, store.StateAvailable, fixtureNow); err != nil {
		t.Fatal(err)
	}
	blind := newTestHandler(t, &fakeAllocator{}, s, nil)
	rec := do(t, blind, "GET", "/api/v1/deposit-data", "")
	if rec.Code != 409 || !strings.Contains(rec.Body.String(), "--all") {
		t.Errorf("no view of the chain: status %d %s, want 409 naming --all", rec.Code, rec.Body)
	}
	h := NewHandler(Config{Allocator: &fakeAllocator{}, Keys: s, Logger: quietLogger(t), Chain: fakeChain{map[store.Pubkey]bool{keys[0].Pubkey: true}}})
	rec = do(t, h, "GET", "/api/v1/deposit-data", "")
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	entries, err := deposit.ParseCLI(rec.Body.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(keys)-1 || entries[0].Pubkey == hex.EncodeToString(keys[0].Pubkey[:]) {
		t.Errorf("%d entries (first %s), want all but the one on chain", len(entries), entries[0].Pubkey)
	}
	if om := rec.Header().Get("X-Pkmanager-Omitted"); !strings.Contains(om, "1 whose deposit is already on chain") {
		t.Errorf("X-Pkmanager-Omitted = %q", om)
	}
	if rec := do(t, h, "GET", "/api/v1/deposit-data?all=true", ""); rec.Code != 200 || strings.Count(rec.Body.String(), `"pubkey"`) != len(keys) {
		t.Errorf("all=true: status %d, want every key", rec.Code)
	}
	if rec := do(t, h, "GET", "/api/v1/deposit-data?state=nope", ""); rec.Code != 400 {
		t.Errorf("bad state: status %d, want 400", rec.Code)
	}
}

func counterValue(t *testing.T, m *metrics.Metrics, method, outcome string) float64 {
	t.Helper()
	var out dto.Metric
	if err := m.Requests.WithLabelValues("http", method, outcome).Write(&out); err != nil {
		t.Fatal(err)
	}
	return out.GetCounter().GetValue()
}

func TestMetrics(t *testing.T) {
	m := metrics.New(nil, nil)
	alloc := &fakeAllocator{result: allocator.Result{Keys: []allocator.Key{{Pubkey: pk(1, 1), Secret: markerSecret}}}}
	h := newTestHandler(t, alloc, &fakeLister{}, m)

	do(t, h, "POST", "/api/v1/keys/request", `{"pod_name":"validator-0"}`)
	do(t, h, "POST", "/api/v1/keys/request", `{"pod_name":"validator-0"}`)
	do(t, h, "POST", "/api/v1/keys/request", `{"pod_name":`)
	do(t, h, "POST", "/api/v1/keys/request", `{"pod_name":"validator-0","count":-3}`)
	alloc.err = fmt.Errorf("%w: none left", allocator.ErrPoolExhausted)
	do(t, h, "POST", "/api/v1/keys/request", `{"pod_name":"validator-0"}`)
	alloc.err = fmt.Errorf("release: %w", store.ErrPodUIDMismatch)
	do(t, h, "POST", "/api/v1/keys/release", `{"pod_name":"validator-0"}`)
	alloc.err = fmt.Errorf("retire: %w", store.ErrNotFound)
	do(t, h, "POST", "/api/v1/keys/"+pk(1, 1).String()+"/retire", `{"reason":"x"}`)
	alloc.err = errors.New("boom")
	do(t, h, "POST", "/api/v1/keys/release", `{"pod_name":"validator-0"}`)
	do(t, h, "GET", "/api/v1/keys", "")
	do(t, h, "GET", "/assignments?format=text", "")
	do(t, h, "GET", "/assignments?sort=nope", "")

	for _, tt := range []struct {
		method, outcome string
		want            float64
	}{
		{"keys.request", metrics.OutcomeOK, 2},
		{"keys.request", metrics.OutcomeInvalid, 2},
		{"keys.request", metrics.OutcomeExhausted, 1},
		{"keys.release", metrics.OutcomeConflict, 1},
		{"keys.release", metrics.OutcomeError, 1},
		{"keys.retire", metrics.OutcomeNotFound, 1},
		{"keys.list", metrics.OutcomeOK, 1},
		{"assignments", metrics.OutcomeOK, 1},
		{"assignments", metrics.OutcomeInvalid, 1},
	} {
		if got := counterValue(t, m, tt.method, tt.outcome); got != tt.want {
			t.Errorf("requests_total{method=%s,outcome=%s} = %v, want %v", tt.method, tt.outcome, got, tt.want)
		}
	}

	rec := do(t, h, "GET", "/metrics", "")
	if rec.Code != 200 {
		t.Fatalf("/metrics status %d", rec.Code)
	}
	if want := `pkmanager_requests_total{api="http",method="keys.request",outcome="exhausted"} 1`; !strings.Contains(rec.Body.String(), want) {
		t.Errorf("/metrics lacks %q", want)
	}
	assertNoSecret(t, "/metrics", rec.Body.Bytes())

	noMetrics := newTestHandler(t, &fakeAllocator{}, nil, nil)
	if rec := do(t, noMetrics, "GET", "/metrics", ""); rec.Code != 404 {
		t.Errorf("/metrics without Metrics: status %d, want 404", rec.Code)
	}
	// Without metrics, API calls still work.
	if rec := do(t, noMetrics, "GET", "/api/v1/keys", ""); rec.Code != 200 {
		t.Errorf("listing without Metrics: status %d", rec.Code)
	}
}

func TestHealthAndReady(t *testing.T) {
	var readyErr error
	var deadline time.Duration
	h := NewHandler(Config{
		Allocator: &fakeAllocator{}, Keys: &fakeLister{}, Logger: quietLogger(t),
		Ready: func(ctx context.Context) error {
			if d, ok := ctx.Deadline(); ok {
				deadline = time.Until(d)
			}
			return readyErr
		},
	})
	if rec := do(t, h, "GET", "/healthz", ""); rec.Code != 200 || rec.Body.String() != "ok\n" {
		t.Errorf("/healthz: %d %q", rec.Code, rec.Body)
	}
	if rec := do(t, h, "GET", "/readyz", ""); rec.Code != 200 || rec.Body.String() != "ok\n" {
		t.Errorf("/readyz: %d %q", rec.Code, rec.Body)
	}
	if deadline <= 0 || deadline > 2*time.Second {
		t.Errorf("readiness check deadline %v, want within 2s", deadline)
	}
	// /readyz is unauthenticated: it says which part fails, never the
	// error's text (it may quote configuration, such as a store URL).
	readyErr = errors.New("store: ping postgres://pkm@db/pk?password=hunter2: database not open")
	rec := do(t, h, "GET", "/readyz", "")
	if rec.Code != 503 || rec.Body.String() != "not ready: see the server log\n" {
		t.Errorf("/readyz when not ready: %d %q", rec.Code, rec.Body)
	}
	readyErr = fmt.Errorf("check: %w", &NotReady{Reason: "store unreachable", Err: readyErr})
	rec = do(t, h, "GET", "/readyz", "")
	if rec.Code != 503 || rec.Body.String() != "not ready: store unreachable\n" {
		t.Errorf("/readyz when the store is unreachable: %d %q", rec.Code, rec.Body)
	}
	// Health does not depend on readiness.
	if rec := do(t, h, "GET", "/healthz", ""); rec.Code != 200 {
		t.Errorf("/healthz while not ready: %d", rec.Code)
	}
	// Notes come under the verdict, ready or not.
	notes := []string{"no beacon node (--beacon-url): released keys are reused on the store's word alone"}
	h = NewHandler(Config{Allocator: &fakeAllocator{}, Keys: &fakeLister{}, ReadyNotes: func() []string { return notes }})
	if rec := do(t, h, "GET", "/readyz", ""); rec.Code != 200 || rec.Body.String() != "ok\nnote: "+notes[0]+"\n" {
		t.Errorf("/readyz with a note: %d %q", rec.Code, rec.Body)
	}
	// Nil Ready means always ready.
	h = NewHandler(Config{Allocator: &fakeAllocator{}, Keys: &fakeLister{}})
	if rec := do(t, h, "GET", "/readyz", ""); rec.Code != 200 {
		t.Errorf("/readyz with nil Ready: %d", rec.Code)
	}
}

func TestNewHandlerRequiresDependencies(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("NewHandler without Allocator and Keys did not panic")
		}
	}()
	NewHandler(Config{})
}
