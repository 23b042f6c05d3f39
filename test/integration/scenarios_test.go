package integration

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	ethcluster "github.com/pkmanager/pkmanager/api/legacy/ethcluster"
	prysmcluster "github.com/pkmanager/pkmanager/api/legacy/prysmcluster"
	pb "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/keys"
	"github.com/pkmanager/pkmanager/internal/keystore"
)

// keystoreDir reads OUT/keystores + OUT/secrets back: pubkey (0x hex) ->
// secret, checking file modes and that every secret matches its pubkey.
func keystoreDir(t *testing.T, out string) map[string][]byte {
	t.Helper()
	for _, d := range []string{"keystores", "secrets"} {
		st, err := os.Stat(filepath.Join(out, d))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o700 {
			t.Fatalf("%s has mode %v, want 0700", d, st.Mode().Perm())
		}
	}
	files, err := filepath.Glob(filepath.Join(out, "keystores", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]byte{}
	for _, f := range files {
		for _, p := range []string{f, secretFile(out, f)} {
			st, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Fatalf("%s has mode %v, want 0600", p, st.Mode().Perm())
			}
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ks, err := keystore.Parse(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		pw, err := os.ReadFile(secretFile(out, f))
		if err != nil {
			t.Fatal(err)
		}
		secret, err := ks.Decrypt(string(pw))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		sk, err := keys.SecretKeyFromBytes(secret)
		if err != nil {
			t.Fatal(err)
		}
		pub, ok := ks.Pubkey()
		if !ok || sk.PublicKey() != pub {
			t.Fatalf("%s: secret does not match the keystore's pubkey", f)
		}
		got[fmt.Sprintf("%#x", pub)] = secret
	}
	return got
}

func secretFile(out, keystorePath string) string {
	return filepath.Join(out, "secrets", strings.TrimSuffix(filepath.Base(keystorePath), ".json")+".txt")
}

func request(t *testing.T, s *server, pod string, n int, out string, extra ...string) (string, map[string][]byte) {
	t.Helper()
	args := append([]string{"request", "--server", s.grpcAddr, "--pod-name", pod, "--keys", fmt.Sprint(n), "--out", out, "--insecure-kdf"}, extra...)
	msg := mustRun(t, args...)
	return msg, keystoreDir(t, out)
}

func sortedKeys(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func equalStrings(a, b []string) bool {
	a, b = append([]string(nil), a...), append([]string(nil), b...)
	sort.Strings(a)
	sort.Strings(b)
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// The walkthrough of the README: request, repeat, another pod, restart,
// release, reuse after a zero delay, deposit data export, no plaintext
// secret in the store file.
func TestRequestRestartReleaseReuse(t *testing.T) {
	data, work := t.TempDir(), t.TempDir()
	s := startServer(t, data, "--reuse-delay", "0s")

	msg, keys0 := request(t, s, "validator-0", 4, filepath.Join(work, "v0"))
	if len(keys0) != 4 || !strings.Contains(msg, "minted 4") {
		t.Fatalf("first request: %d keystores; %s", len(keys0), msg)
	}
	msg, again := request(t, s, "validator-0", 4, filepath.Join(work, "v0"))
	if !equalStrings(sortedKeys(again), sortedKeys(keys0)) || !strings.Contains(msg, "minted 0") || !strings.Contains(msg, "4 kept") {
		t.Fatalf("repeat request changed the keys: %s", msg)
	}
	_, keys1 := request(t, s, "validator-1", 3, filepath.Join(work, "v1"))
	for pk := range keys1 {
		if _, ok := keys0[pk]; ok {
			t.Fatal("two pods got the same key")
		}
	}
	before := s.assignments(t)
	if !equalStrings(before["validator-0"], sortedKeys(keys0)) || !equalStrings(before["validator-1"], sortedKeys(keys1)) {
		t.Fatalf("/assignments does not match what the pods received: %v", before)
	}

	// Restart on the same data dir: nothing lost.
	s.stop()
	s = startServer(t, data, "--reuse-delay", "0s")
	after := s.assignments(t)
	if len(after) != len(before) || !equalStrings(after["validator-0"], before["validator-0"]) || !equalStrings(after["validator-1"], before["validator-1"]) {
		t.Fatalf("assignments changed across restart:\nbefore %v\nafter  %v", before, after)
	}
	msg, again = request(t, s, "validator-0", 4, filepath.Join(work, "v0-after-restart"))
	if !equalStrings(sortedKeys(again), sortedKeys(keys0)) || !strings.Contains(msg, "minted 0") {
		t.Fatalf("after restart the pod got other keys: %s", msg)
	}
	for pk, secret := range again {
		if !bytes.Equal(secret, keys0[pk]) {
			t.Fatal("after restart a key came back with another secret")
		}
	}

	// Release and reuse after a zero delay.
	out := mustRun(t, "release", "--server", s.grpcAddr, "--pod-name", "validator-0")
	if !strings.Contains(out, "released 4 keys") {
		t.Fatalf("release: %s", out)
	}
	out = mustRun(t, "release", "--server", s.grpcAddr, "--pod-name", "validator-0")
	if !strings.Contains(out, "held no keys") {
		t.Fatalf("second release: %s", out)
	}
	msg, keys2 := request(t, s, "validator-2", 5, filepath.Join(work, "v2"))
	if !strings.Contains(msg, "recycled 4, minted 1") {
		t.Fatalf("reuse: %s", msg)
	}
	for pk := range keys0 {
		if _, ok := keys2[pk]; !ok {
			t.Fatalf("released key %s not recycled", pk)
		}
	}
	if a := s.assignments(t); len(a["validator-0"]) != 0 || len(a["validator-2"]) != 5 {
		t.Fatalf("assignments after reuse: %v", a)
	}

	// Every deposit is on chain (dev mode deposits them): an export for a
	// deposit tool has nothing to carry.
	ddFile := filepath.Join(work, "deposit_data.json")
	if out := mustRun(t, "deposit-data", "--server", s.grpcAddr, "--out", ddFile); !strings.Contains(out, "no deposit to export") ||
		!strings.Contains(out, "left out 8 whose deposit is already on chain") {
		t.Fatalf("deposit-data with every deposit on chain: %s", out)
	}
	if _, err := os.Stat(ddFile); err == nil {
		t.Fatal("an empty export wrote its file")
	}
	// Deposit data of every minted key (4 + 3 + 1), valid per the spec.
	mustRun(t, "deposit-data", "--all", "--server", s.grpcAddr, "--out", ddFile)
	raw, err := os.ReadFile(ddFile)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := deposit.ParseCLI(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 8 {
		t.Fatalf("%d deposit entries, want 8", len(entries))
	}
	all := map[string]bool{}
	for _, m := range []map[string][]byte{keys0, keys1, keys2} {
		for pk := range m {
			all[pk] = true
		}
	}
	for _, e := range entries {
		if !all["0x"+e.Pubkey] {
			t.Fatalf("deposit data for unknown key %s", e.Pubkey)
		}
		if err := e.Verify(keys.Verify); err != nil {
			t.Fatal(err)
		}
		if e.NetworkName != "devnet" || e.ForkVersion != "10000038" || !strings.HasPrefix(e.WithdrawalCredentials, "01") {
			t.Fatalf("unexpected deposit entry %+v", e)
		}
	}

	// The store file never holds a plaintext secret.
	s.stop()
	db, err := os.ReadFile(filepath.Join(data, "pkmanager.db"))
	if err != nil {
		t.Fatal(err)
	}
	pubFound := 0
	for _, m := range []map[string][]byte{keys0, keys1, keys2} {
		for pk, secret := range m {
			if bytes.Contains(db, secret) || bytes.Contains(db, []byte(hex.EncodeToString(secret))) {
				t.Fatalf("plaintext secret of %s found in the store file", pk)
			}
			pub, _ := hex.DecodeString(strings.TrimPrefix(pk, "0x"))
			if bytes.Contains(db, pub) {
				pubFound++
			}
		}
	}
	if pubFound == 0 {
		t.Fatal("no public key found in the store file either: the check reads the wrong file")
	}
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Prysm's cluster-pk-manager clients keep working: the legacy service under
// both package names, called with clients generated from its proto.
func TestLegacyProtocol(t *testing.T) {
	s := startServer(t, t.TempDir())
	conn := dial(t, s.grpcAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	r1, err := prysmcluster.NewPrivateKeyServiceClient(conn).Request(ctx, &prysmcluster.PrivateKeyRequest{PodName: "legacy-0", NumberOfKeys: 3})
	if err != nil {
		t.Fatal(err)
	}
	secrets := r1.GetPrivateKeys().GetPrivateKeys()
	if len(secrets) != 3 || len(r1.GetPrivateKey()) != 0 {
		t.Fatalf("legacy reply: %d keys, deprecated field %d bytes", len(secrets), len(r1.GetPrivateKey()))
	}
	var pubs []string
	for _, sec := range secrets {
		sk, err := keys.SecretKeyFromBytes(sec)
		if err != nil {
			t.Fatal(err)
		}
		pubs = append(pubs, fmt.Sprintf("%#x", sk.PublicKey()))
	}
	if a := s.assignments(t); !equalStrings(a["legacy-0"], pubs) {
		t.Fatalf("/assignments %v, legacy reply %v", a["legacy-0"], pubs)
	}
	// The older package name serves the same service and the same keys.
	r2, err := ethcluster.NewPrivateKeyServiceClient(conn).Request(ctx, &ethcluster.PrivateKeyRequest{PodName: "legacy-0", NumberOfKeys: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(r2.GetPrivateKeys().GetPrivateKeys()) != 3 {
		t.Fatal("ethereum.cluster reply differs")
	}
	for i, sec := range r2.GetPrivateKeys().GetPrivateKeys() {
		found := false
		for _, prev := range secrets {
			found = found || bytes.Equal(prev, sec)
		}
		if !found {
			t.Fatalf("key %d differs between the two package names", i)
		}
	}
	// number_of_keys 0 means 1.
	r3, err := prysmcluster.NewPrivateKeyServiceClient(conn).Request(ctx, &prysmcluster.PrivateKeyRequest{PodName: "legacy-1"})
	if err != nil || len(r3.GetPrivateKeys().GetPrivateKeys()) != 1 {
		t.Fatalf("n=0: %v %d", err, len(r3.GetPrivateKeys().GetPrivateKeys()))
	}
	// Health checking protocol on the same port.
	h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", h.GetStatus(), err)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, body := s.get(t, p); code != 200 {
			t.Fatalf("%s: %d %s", p, code, body)
		}
	}
	// Without --beacon-url, reuse has no chain evidence: /readyz and a
	// metric say so (the server is ready all the same).
	if _, body := s.get(t, "/readyz"); !strings.Contains(body, "note: no beacon node (--beacon-url)") {
		t.Errorf("/readyz without a beacon node: %q, want a note that reuse has no chain evidence", body)
	}
	if _, body := s.get(t, "/metrics"); !strings.Contains(body, "\npkmanager_reuse_chain_evidence 0\n") {
		t.Errorf("/metrics: no pkmanager_reuse_chain_evidence 0")
	}
}

// 200 concurrent requests through v1 and the legacy protocol, 4 duplicates
// per pod, then 200 more mixed with releases: a key is never in two pods.
func TestConcurrentMixedRequests(t *testing.T) {
	s := startServer(t, t.TempDir(), "--reuse-delay", "0s")
	conn := dial(t, s.grpcAddr)
	v1 := pb.NewKeyServiceClient(conn)
	legacy := prysmcluster.NewPrivateKeyServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	ask := func(i int, pod string, n int) ([]string, error) {
		if i%2 == 0 {
			r, err := v1.RequestKeys(ctx, &pb.RequestKeysRequest{PodName: pod, Count: uint32(n)})
			if err != nil {
				return nil, err
			}
			var out []string
			for _, k := range r.GetKeys() {
				out = append(out, fmt.Sprintf("%#x", k.GetPubkey()))
			}
			return out, nil
		}
		r, err := legacy.Request(ctx, &prysmcluster.PrivateKeyRequest{PodName: pod, NumberOfKeys: uint64(n)})
		if err != nil {
			return nil, err
		}
		var out []string
		for _, sec := range r.GetPrivateKeys().GetPrivateKeys() {
			sk, err := keys.SecretKeyFromBytes(sec)
			if err != nil {
				return nil, err
			}
			out = append(out, fmt.Sprintf("%#x", sk.PublicKey()))
		}
		return out, nil
	}

	// Phase 1: 200 requests, 50 pods x 4 duplicates, all at once.
	const pods = 50
	var mu sync.Mutex
	answers := map[string][][]string{}
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pod := fmt.Sprintf("pod-%d", i%pods)
			got, err := ask(i, pod, 1+(i%pods)%4)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			answers[pod] = append(answers[pod], got)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	owner := map[string]string{}
	for pod, list := range answers {
		for _, a := range list[1:] {
			if !equalStrings(a, list[0]) {
				t.Fatalf("pod %s: duplicate requests got different sets", pod)
			}
		}
		for _, pk := range list[0] {
			if o, ok := owner[pk]; ok {
				t.Fatalf("key %s handed to %s and %s", pk, o, pod)
			}
			owner[pk] = pod
		}
	}
	checkAssignmentsConsistent(t, s)

	// Phase 2: 200 more operations with releases (zero reuse delay), so keys
	// move between pods while requests are in flight.
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pod := fmt.Sprintf("pod-%d", (i*7)%pods)
			if i%4 == 0 {
				if _, err := v1.ReleaseKeys(ctx, &pb.ReleaseKeysRequest{PodName: pod}); err != nil {
					t.Error(err)
				}
				return
			}
			if _, err := ask(i, pod, 1+i%3); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	assigned := checkAssignmentsConsistent(t, s)
	// Each pod's current set, asked again, is exactly what the store says.
	for pod, want := range assigned {
		got, err := ask(0, pod, 1)
		if err != nil {
			t.Fatal(err)
		}
		if !equalStrings(got, want) {
			t.Fatalf("pod %s: request returned %v, store assigns %v", pod, got, want)
		}
	}
}

// checkAssignmentsConsistent asserts no key is in two pods on /assignments,
// and that the key counts add up; it returns pod -> keys.
func checkAssignmentsConsistent(t *testing.T, s *server) map[string][]string {
	t.Helper()
	a := s.assignments(t)
	seen := map[string]string{}
	total := 0
	for pod, list := range a {
		for _, pk := range list {
			if o, ok := seen[pk]; ok {
				t.Fatalf("key %s assigned to %s and %s", pk, o, pod)
			}
			seen[pk] = pod
			total++
		}
	}
	if c := s.counts(t); c["assigned"] != total {
		t.Fatalf("counts say %d assigned, page lists %d", c["assigned"], total)
	}
	return a
}

// Bad input gets a clear error on every interface and changes nothing.
func TestBadInputChangesNothing(t *testing.T) {
	s := startServer(t, t.TempDir(), "--max-keys-per-request", "8")
	work := t.TempDir()
	request(t, s, "validator-0", 2, filepath.Join(work, "ok"))
	before, beforeCounts := s.assignments(t), s.counts(t)
	_, metricsBefore := s.get(t, "/metrics")

	conn := dial(t, s.grpcAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v1 := pb.NewKeyServiceClient(conn)
	legacy := prysmcluster.NewPrivateKeyServiceClient(conn)
	for _, c := range []struct {
		pod string
		n   uint32
	}{{"", 1}, {"Validator-0", 1}, {"validator_0", 1}, {strings.Repeat("a", 254), 1}, {"validator-9", 9}, {"validator-0", 9}} {
		_, err := v1.RequestKeys(ctx, &pb.RequestKeysRequest{PodName: c.pod, Count: c.n})
		if status.Code(err) != codes.InvalidArgument || status.Convert(err).Message() == "" {
			t.Errorf("v1 RequestKeys(%q, %d): %v, want InvalidArgument with a reason", c.pod, c.n, err)
		}
	}
	for _, n := range []uint64{9, 1 << 40, ^uint64(0)} {
		_, err := legacy.Request(ctx, &prysmcluster.PrivateKeyRequest{PodName: "validator-5", NumberOfKeys: n})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("legacy Request(n=%d): %v", n, err)
		}
	}
	if _, err := legacy.Request(ctx, &prysmcluster.PrivateKeyRequest{PodName: "UPPER"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("legacy invalid pod: %v", err)
	}
	if _, err := v1.RetireKey(ctx, &pb.RetireKeyRequest{Pubkey: []byte{1, 2}, Reason: "x"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("retire short pubkey: %v", err)
	}
	// A pod UID must be a Kubernetes UID (or none): 08c6756 stored 100 KB.
	// validator-0 holds keys: a release with a bad UID must not free them.
	bigUID := strings.Repeat("u", 100<<10)
	for _, uid := range []string{bigUID, "uid-a", "0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0"} {
		_, err := v1.RequestKeys(ctx, &pb.RequestKeysRequest{PodName: "validator-6", PodUid: uid, Count: 1})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "pod UID") {
			t.Errorf("v1 RequestKeys with pod UID %.20q: %.300v, want InvalidArgument naming the pod UID", uid, err)
		}
		_, err = v1.ReleaseKeys(ctx, &pb.ReleaseKeysRequest{PodName: "validator-0", PodUid: uid})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "pod UID") {
			t.Errorf("v1 ReleaseKeys with pod UID %.20q: %.300v, want InvalidArgument naming the pod UID", uid, err)
		}
	}
	for _, req := range []struct{ path, body string }{
		{"/api/v1/keys/request", `{"pod_name":"validator-6","count":1,"pod_uid":"` + bigUID + `"}`},
		{"/api/v1/keys/request", `{"pod_name":"validator-6","count":1,"pod_uid":"uid-a"}`},
		{"/api/v1/keys/release", `{"pod_name":"validator-0","pod_uid":"uid-a"}`},
	} {
		resp, err := http.Post("http://"+s.httpAddr+req.path, "application/json", strings.NewReader(req.body))
		if err != nil {
			t.Fatal(err)
		}
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		decErr := json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != 400 || decErr != nil || e.Error.Code != "invalid_argument" || !strings.Contains(e.Error.Message, "pod UID") {
			t.Errorf("HTTP %s %.60s: status %d, error %.300v (%v)", req.path, req.body, resp.StatusCode, e, decErr)
		}
	}
	for _, args := range [][]string{
		{"request", "--server", s.grpcAddr, "--pod-name", "validator-6", "--pod-uid", "uid-a", "--keys", "1", "--out", filepath.Join(work, "baduid")},
		{"release", "--server", s.grpcAddr, "--pod-name", "validator-0", "--pod-uid", "uid-a"},
	} {
		out, err := run(t, args...)
		if err == nil || !strings.Contains(out, "pod UID") {
			t.Errorf("pkmanager %v: exit %v, output %q; want a non-zero exit naming the pod UID", args, err, out)
		}
	}

	for _, body := range []string{`{`, `{"pod_name":"validator-7","count":-1}`, `{"pod_name":"Bad Pod","count":1}`,
		`{"pod_name":"validator-7","count":9}`, `{"pod_name":"validator-7","count":1,"extra":true}`} {
		resp, err := http.Post("http://"+s.httpAddr+"/api/v1/keys/request", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		decErr := json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != 400 || decErr != nil || e.Error.Message == "" {
			t.Errorf("HTTP %s: status %d, error %+v (%v)", body, resp.StatusCode, e, decErr)
		}
	}

	for _, args := range [][]string{
		{"request", "--server", s.grpcAddr, "--pod-name", "Bad_Name", "--keys", "1", "--out", filepath.Join(work, "bad1")},
		{"request", "--server", s.grpcAddr, "--pod-name", "validator-8", "--keys", "9", "--out", filepath.Join(work, "bad2")},
		{"request", "--server", s.grpcAddr, "--pod-name", "validator-8", "--keys", "1"}, // no --out
		{"request", "--server", s.grpcAddr, "--pod-name", "validator-8", "--keys", "1", "--out", filepath.Join(work, "bad3"), "--layout", "prysm"},
		// Rejected before the server is asked: validator-8 must get no keys.
		{"request", "--server", s.grpcAddr, "--pod-name", "validator-8", "--keys", "1", "--workers", "-1", "--out", filepath.Join(work, "bad4")},
	} {
		out, err := run(t, args...)
		if err == nil || !strings.Contains(out, "pkmanager:") {
			t.Errorf("pkmanager %v: exit %v, output %q; want a non-zero exit with a message", args, err, out)
		}
		if _, statErr := os.Stat(args[len(args)-1]); statErr == nil && strings.HasPrefix(args[len(args)-1], work) {
			t.Errorf("a rejected request created %s", args[len(args)-1])
		}
	}

	after, afterCounts := s.assignments(t), s.counts(t)
	if len(after) != len(before) || !equalStrings(after["validator-0"], before["validator-0"]) {
		t.Fatalf("assignments changed: %v -> %v", before, after)
	}
	for k, v := range beforeCounts {
		if afterCounts[k] != v {
			t.Fatalf("counts changed: %v -> %v", beforeCounts, afterCounts)
		}
	}
	_, metricsAfter := s.get(t, "/metrics")
	minted := regexp.MustCompile(`(?m)^pkmanager_keys_minted_total (\S+)$`)
	if m1, m2 := minted.FindStringSubmatch(metricsBefore), minted.FindStringSubmatch(metricsAfter); m1 == nil || m2 == nil || m1[1] != m2[1] {
		t.Fatalf("keys minted changed: %v -> %v", m1, m2)
	}
	if !strings.Contains(metricsAfter, `pkmanager_requests_total{api="grpc",method="RequestKeys",outcome="invalid"}`) {
		t.Fatal("invalid requests not counted in pkmanager_requests_total")
	}
}

// A second server on the same store fails fast with a clear error.
func TestSecondServerOnSameStore(t *testing.T) {
	data := t.TempDir()
	startServer(t, data)
	start := time.Now()
	out, err := run(t, "serve", "--dev", "--data-dir", data, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	if err == nil || !strings.Contains(out, "in use by another pkmanager process") {
		t.Fatalf("second server: %v %s", err, out)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("second server took %s to fail", d)
	}
}

// A store is never opened with another key-encryption key.
func TestWrongKEKRefused(t *testing.T) {
	data := t.TempDir()
	s := startServer(t, data)
	s.stop()
	cmd := exec.Command(binary, "serve", "--dev", "--data-dir", data, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	const otherKEK = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	cmd.Env = append(cleanEnv(), "PKM_KEK="+otherKEK)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another key-encryption key") {
		t.Fatalf("server started with another KEK: %v\n%s", err, out)
	}
	// The error names the KEK id the store needs (the banner's), and says it once.
	m := regexp.MustCompile(`kek: .* \(id ([0-9a-f]+)\)`).FindStringSubmatch(s.banner)
	if m == nil {
		t.Fatalf("no KEK id in the banner:\n%s", s.banner)
	}
	if !strings.Contains(string(out), "it needs the key with id "+m[1]+", the one given") || strings.Count(string(out), "another") != 1 {
		t.Fatalf("the error does not name the KEK id %s the store needs, once:\n%s", m[1], out)
	}
	if strings.Contains(string(out), otherKEK) {
		t.Fatal("the error shows the key-encryption key")
	}
}
