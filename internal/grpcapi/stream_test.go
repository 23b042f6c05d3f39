package grpcapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	pkmanagerv1 "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/metrics"
	"github.com/pkmanager/pkmanager/internal/store"
)

// storedKey is key i as a store listing holds it, with a sealed secret and
// deposit data that a listing must not or need not show.
func storedKey(i int) store.Key {
	k := testKey(i)
	states := store.States
	sk := store.Key{
		Pubkey:             k.Pubkey,
		State:              states[i%len(states)],
		Origin:             store.OriginDerived,
		DerivationIndex:    uint32(i),
		HasDerivationIndex: true,
		LastPod:            fmt.Sprintf("validator-%d", i%5),
		Since:              time.Unix(1_700_000_000+int64(i), 0).UTC(),
		CreatedAt:          time.Unix(1_600_000_000, 0).UTC(),
		SealedSecret:       append([]byte("sealed:"), k.Secret...),
		Deposit: &store.DepositData{
			AmountGwei:  32_000_000_000,
			NetworkName: "hoodi",
			ForkVersion: [4]byte{0x10, 0, 0, 0x09},
		},
	}
	sk.Deposit.WithdrawalCredentials[0] = 0x01
	sk.Deposit.Signature[0], sk.Deposit.Signature[95] = 0xb0, byte(i)
	sk.Deposit.DepositMessageRoot[31] = byte(i)
	sk.Deposit.DepositDataRoot[0] = byte(i >> 8)
	switch sk.State {
	case store.StateAssigned:
		sk.Pod, sk.PodUID = sk.LastPod, "uid-"+sk.LastPod
	case store.StateCoolingDown:
		sk.CoolingUntil = sk.Since.Add(768 * time.Second)
	case store.StateRetired:
		sk.RetiredReason = "slashed"
	}
	return sk
}

func storedKeys(n int) []store.Key {
	keys := make([]store.Key, n)
	for i := range keys {
		keys[i] = storedKey(i)
	}
	return keys
}

// recvAll reads a stream to its end.
func recvAll[T any](t *testing.T, stream grpc.ServerStreamingClient[T]) ([]*T, error) {
	t.Helper()
	var out []*T
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, m)
	}
}

func TestListKeysStreamsAllKeys(t *testing.T) {
	const n = 10_000
	keys := storedKeys(n)
	for i := range keys {
		// Long enough that the whole listing is far beyond one 4 MB message.
		keys[i].RetiredReason = strings.Repeat("r", 500)
	}
	fl := &fakeLister{keys: keys}
	conn := serve(t, Config{Allocator: &fakeAllocator{}, Keys: fl})
	stream, err := pkmanagerv1.NewKeyServiceClient(conn).ListKeys(testCtx(t), &pkmanagerv1.ListKeysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := recvAll(t, stream)
	if err != nil {
		t.Fatalf("after %d keys: %v", len(got), err)
	}
	if len(got) != n {
		t.Fatalf("%d keys, want %d", len(got), n)
	}
	total := 0
	for i, info := range got {
		total += proto.Size(info)
		if !bytes.Equal(info.GetPubkey(), keys[i].Pubkey[:]) {
			t.Fatalf("key %d: pubkey %x, want %x (order or content lost)", i, info.GetPubkey(), keys[i].Pubkey)
		}
	}
	if total <= 4<<20 {
		t.Errorf("streamed only %d bytes; the test must exceed the 4 MB message limit", total)
	}
	// Read page by page (the store holds nothing while a page is sent).
	opts := fl.Opts()
	if want := n/store.DefaultPage + 1; len(opts) != want {
		t.Errorf("%d pages read, want %d", len(opts), want)
	}
	for _, o := range opts {
		if o.WithDeposit || len(o.States) != 0 || o.Pod != "" || o.Limit != store.DefaultPage {
			t.Errorf("list options %+v", o)
		}
	}
}

func TestListKeysFields(t *testing.T) {
	keys := storedKeys(5) // one key in each state
	conn := serve(t, Config{Allocator: &fakeAllocator{}, Keys: &fakeLister{keys: keys}})
	stream, err := pkmanagerv1.NewKeyServiceClient(conn).ListKeys(testCtx(t), &pkmanagerv1.ListKeysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := recvAll(t, stream)
	if err != nil || len(got) != len(keys) {
		t.Fatalf("%d keys, %v", len(got), err)
	}
	for i, info := range got {
		k := keys[i]
		if info.GetState() != string(k.State) || info.GetPodName() != k.Pod || info.GetPodUid() != k.PodUID ||
			info.GetLastPodName() != k.LastPod || info.GetRetiredReason() != k.RetiredReason ||
			info.GetOrigin() != "derived" || info.GetDerivationPath() != fmt.Sprintf("m/12381/3600/%d/0/0", i) ||
			!info.GetSince().AsTime().Equal(k.Since) {
			t.Errorf("key %d (%s): %v", i, k.State, info)
		}
		if k.CoolingUntil.IsZero() != (info.GetCoolingUntil() == nil) ||
			(!k.CoolingUntil.IsZero() && !info.GetCoolingUntil().AsTime().Equal(k.CoolingUntil)) {
			t.Errorf("key %d (%s): cooling_until %v, want %v", i, k.State, info.GetCoolingUntil(), k.CoolingUntil)
		}
		wire, err := proto.Marshal(info)
		if err != nil {
			t.Fatal(err)
		}
		if secret := testKey(i).Secret; bytes.Contains(wire, secret) {
			t.Errorf("key %d: listing carries the secret", i)
		}
	}
	if got[2].GetPodName() == "" || got[2].GetPodUid() == "" || got[3].GetCoolingUntil() == nil || got[4].GetRetiredReason() == "" {
		t.Error("test keys do not exercise pod, cooling_until and retired_reason")
	}
}

func TestListKeysFilters(t *testing.T) {
	fl := &fakeLister{keys: storedKeys(50)}
	conn := serve(t, Config{Allocator: &fakeAllocator{}, Keys: fl})
	client := pkmanagerv1.NewKeyServiceClient(conn)
	ctx := testCtx(t)

	stream, err := client.ListKeys(ctx, &pkmanagerv1.ListKeysRequest{States: []string{"assigned", "cooling-down", "assigned"}, PodName: "validator-3"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := recvAll(t, stream)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) == 0 {
		t.Fatal("filter matched nothing; the test keys do not exercise it")
	}
	for _, info := range got {
		if info.GetState() != "assigned" || info.GetPodName() != "validator-3" {
			t.Errorf("filtered listing has %s key of %q", info.GetState(), info.GetPodName())
		}
	}
	opts := fl.Opts()
	if len(opts) != 1 || opts[0].Pod != "validator-3" || len(opts[0].States) != 2 ||
		opts[0].States[0] != store.StateAssigned || opts[0].States[1] != store.StateCoolingDown {
		t.Errorf("list options %+v", opts)
	}

	for _, req := range []*pkmanagerv1.ListKeysRequest{
		{States: []string{"assigned", "leased"}},
		{States: []string{""}},
		{States: []string{"Assigned"}},
	} {
		stream, err := client.ListKeys(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		_, err = recvAll(t, stream)
		st := wantCode(t, err, codes.InvalidArgument)
		for _, s := range store.States {
			if !strings.Contains(st.Message(), string(s)) {
				t.Errorf("states %q: message %q does not list %s", req.GetStates(), st.Message(), s)
			}
		}
	}
	stream, err = client.ListKeys(ctx, &pkmanagerv1.ListKeysRequest{PodName: "Not_A_Pod"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = recvAll(t, stream)
	wantCode(t, err, codes.InvalidArgument)
	if n := len(fl.Opts()); n != 1 {
		t.Errorf("invalid filters reached the store: %d calls", n)
	}
}

func TestListDepositData(t *testing.T) {
	keys := storedKeys(6)
	keys[1].Deposit, keys[4].Deposit = nil, nil // e.g. imported keys
	fl := &fakeLister{keys: keys}
	conn := serve(t, Config{Allocator: &fakeAllocator{}, Keys: fl})
	stream, err := pkmanagerv1.NewKeyServiceClient(conn).ListDepositData(testCtx(t), &pkmanagerv1.ListDepositDataRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := recvAll(t, stream)
	if err != nil {
		t.Fatal(err)
	}
	if opts := fl.Opts(); len(opts) != 1 || !opts[0].WithDeposit {
		t.Errorf("list options %+v, want WithDeposit", opts)
	}
	want := []int{0, 2, 3, 5}
	if len(got) != len(want) {
		t.Fatalf("%d deposits, want %d", len(got), len(want))
	}
	for j, i := range want {
		k, d := keys[i], keys[i].Deposit
		dd := got[j]
		if !bytes.Equal(dd.GetPubkey(), k.Pubkey[:]) || !bytes.Equal(dd.GetWithdrawalCredentials(), d.WithdrawalCredentials[:]) ||
			dd.GetAmount() != d.AmountGwei || !bytes.Equal(dd.GetSignature(), d.Signature[:]) ||
			!bytes.Equal(dd.GetDepositMessageRoot(), d.DepositMessageRoot[:]) || !bytes.Equal(dd.GetDepositDataRoot(), d.DepositDataRoot[:]) ||
			!bytes.Equal(dd.GetForkVersion(), d.ForkVersion[:]) || dd.GetNetworkName() != d.NetworkName {
			t.Errorf("deposit %d (key %d): %v", j, i, dd)
		}
	}
}

func TestMetricsOutcomes(t *testing.T) {
	m := metrics.New(nil, nil)
	var fail atomic.Pointer[error] // the error the fake returns next
	fa := &fakeAllocator{request: func(ctx context.Context, pod, uid string, n int) (allocator.Result, error) {
		if pod == "validator-slow" {
			<-ctx.Done()
			return allocator.Result{}, fmt.Errorf("wait for pod %s: %w", pod, ctx.Err())
		}
		if err := fail.Load(); err != nil {
			return allocator.Result{}, *err
		}
		return returnKeys(ctx, pod, uid, n)
	}}
	conn := serve(t, Config{Allocator: fa, Keys: &fakeLister{keys: storedKeys(3)}, Metrics: m, Legacy: true})
	client := pkmanagerv1.NewKeyServiceClient(conn)
	ctx := testCtx(t)

	count := func(method, outcome string) float64 {
		return testutil.ToFloat64(m.Requests.WithLabelValues("grpc", method, outcome))
	}

	if _, err := client.RequestKeys(ctx, &pkmanagerv1.RequestKeysRequest{PodName: "validator-0"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range mappingCases {
		fail.Store(&tc.err)
		_, err := client.RequestKeys(ctx, &pkmanagerv1.RequestKeysRequest{PodName: "validator-0"})
		wantCode(t, err, tc.code)
	}
	fail.Store(nil)
	wantCounts := map[string]float64{"ok": 1, "invalid": 2, "exhausted": 1, "conflict": 1, "not_found": 1, "canceled": 2, "error": 1}
	for outcome, want := range wantCounts {
		if got := count("RequestKeys", outcome); got != want {
			t.Errorf("RequestKeys %s = %v, want %v", outcome, got, want)
		}
	}

	// Errors made in this package count too, by their original error.
	_, err := client.RetireKey(ctx, &pkmanagerv1.RetireKeyRequest{Pubkey: []byte{1}})
	wantCode(t, err, codes.InvalidArgument)
	if got := count("RetireKey", "invalid"); got != 1 {
		t.Errorf("RetireKey invalid = %v, want 1", got)
	}
	for _, c := range legacyClients {
		if _, _, err := c.call(ctx, conn, "validator-0", 2); err != nil {
			t.Fatal(err)
		}
		_, _, err := c.call(ctx, conn, "validator-0", 1<<63)
		wantCode(t, err, codes.InvalidArgument)
	}
	if ok, inv := count("legacy.Request", "ok"), count("legacy.Request", "invalid"); ok != 2 || inv != 2 {
		t.Errorf("legacy.Request ok %v invalid %v, want 2 and 2", ok, inv)
	}
	stream, err := client.ListKeys(ctx, &pkmanagerv1.ListKeysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := recvAll(t, stream); err != nil {
		t.Fatal(err)
	}
	stream, err = client.ListKeys(ctx, &pkmanagerv1.ListKeysRequest{States: []string{"lost"}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = recvAll(t, stream)
	wantCode(t, err, codes.InvalidArgument)
	// The stream's end reaches the client before the handler returns.
	waitFor(t, func() bool { return count("ListKeys", "ok") == 1 && count("ListKeys", "invalid") == 1 },
		"ListKeys ok and invalid counted once each")

	// A client that gives up: the server counts it as canceled, not as an error.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = client.RequestKeys(short, &pkmanagerv1.RequestKeysRequest{PodName: "validator-slow"})
	wantCode(t, err, codes.DeadlineExceeded)
	waitFor(t, func() bool { return count("RequestKeys", "canceled") == 3 }, "the abandoned request counted as canceled")
	if got := count("RequestKeys", "error"); got != 1 {
		t.Errorf("RequestKeys error = %v, want 1", got)
	}
	if n := testutil.CollectAndCount(m.RequestDuration, "pkmanager_request_duration_seconds"); n != 4 {
		t.Errorf("%d duration series, want 4 (RequestKeys, RetireKey, legacy.Request, ListKeys)", n)
	}
}

// waitFor polls cond for a few seconds.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestListKeysClientGoesAway(t *testing.T) {
	keys := storedKeys(10_000)
	for i := range keys {
		keys[i].RetiredReason = strings.Repeat("r", 500) // more than the flow-control windows hold
	}
	m := metrics.New(nil, nil)
	logger, logs := testLogger()
	conn := serve(t, Config{Allocator: &fakeAllocator{}, Keys: &fakeLister{keys: keys}, Metrics: m, Logger: logger})
	ctx, cancel := context.WithCancel(testCtx(t))
	stream, err := pkmanagerv1.NewKeyServiceClient(conn).ListKeys(ctx, &pkmanagerv1.ListKeysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	count := func(outcome string) float64 {
		return testutil.ToFloat64(m.Requests.WithLabelValues("grpc", "ListKeys", outcome))
	}
	waitFor(t, func() bool { return count("canceled")+count("error")+count("ok") > 0 }, "the abandoned stream recorded")
	if c, e, ok := count("canceled"), count("error"), count("ok"); c != 1 || e != 0 || ok != 0 {
		t.Errorf("abandoned stream: canceled %v error %v ok %v, want only canceled", c, e, ok)
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("a client going away was logged as an error:\n%s", logs.String())
	}
}
