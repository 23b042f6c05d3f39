package grpcapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/pkmanager/pkmanager/api/legacy/ethcluster"
	"github.com/pkmanager/pkmanager/api/legacy/prysmcluster"
	pkmanagerv1 "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/store"
)

// fakeAllocator answers with the functions set by a test and records calls.
type fakeAllocator struct {
	request func(ctx context.Context, pod, podUID string, n int) (allocator.Result, error)
	release func(ctx context.Context, pod, podUID string) (allocator.ReleaseResult, error)
	retire  func(ctx context.Context, pubkey store.Pubkey, reason string) error

	mu    sync.Mutex
	calls []string                          // e.g. "Request validator-0 uid 3"
	prot  map[store.Pubkey]store.Protection // of the last release
}

func (f *fakeAllocator) record(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

// Calls returns the recorded calls.
func (f *fakeAllocator) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeAllocator) Request(ctx context.Context, pod, podUID string, n int) (allocator.Result, error) {
	f.record("Request %s %q %d", pod, podUID, n)
	if f.request == nil {
		return allocator.Result{}, errors.New("fake: Request not set")
	}
	return f.request(ctx, pod, podUID, n)
}

func (f *fakeAllocator) ReleaseWithProtection(ctx context.Context, pod, podUID string, prot map[store.Pubkey]store.Protection) (allocator.ReleaseResult, error) {
	f.record("Release %s %q", pod, podUID)
	f.mu.Lock()
	f.prot = prot
	f.mu.Unlock()
	if f.release == nil {
		return allocator.ReleaseResult{}, errors.New("fake: Release not set")
	}
	return f.release(ctx, pod, podUID)
}

func (f *fakeAllocator) Retire(ctx context.Context, pubkey store.Pubkey, reason string) error {
	f.record("Retire %s %q", pubkey, reason)
	if f.retire == nil {
		return errors.New("fake: Retire not set")
	}
	return f.retire(ctx, pubkey, reason)
}

// fakeLister filters keys like a store does and records the options it got.
type fakeLister struct {
	keys []store.Key
	err  error // returned after the walk

	mu   sync.Mutex
	opts []store.ListOptions
}

func (f *fakeLister) ListKeys(ctx context.Context, opts store.ListOptions, fn func(store.Key) error) error {
	f.mu.Lock()
	f.opts = append(f.opts, opts)
	f.mu.Unlock()
	n := 0
	for _, k := range f.keys {
		if len(opts.States) > 0 && !containsState(opts.States, k.State) {
			continue
		}
		if opts.Pod != "" && k.Pod != opts.Pod {
			continue
		}
		if opts.After != nil && bytes.Compare(k.Pubkey[:], opts.After[:]) <= 0 {
			continue
		}
		if opts.Limit > 0 && n == opts.Limit {
			break
		}
		n++
		if !opts.WithDeposit {
			k.Deposit = nil
		}
		k.SealedSecret = nil // listings never carry it
		if err := fn(k); err != nil {
			return err
		}
	}
	return f.err
}

// Opts returns the options of every call so far.
func (f *fakeLister) Opts() []store.ListOptions {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]store.ListOptions(nil), f.opts...)
}

func containsState(states []store.State, s store.State) bool {
	for _, v := range states {
		if v == s {
			return true
		}
	}
	return false
}

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testLogger logs everything, debug included, into the returned buffer.
func testLogger() (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// serve registers cfg on a fresh server behind a bufconn listener and returns
// a client connection to it.
func serve(t *testing.T, cfg Config, opts ...grpc.ServerOption) *grpc.ClientConn {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger, _ = testLogger()
	}
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(opts...)
	if err := Register(srv, cfg); err != nil {
		t.Fatalf("Register: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(lis); err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() {
		conn.Close()
		srv.Stop()
		<-done
	})
	return conn
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// testKey returns a distinct key; its secret looks random so that a search
// for it in logs and messages cannot match by accident.
func testKey(i int) allocator.Key {
	var pk store.Pubkey
	pk[0] = 0xa0
	pk[1], pk[2] = byte(i>>8), byte(i)
	secret := sha256.Sum256(fmt.Appendf(nil, "secret %d", i))
	return allocator.Key{Pubkey: pk, Secret: secret[:], Origin: store.OriginDerived, DerivationIndex: uint32(i), HasDerivationIndex: true}
}

// returnKeys is a Request function that hands out n test keys.
func returnKeys(ctx context.Context, pod, podUID string, n int) (allocator.Result, error) {
	res := allocator.Result{Recycled: 1, Minted: n - 1}
	for i := range n {
		res.Keys = append(res.Keys, testKey(i))
	}
	return res, nil
}

// legacyClient calls PrivateKeyService.Request under one package name.
type legacyClient struct {
	pkg  string
	call func(ctx context.Context, conn *grpc.ClientConn, pod string, n uint64) (secrets [][]byte, deprecated []byte, err error)
}

var legacyClients = []legacyClient{
	{"prysm.internal.cluster", func(ctx context.Context, conn *grpc.ClientConn, pod string, n uint64) ([][]byte, []byte, error) {
		resp, err := prysmcluster.NewPrivateKeyServiceClient(conn).Request(ctx, &prysmcluster.PrivateKeyRequest{PodName: pod, NumberOfKeys: n})
		//lint:ignore SA1019 the deprecated field must stay empty
		return resp.GetPrivateKeys().GetPrivateKeys(), resp.GetPrivateKey(), err
	}},
	{"ethereum.cluster", func(ctx context.Context, conn *grpc.ClientConn, pod string, n uint64) ([][]byte, []byte, error) {
		resp, err := ethcluster.NewPrivateKeyServiceClient(conn).Request(ctx, &ethcluster.PrivateKeyRequest{PodName: pod, NumberOfKeys: n})
		//lint:ignore SA1019 the deprecated field must stay empty
		return resp.GetPrivateKeys().GetPrivateKeys(), resp.GetPrivateKey(), err
	}},
}

func wantCode(t *testing.T, err error, want codes.Code) *status.Status {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("error %v is not a gRPC status", err)
	}
	if st.Code() != want {
		t.Fatalf("code %s (%q), want %s", st.Code(), st.Message(), want)
	}
	return st
}

func TestRegisterRequiresDependencies(t *testing.T) {
	srv := grpc.NewServer()
	defer srv.Stop()
	if err := Register(srv, Config{Keys: &fakeLister{}}); err == nil {
		t.Error("Register without an allocator succeeded")
	}
	if err := Register(srv, Config{Allocator: &fakeAllocator{}}); err == nil {
		t.Error("Register without a key lister succeeded")
	}
	if err := Register(nil, Config{Allocator: &fakeAllocator{}, Keys: &fakeLister{}}); err == nil {
		t.Error("Register on a nil server succeeded")
	}
	if len(srv.GetServiceInfo()) != 0 {
		t.Errorf("failed Register calls registered %v", srv.GetServiceInfo())
	}
}

func TestLegacyFullMethodNames(t *testing.T) {
	const (
		prysmMethod = "/prysm.internal.cluster.PrivateKeyService/Request"
		ethMethod   = "/ethereum.cluster.PrivateKeyService/Request"
	)
	if prysmcluster.PrivateKeyService_Request_FullMethodName != prysmMethod {
		t.Errorf("prysmcluster method %q", prysmcluster.PrivateKeyService_Request_FullMethodName)
	}
	if ethcluster.PrivateKeyService_Request_FullMethodName != ethMethod {
		t.Errorf("ethcluster method %q", ethcluster.PrivateKeyService_Request_FullMethodName)
	}

	var mu sync.Mutex
	var seen []string
	record := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		mu.Lock()
		seen = append(seen, info.FullMethod)
		mu.Unlock()
		return h(ctx, req)
	}
	conn := serve(t, Config{Allocator: &fakeAllocator{request: returnKeys}, Keys: &fakeLister{}, Legacy: true},
		grpc.UnaryInterceptor(record))
	ctx := testCtx(t)
	for _, c := range legacyClients {
		if _, _, err := c.call(ctx, conn, "validator-0", 1); err != nil {
			t.Fatalf("%s: %v", c.pkg, err)
		}
	}
	// A client that knows nothing but the literal method name, as Prysm's.
	for _, m := range []string{prysmMethod, ethMethod} {
		out := new(prysmcluster.PrivateKeyResponse)
		if err := conn.Invoke(ctx, m, &prysmcluster.PrivateKeyRequest{PodName: "validator-1", NumberOfKeys: 2}, out); err != nil {
			t.Fatalf("invoke %s: %v", m, err)
		}
		if got := len(out.GetPrivateKeys().GetPrivateKeys()); got != 2 {
			t.Errorf("invoke %s: %d keys, want 2", m, got)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{prysmMethod, ethMethod, prysmMethod, ethMethod}
	if strings.Join(seen, " ") != strings.Join(want, " ") {
		t.Errorf("server saw methods %v, want %v", seen, want)
	}
}

func TestLegacyRequestReturnsWholeSet(t *testing.T) {
	for _, c := range legacyClients {
		t.Run(c.pkg, func(t *testing.T) {
			fa := &fakeAllocator{request: returnKeys}
			conn := serve(t, Config{Allocator: fa, Keys: &fakeLister{}, Legacy: true})
			secrets, deprecated, err := c.call(testCtx(t), conn, "validator-0", 3)
			if err != nil {
				t.Fatal(err)
			}
			if len(secrets) != 3 {
				t.Fatalf("%d secrets, want 3", len(secrets))
			}
			for i, s := range secrets {
				if want := testKey(i).Secret; !bytes.Equal(s, want) {
					t.Errorf("secret %d = %x, want %x", i, s, want)
				}
			}
			if len(deprecated) != 0 {
				t.Errorf("deprecated private_key is set: %d bytes", len(deprecated))
			}
			if got := fa.Calls(); len(got) != 1 || got[0] != `Request validator-0 "" 3` {
				t.Errorf("allocator calls %q", got)
			}
		})
	}
}

func TestLegacyZeroKeysMeansOne(t *testing.T) {
	for _, c := range legacyClients {
		t.Run(c.pkg, func(t *testing.T) {
			fa := &fakeAllocator{request: returnKeys}
			conn := serve(t, Config{Allocator: fa, Keys: &fakeLister{}, Legacy: true})
			secrets, _, err := c.call(testCtx(t), conn, "validator-0", 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(secrets) != 1 {
				t.Errorf("%d secrets, want 1", len(secrets))
			}
			if got := fa.Calls(); len(got) != 1 || got[0] != `Request validator-0 "" 1` {
				t.Errorf("allocator calls %q, want one request for 1 key", got)
			}
		})
	}
}

func TestLegacyOversizeIsInvalid(t *testing.T) {
	for _, c := range legacyClients {
		t.Run(c.pkg, func(t *testing.T) {
			fa := &fakeAllocator{request: returnKeys}
			conn := serve(t, Config{Allocator: fa, Keys: &fakeLister{}, Legacy: true})
			ctx := testCtx(t)
			// Each of these truncates to a small or negative int if converted blindly.
			for _, n := range []uint64{math.MaxInt + 1, math.MaxUint64, 1<<64 - 1<<32 + 3} {
				_, _, err := c.call(ctx, conn, "validator-0", n)
				st := wantCode(t, err, codes.InvalidArgument)
				if !strings.Contains(st.Message(), fmt.Sprint(n)) {
					t.Errorf("n=%d: message %q does not name the count", n, st.Message())
				}
			}
			if got := fa.Calls(); len(got) != 0 {
				t.Errorf("oversize requests reached the allocator: %q", got)
			}
			// Within int range the count is passed on unchanged; the allocator
			// enforces its own limit.
			fa.request = func(ctx context.Context, pod, uid string, n int) (allocator.Result, error) {
				return allocator.Result{}, fmt.Errorf("%w: %d keys requested, allowed 1 to 1024", allocator.ErrInvalidRequest, n)
			}
			_, _, err := c.call(ctx, conn, "validator-0", 5000)
			wantCode(t, err, codes.InvalidArgument)
			if got := fa.Calls(); len(got) != 1 || got[0] != `Request validator-0 "" 5000` {
				t.Errorf("allocator calls %q", got)
			}
		})
	}
}

func TestLegacyDisabledIsUnimplemented(t *testing.T) {
	fa := &fakeAllocator{request: returnKeys}
	conn := serve(t, Config{Allocator: fa, Keys: &fakeLister{}, Legacy: false})
	ctx := testCtx(t)
	for _, c := range legacyClients {
		_, _, err := c.call(ctx, conn, "validator-0", 1)
		wantCode(t, err, codes.Unimplemented)
	}
	if len(fa.Calls()) != 0 {
		t.Errorf("legacy calls reached the allocator: %q", fa.Calls())
	}
	if _, err := pkmanagerv1.NewKeyServiceClient(conn).RequestKeys(ctx, &pkmanagerv1.RequestKeysRequest{PodName: "validator-0"}); err != nil {
		t.Errorf("v1 with Legacy=false: %v", err)
	}
}

func TestRequestKeys(t *testing.T) {
	fa := &fakeAllocator{request: func(ctx context.Context, pod, uid string, n int) (allocator.Result, error) {
		random := testKey(7)
		random.Origin, random.HasDerivationIndex, random.DerivationIndex = store.OriginRandom, false, 0
		return allocator.Result{Keys: []allocator.Key{testKey(42), random}, Recycled: 1, Minted: 1}, nil
	}}
	conn := serve(t, Config{Allocator: fa, Keys: &fakeLister{}})
	resp, err := pkmanagerv1.NewKeyServiceClient(conn).RequestKeys(testCtx(t),
		&pkmanagerv1.RequestKeysRequest{PodName: "validator-0", PodUid: "uid-1", Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	if got := fa.Calls(); len(got) != 1 || got[0] != `Request validator-0 "uid-1" 2` {
		t.Errorf("allocator calls %q", got)
	}
	if resp.GetRecycled() != 1 || resp.GetMinted() != 1 {
		t.Errorf("recycled %d minted %d, want 1 and 1", resp.GetRecycled(), resp.GetMinted())
	}
	if len(resp.GetKeys()) != 2 {
		t.Fatalf("%d keys, want 2", len(resp.GetKeys()))
	}
	derived, random := resp.GetKeys()[0], resp.GetKeys()[1]
	want := testKey(42)
	if !bytes.Equal(derived.GetPubkey(), want.Pubkey[:]) || !bytes.Equal(derived.GetSecretKey(), want.Secret) {
		t.Errorf("key 0: pubkey %x secret %x", derived.GetPubkey(), derived.GetSecretKey())
	}
	if derived.GetDerivationPath() != "m/12381/3600/42/0/0" || derived.GetOrigin() != "derived" {
		t.Errorf("key 0: path %q origin %q", derived.GetDerivationPath(), derived.GetOrigin())
	}
	if random.GetDerivationPath() != "" || random.GetOrigin() != "random" {
		t.Errorf("key 1: path %q origin %q, want no path and random", random.GetDerivationPath(), random.GetOrigin())
	}
}

func TestRequestKeysZeroMeansOne(t *testing.T) {
	fa := &fakeAllocator{request: returnKeys}
	conn := serve(t, Config{Allocator: fa, Keys: &fakeLister{}})
	resp, err := pkmanagerv1.NewKeyServiceClient(conn).RequestKeys(testCtx(t), &pkmanagerv1.RequestKeysRequest{PodName: "validator-0"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetKeys()) != 1 {
		t.Errorf("%d keys, want 1", len(resp.GetKeys()))
	}
	if got := fa.Calls(); len(got) != 1 || got[0] != `Request validator-0 "" 1` {
		t.Errorf("allocator calls %q", got)
	}
}

// mappingCases are allocator errors, wrapped as the allocator and store wrap
// them, and the status each must become.
var mappingCases = []struct {
	name    string
	err     error
	code    codes.Code
	outcome string
}{
	{"invalid request", fmt.Errorf("%w: pod name is empty", allocator.ErrInvalidRequest), codes.InvalidArgument, "invalid"},
	{"store invalid argument", fmt.Errorf("claim keys for pod validator-0: %w", store.ErrInvalidArgument), codes.InvalidArgument, "invalid"},
	{"pool exhausted", fmt.Errorf("%w: 0 available, 3 requested (pod validator-0 holds 1)", allocator.ErrPoolExhausted), codes.ResourceExhausted, "exhausted"},
	{"pod uid mismatch", fmt.Errorf("claim keys for pod validator-0: %w", allocator.ErrPodUIDMismatch), codes.FailedPrecondition, "conflict"},
	{"not found", fmt.Errorf("retire key 0xa0: %w", store.ErrNotFound), codes.NotFound, "not_found"},
	{"canceled", fmt.Errorf("wait for pod validator-0: %w", context.Canceled), codes.Canceled, "canceled"},
	{"deadline", fmt.Errorf("wait for pod validator-0: %w", context.DeadlineExceeded), codes.DeadlineExceeded, "canceled"},
	{"other", fmt.Errorf("claim keys for pod validator-0: %w", errors.New("bolt: disk I/O error")), codes.Internal, "error"},
}

func TestErrorMapping(t *testing.T) {
	for _, tc := range mappingCases {
		t.Run(tc.name, func(t *testing.T) {
			logger, logs := testLogger()
			fa := &fakeAllocator{
				request: func(context.Context, string, string, int) (allocator.Result, error) {
					return allocator.Result{}, tc.err
				},
				release: func(context.Context, string, string) (allocator.ReleaseResult, error) {
					return allocator.ReleaseResult{}, tc.err
				},
				retire: func(context.Context, store.Pubkey, string) error { return tc.err },
			}
			conn := serve(t, Config{Allocator: fa, Keys: &fakeLister{err: tc.err}, Logger: logger, Legacy: true})
			ctx := testCtx(t)
			client := pkmanagerv1.NewKeyServiceClient(conn)

			wantMsg := tc.err.Error()
			if tc.code == codes.Internal {
				wantMsg = InternalMessage
			}
			check := func(method string, err error) {
				t.Helper()
				st, ok := status.FromError(err)
				if !ok || st.Code() != tc.code || st.Message() != wantMsg {
					t.Errorf("%s: got %v, want %s %q", method, err, tc.code, wantMsg)
				}
			}
			_, err := client.RequestKeys(ctx, &pkmanagerv1.RequestKeysRequest{PodName: "validator-0"})
			check("RequestKeys", err)
			_, err = client.ReleaseKeys(ctx, &pkmanagerv1.ReleaseKeysRequest{PodName: "validator-0"})
			check("ReleaseKeys", err)
			_, err = client.RetireKey(ctx, &pkmanagerv1.RetireKeyRequest{Pubkey: make([]byte, 48), Reason: "slashed"})
			check("RetireKey", err)
			for _, c := range legacyClients {
				_, _, err := c.call(ctx, conn, "validator-0", 1)
				check(c.pkg, err)
			}
			// A failing walk of the store surfaces on the stream.
			stream, err := client.ListKeys(ctx, &pkmanagerv1.ListKeysRequest{})
			if err != nil {
				t.Fatal(err)
			}
			_, err = stream.Recv()
			st, _ := status.FromError(err)
			if st.Code() != tc.code {
				t.Errorf("ListKeys: got %v, want %s", err, tc.code)
			}

			if tc.code == codes.Internal {
				// The full error is in the server log, with the method.
				if log := logs.String(); !strings.Contains(log, "bolt: disk I/O error") || !strings.Contains(log, "method=RequestKeys") {
					t.Errorf("server log lacks the internal error:\n%s", log)
				}
			}
		})
	}
}

func TestInternalErrorHidesSecret(t *testing.T) {
	key := testKey(3)
	// A buggy dependency that puts a secret into its error.
	leaky := fmt.Errorf("open secret of key %s: bad padding in %x (%s)", key.Pubkey, key.Secret, key.Secret)
	logger, logs := testLogger()
	fa := &fakeAllocator{request: func(context.Context, string, string, int) (allocator.Result, error) { return allocator.Result{}, leaky }}
	conn := serve(t, Config{Allocator: fa, Keys: &fakeLister{}, Logger: logger, Legacy: true})
	ctx := testCtx(t)

	_, err := pkmanagerv1.NewKeyServiceClient(conn).RequestKeys(ctx, &pkmanagerv1.RequestKeysRequest{PodName: "validator-0"})
	errs := []error{err}
	for _, c := range legacyClients {
		_, _, err := c.call(ctx, conn, "validator-0", 1)
		errs = append(errs, err)
	}
	for _, err := range errs {
		st := wantCode(t, err, codes.Internal)
		if st.Message() != InternalMessage {
			t.Errorf("message %q, want %q", st.Message(), InternalMessage)
		}
		if s := err.Error(); strings.Contains(s, hex.EncodeToString(key.Secret)) || strings.Contains(s, string(key.Secret)) ||
			strings.Contains(s, "bad padding") {
			t.Errorf("client error carries the internal error: %q", s)
		}
		if len(st.Details()) != 0 {
			t.Errorf("status has details: %v", st.Details())
		}
	}
	if !strings.Contains(logs.String(), "bad padding") {
		t.Errorf("the full error is not in the server log:\n%s", logs.String())
	}
}

func TestNoSecretsInLogs(t *testing.T) {
	logger, logs := testLogger()
	fa := &fakeAllocator{request: func(ctx context.Context, pod, uid string, n int) (allocator.Result, error) {
		if pod == "validator-9" {
			return allocator.Result{}, fmt.Errorf("%w: 0 available, %d requested", allocator.ErrPoolExhausted, n)
		}
		return returnKeys(ctx, pod, uid, n)
	}}
	conn := serve(t, Config{Allocator: fa, Keys: &fakeLister{}, Logger: logger, Legacy: true})
	ctx := testCtx(t)
	client := pkmanagerv1.NewKeyServiceClient(conn)
	if _, err := client.RequestKeys(ctx, &pkmanagerv1.RequestKeysRequest{PodName: "validator-0", Count: 4}); err != nil {
		t.Fatal(err)
	}
	for _, c := range legacyClients {
		if _, _, err := c.call(ctx, conn, "validator-0", 4); err != nil {
			t.Fatal(err)
		}
	}
	_, err := client.RequestKeys(ctx, &pkmanagerv1.RequestKeysRequest{PodName: "validator-9", Count: 4})
	wantCode(t, err, codes.ResourceExhausted)

	log := logs.String()
	if !strings.Contains(log, "validator-9") {
		t.Fatalf("the rejected request was not logged, so the check below proves nothing:\n%s", log)
	}
	for i := range 4 {
		s := testKey(i).Secret
		for _, enc := range []string{hex.EncodeToString(s), base64.StdEncoding.EncodeToString(s), string(s), fmt.Sprint(s)} {
			if strings.Contains(log, enc) {
				t.Fatalf("secret %d in the log:\n%s", i, log)
			}
		}
	}
}

func TestReleaseKeys(t *testing.T) {
	until := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	fa := &fakeAllocator{release: func(ctx context.Context, pod, uid string) (allocator.ReleaseResult, error) {
		if pod == "validator-0" {
			return allocator.ReleaseResult{}, nil
		}
		return allocator.ReleaseResult{Released: 4, CoolingUntil: until}, nil
	}}
	conn := serve(t, Config{Allocator: fa, Keys: &fakeLister{}})
	client := pkmanagerv1.NewKeyServiceClient(conn)
	ctx := testCtx(t)

	resp, err := client.ReleaseKeys(ctx, &pkmanagerv1.ReleaseKeysRequest{PodName: "validator-0"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetReleased() != 0 || resp.GetCoolingUntil() != nil || resp.GetMessage() != "pod validator-0 held no keys; nothing released" {
		t.Errorf("no-op release: %v", resp)
	}

	resp, err = client.ReleaseKeys(ctx, &pkmanagerv1.ReleaseKeysRequest{PodName: "validator-1", PodUid: "uid-1"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetReleased() != 4 || !resp.GetCoolingUntil().AsTime().Equal(until) {
		t.Errorf("release: %v", resp)
	}
	if msg := resp.GetMessage(); !strings.Contains(msg, "4 keys") || !strings.Contains(msg, "validator-1") || !strings.Contains(msg, "2030-01-02T03:04:05Z") {
		t.Errorf("message %q", msg)
	}
	if got := fa.Calls(); len(got) != 2 || got[1] != `Release validator-1 "uid-1"` {
		t.Errorf("allocator calls %q", got)
	}
}

func TestRetireKey(t *testing.T) {
	want := testKey(5).Pubkey
	fa := &fakeAllocator{retire: func(ctx context.Context, pk store.Pubkey, reason string) error {
		if pk != want {
			return fmt.Errorf("retire key %s: %w", pk, store.ErrNotFound)
		}
		return nil
	}}
	conn := serve(t, Config{Allocator: fa, Keys: &fakeLister{}})
	client := pkmanagerv1.NewKeyServiceClient(conn)
	ctx := testCtx(t)

	for _, n := range []int{0, 47, 49, 96} {
		_, err := client.RetireKey(ctx, &pkmanagerv1.RetireKeyRequest{Pubkey: make([]byte, n), Reason: "slashed"})
		st := wantCode(t, err, codes.InvalidArgument)
		if !strings.Contains(st.Message(), fmt.Sprintf("%d bytes, want 48", n)) {
			t.Errorf("%d bytes: message %q", n, st.Message())
		}
	}
	if len(fa.Calls()) != 0 {
		t.Fatalf("bad pubkeys reached the allocator: %q", fa.Calls())
	}
	if _, err := client.RetireKey(ctx, &pkmanagerv1.RetireKeyRequest{Pubkey: want[:], Reason: "slashed"}); err != nil {
		t.Fatal(err)
	}
	if got := fa.Calls(); len(got) != 1 || got[0] != fmt.Sprintf("Retire %s %q", want, "slashed") {
		t.Errorf("allocator calls %q", got)
	}
	_, err := client.RetireKey(ctx, &pkmanagerv1.RetireKeyRequest{Pubkey: make([]byte, 48), Reason: "slashed"})
	wantCode(t, err, codes.NotFound)
}

func TestKeyCount(t *testing.T) {
	for _, tc := range []struct {
		in   uint64
		want int
		ok   bool
	}{
		{0, 1, true}, {1, 1, true}, {1024, 1024, true}, {math.MaxInt, math.MaxInt, true},
		{math.MaxInt + 1, 0, false}, {math.MaxUint64, 0, false},
	} {
		got, err := keyCount(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("keyCount(%d) = %d, %v", tc.in, got, err)
		}
		if err != nil && !errors.Is(err, allocator.ErrInvalidRequest) {
			t.Errorf("keyCount(%d): %v does not wrap ErrInvalidRequest", tc.in, err)
		}
	}
}

func TestDerivationPath(t *testing.T) {
	for i, want := range map[uint32]string{0: "m/12381/3600/0/0/0", 17: "m/12381/3600/17/0/0", math.MaxUint32: "m/12381/3600/4294967295/0/0"} {
		if got := derivationPath(i); got != want {
			t.Errorf("derivationPath(%d) = %q, want %q", i, got, want)
		}
	}
}
