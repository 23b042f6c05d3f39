package integration

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/depositor/deptest"
	"github.com/pkmanager/pkmanager/internal/devchain"
	"github.com/pkmanager/pkmanager/internal/keystore"
	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/bolt"
	"github.com/pkmanager/pkmanager/internal/store/storetest"
	"github.com/pkmanager/pkmanager/test/testbin"
)

// Workload of TestDevServerUnderSIGKILL.
const (
	crashChaos     = 60 * time.Second  // how long the killer runs at least
	crashMinKills  = 10                // and how often it kills at least ...
	crashMaxChaos  = 150 * time.Second // ... unless restarts are this slow
	crashGRPCPods  = 4                 // pods asking through the gRPC API
	crashCLIPods   = 2                 // pods asking through `pkmanager request` and `release`
	crashMaxWant   = 3
	crashOpTimeout = 3 * time.Minute // one request or release, retries included
	crashReady     = 2 * time.Minute // a (re)start until /readyz answers 200
)

// devServer is `pkmanager serve --dev` on fixed loopback addresses and one
// data dir; restart replaces a killed process.
type devServer struct {
	data, grpc, http, rpc string
	args                  []string

	// dead is closed when the server could not be restarted: the pods stop
	// retrying.
	dead     chan struct{}
	deadOnce sync.Once

	mu    sync.Mutex
	proc  *devProc
	procs []*devProc // every process started, for failure messages
}

var errServerDead = errors.New("the dev server could not be restarted")

func (s *devServer) setDead() { s.deadOnce.Do(func() { close(s.dead) }) }

// pause waits a moment before a retry; false if the server is dead.
func (s *devServer) pause() bool {
	select {
	case <-s.dead:
		return false
	case <-time.After(time.Duration(100+rand.IntN(200)) * time.Millisecond):
		return true
	}
}

type devProc struct {
	cmd  *exec.Cmd
	out  *syncBuffer // stdout and stderr
	done chan struct{}
	err  error // after done
}

func newDevServer(t *testing.T) *devServer {
	s := &devServer{data: t.TempDir(), grpc: testbin.FreeAddr(t), http: testbin.FreeAddr(t), rpc: testbin.FreeAddr(t),
		dead: make(chan struct{})}
	s.args = []string{"serve", "--dev", "--data-dir", s.data, "--grpc-addr", s.grpc, "--http-addr", s.http,
		"--dev-rpc-addr", s.rpc, "--dev-block-time", "100ms", "--reuse-delay", "0s", "--log-format", "json"}
	t.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if p := s.proc; p != nil {
			if err := p.stop(30 * time.Second); err != nil {
				t.Errorf("dev server: %v\n%s", err, tail(p.out.String(), 3000))
			}
			s.proc = nil
		}
	})
	return s
}

// start runs a server process and polls /readyz until it answers 200. Call
// with s.mu held.
func (s *devServer) start() error {
	cmd := exec.Command(binary, s.args...)
	cmd.Env = cleanEnv()
	p := &devProc{cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		return err
	}
	s.procs = append(s.procs, p)
	go func() { p.err = cmd.Wait(); close(p.done) }()
	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(crashReady)
	for {
		select {
		case <-p.done:
			return fmt.Errorf("server exited (%v) before it was ready:\n%s", p.err, tail(p.out.String(), 4000))
		default:
		}
		if resp, err := hc.Get("http://" + s.http + "/readyz"); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				s.proc = p
				return nil
			}
		}
		if time.Now().After(deadline) {
			p.kill()
			return fmt.Errorf("server not ready within %s:\n%s", crashReady, tail(p.out.String(), 4000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill SIGKILLs the running process and waits for it to go. Call with s.mu
// held.
func (s *devServer) kill() {
	if s.proc != nil {
		s.proc.kill()
		s.proc = nil
	}
}

func (p *devProc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func (p *devProc) stop(timeout time.Duration) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.kill()
		return fmt.Errorf("no exit within %s of SIGTERM", timeout)
	}
}

// logs is the tail of the last processes' output.
func (s *devServer) logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for i, p := range s.procs[max(0, len(s.procs)-2):] {
		fmt.Fprintf(&b, "--- process %d of %d:\n%s\n", len(s.procs)-min(2, len(s.procs))+i+1, len(s.procs), tail(p.out.String(), 3000))
	}
	return b.String()
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// life is one incarnation of a pod: the answers it got until its release.
type life struct {
	pod          string
	want         int
	answers      [][]string // sorted hex pubkeys (no 0x), one per answered request
	first        time.Time  // the first answer
	releaseStart time.Time  // zero: not released
}

// The real dev server (`pkmanager serve --dev`, embedded chain, bbolt store,
// deposits on chain) is SIGKILLed every few seconds for a minute while pods
// request and release keys through the gRPC API and the real client; it is
// restarted on the same data dir each time. A request a restart interrupted
// is retried; an answered one is never contradicted: every answer of a pod
// until its release is the same set, no key is in two pods at once, the
// server's /assignments and store agree with the answers, and every minted
// key has exactly one deposit on the dev chain.
func TestDevServerUnderSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts the dev server for a minute")
	}
	s := newDevServer(t)
	s.mu.Lock()
	err := s.start()
	s.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(s.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	api := pb.NewKeyServiceClient(conn)
	work := t.TempDir()

	// The killer: a SIGKILL at a random moment 0.3-3.5 s after the server
	// was ready (so also while it recovers at start), then a restart.
	start := time.Now()
	var kills atomic.Int32
	var over atomic.Bool // the killer is done: the pods finish
	killerDone := make(chan struct{})
	go func() {
		defer close(killerDone)
		defer over.Store(true)
		for {
			if el := time.Since(start); el >= crashMaxChaos || (el >= crashChaos && kills.Load() >= crashMinKills) {
				return
			}
			time.Sleep(time.Duration(300+rand.IntN(3200)) * time.Millisecond)
			s.mu.Lock()
			s.kill()
			kills.Add(1)
			err := s.start()
			s.mu.Unlock()
			if err != nil {
				t.Errorf("restart after SIGKILL %d: %v", kills.Load(), err)
				s.setDead()
				return
			}
		}
	}()

	// The pods.
	var (
		mu                          sync.Mutex
		lives                       []*life
		requests, releases, retries atomic.Int32
		wg                          sync.WaitGroup
	)
	for p := range crashGRPCPods + crashCLIPods {
		cli := p >= crashGRPCPods
		pod := fmt.Sprintf("crash-%d", p)
		if cli {
			pod = fmt.Sprintf("crash-cli-%d", p)
		}
		wg.Go(func() {
			for l := 0; !over.Load(); l++ {
				// A third of the lives are pods that keep their keys (a
				// new pod name, never released), so the pool stays short
				// and keys are minted and deposited throughout.
				keep := rand.IntN(3) == 0
				lf := &life{pod: pod, want: 1 + rand.IntN(crashMaxWant)}
				if keep {
					lf.pod = fmt.Sprintf("%s-kept-%d", pod, l)
				}
				lifeEnd := time.Now().Add(time.Duration(500+rand.IntN(5000)) * time.Millisecond)
				for a := 0; ; a++ {
					// The gRPC pods sometimes send two requests at once
					// (duplicates of one pod).
					dups := 1
					if !cli && rand.IntN(3) == 0 {
						dups = 2
					}
					got := make([][]string, dups)
					errs := make([]error, dups)
					var dwg sync.WaitGroup
					for d := range dups {
						dwg.Go(func() {
							if cli {
								got[d], errs[d] = cliRequest(s, lf.pod, lf.want, filepath.Join(work, fmt.Sprintf("%s-%d-%d", lf.pod, l, a)), &retries)
							} else {
								got[d], errs[d] = grpcRequest(s, api, lf.pod, lf.want, &retries)
							}
							requests.Add(1)
						})
					}
					dwg.Wait()
					for d := range dups {
						if errs[d] != nil {
							t.Errorf("request %s (%d keys): %v", lf.pod, lf.want, errs[d])
							return
						}
						if len(lf.answers) == 0 {
							lf.first = time.Now()
						}
						lf.answers = append(lf.answers, got[d])
					}
					if time.Now().After(lifeEnd) || over.Load() {
						break
					}
					time.Sleep(time.Duration(rand.IntN(600)) * time.Millisecond)
				}
				if !keep && (!over.Load() || rand.IntN(2) == 0) {
					lf.releaseStart = time.Now()
					var err error
					if cli {
						err = cliRelease(s, lf.pod, &retries)
					} else {
						err = grpcRelease(s, api, lf.pod, &retries)
					}
					releases.Add(1)
					if err != nil {
						t.Errorf("release %s: %v", lf.pod, err)
						return
					}
				}
				mu.Lock()
				lives = append(lives, lf)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	<-killerDone
	t.Logf("%d requests and %d releases by %d pods in %s (%d retries), %d SIGKILLs and restarts",
		requests.Load(), releases.Load(), crashGRPCPods+crashCLIPods, time.Since(start).Round(time.Millisecond), retries.Load(), kills.Load())
	if t.Failed() {
		t.Fatalf("server logs:\n%s", s.logs())
	}
	if kills.Load() < crashMinKills {
		t.Errorf("only %d kills in %s", kills.Load(), crashMaxChaos)
	}
	checkCrashRun(t, s, api, lives)
	if t.Failed() {
		t.Logf("server logs:\n%s", s.logs())
	}
}

func retryable(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.NotFound, codes.PermissionDenied, codes.Unauthenticated:
		return false
	}
	return true
}

// grpcRequest asks for pod's n keys until an answer, retrying what a
// restart interrupted.
func grpcRequest(s *devServer, api pb.KeyServiceClient, pod string, n int, retries *atomic.Int32) ([]string, error) {
	var keys []string
	err := retryOp(s, retries, func(ctx context.Context) error {
		r, err := api.RequestKeys(ctx, &pb.RequestKeysRequest{PodName: pod, Count: uint32(n)})
		if err != nil {
			return err
		}
		keys = keys[:0]
		for _, k := range r.GetKeys() {
			keys = append(keys, hex.EncodeToString(k.GetPubkey()))
		}
		return nil
	})
	slices.Sort(keys)
	return keys, err
}

func grpcRelease(s *devServer, api pb.KeyServiceClient, pod string, retries *atomic.Int32) error {
	return retryOp(s, retries, func(ctx context.Context) error {
		_, err := api.ReleaseKeys(ctx, &pb.ReleaseKeysRequest{PodName: pod})
		return err
	})
}

func retryOp(s *devServer, retries *atomic.Int32, op func(context.Context) error) error {
	deadline := time.Now().Add(crashOpTimeout)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := s.context(time.Minute)
		err := op(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if !retryable(err) {
			return err
		}
		last = err
		retries.Add(1)
		if !s.pause() {
			return errServerDead
		}
	}
	return fmt.Errorf("gave up after %s: %w", crashOpTimeout, last)
}

// context is a context with timeout that also ends when the server is dead.
func (s *devServer) context(timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	go func() {
		select {
		case <-s.dead:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// cliRequest runs `pkmanager request` (which itself retries while the
// server is unreachable) until it succeeds, each time into a new directory,
// and returns the public keys of the keystores it wrote.
func cliRequest(s *devServer, pod string, n int, out string, retries *atomic.Int32) ([]string, error) {
	deadline := time.Now().Add(crashOpTimeout)
	for attempt := 0; ; attempt++ {
		dir := fmt.Sprintf("%s-%d", out, attempt)
		msg, err := s.cliRun("request", "--server", s.grpc, "--pod-name", pod, "--keys", fmt.Sprint(n), "--out", dir,
			"--insecure-kdf", "--token-file", "", "--timeout", "2m")
		if err == nil {
			return readKeystores(dir)
		}
		if time.Now().After(deadline) || strings.Contains(msg, "invalid request") || strings.Contains(msg, "invalid argument") {
			return nil, fmt.Errorf("pkmanager request: %v\n%s", err, msg)
		}
		retries.Add(1)
		if !s.pause() {
			return nil, errServerDead
		}
	}
}

func cliRelease(s *devServer, pod string, retries *atomic.Int32) error {
	deadline := time.Now().Add(crashOpTimeout)
	for {
		msg, err := s.cliRun("release", "--server", s.grpc, "--pod-name", pod, "--token-file", "", "--timeout", "2m")
		if err == nil {
			if !strings.Contains(msg, "released") && !strings.Contains(msg, "held no keys") {
				return fmt.Errorf("pkmanager release: unexpected output %q", msg)
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pkmanager release: %v\n%s", err, msg)
		}
		retries.Add(1)
		if !s.pause() {
			return errServerDead
		}
	}
}

// cliRun runs a pkmanager client command and returns its combined output.
func (s *devServer) cliRun(args ...string) (string, error) {
	ctx, cancel := s.context(3 * time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// readKeystores returns the sorted hex public keys of DIR/keystores/*.json,
// checking that each secret decrypts and matches.
func readKeystores(dir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "keystores", "*.json"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		ks, err := keystore.Parse(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		pw, err := os.ReadFile(secretFile(dir, f))
		if err != nil {
			return nil, err
		}
		if _, err := ks.Decrypt(string(pw)); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		pub, ok := ks.Pubkey()
		if !ok {
			return nil, fmt.Errorf("%s: no pubkey", f)
		}
		out = append(out, hex.EncodeToString(pub[:]))
	}
	slices.Sort(out)
	return out, nil
}

// checkCrashRun checks the answers against each other, the running server,
// the chain (through the binary), and, after a clean stop, the store and the
// chain opened here.
func checkCrashRun(t *testing.T, s *devServer, api pb.KeyServiceClient, lives []*life) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Every answer of one life is the same set of the size asked.
	handed := map[string][]*life{}
	last := map[string]*life{}
	answers := 0
	for _, lf := range lives {
		last[lf.pod] = lf // in order per pod
		answers += len(lf.answers)
		for i, a := range lf.answers {
			if !slices.Equal(a, lf.answers[0]) {
				t.Errorf("pod %s: answer %d %v contradicts answer 0 %v of the same life", lf.pod, i, a, lf.answers[0])
			}
		}
		if len(lf.answers[0]) != lf.want {
			t.Errorf("pod %s got %d keys, asked for %d", lf.pod, len(lf.answers[0]), lf.want)
		}
		for _, h := range lf.answers[0] {
			handed[h] = append(handed[h], lf)
		}
	}
	// No key in two pods at once: held from the first answer until the
	// release was sent.
	for h, ls := range handed {
		for i := range ls {
			for j := i + 1; j < len(ls); j++ {
				a, b := ls[i], ls[j]
				from, to := later(a.first, b.first), earlier(releasedAt(a), releasedAt(b))
				if from.Before(to) {
					t.Errorf("key %s held by %s and %s at once (%s)", h, a.pod, b.pod, from.Format(time.StampMicro))
				}
			}
		}
	}

	// Wait for deposits still in flight, then the server's view.
	for {
		n := 0
		stream, err := api.ListKeys(ctx, &pb.ListKeysRequest{States: []string{string(store.StatePendingDeposit)}})
		if err == nil {
			for {
				if _, err = stream.Recv(); err != nil {
					break
				}
				n++
			}
			if errors.Is(err, io.EOF) {
				err = nil
			}
		}
		if err == nil && n == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%d keys still pending-deposit (%v)", n, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	resp, err := http.Get("http://" + s.http + "/assignments?format=json")
	if err != nil {
		t.Fatal(err)
	}
	var page struct {
		Pods []struct {
			Name string `json:"pod_name"`
			Keys []struct {
				Pubkey string `json:"pubkey"`
				State  string `json:"state"`
			} `json:"keys"`
		} `json:"pods"`
	}
	err = json.NewDecoder(resp.Body).Decode(&page)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	serverSet := map[string][]string{}
	for _, p := range page.Pods {
		for _, k := range p.Keys {
			if k.State != string(store.StateAssigned) {
				t.Errorf("/assignments: key %s of %s is %s", k.Pubkey, p.Name, k.State)
			}
			serverSet[p.Name] = append(serverSet[p.Name], strings.TrimPrefix(strings.ToLower(k.Pubkey), "0x"))
		}
	}
	for pod, lf := range last {
		got := serverSet[pod]
		slices.Sort(got)
		want := lf.answers[0]
		if !lf.releaseStart.IsZero() {
			want = nil
		}
		if !slices.Equal(got, want) {
			t.Errorf("pod %s: /assignments gives %v, the pod was last answered %v (released: %v)", pod, got, lf.answers[0], !lf.releaseStart.IsZero())
		}
	}
	for pod := range serverSet {
		if last[pod] == nil {
			t.Errorf("/assignments has pod %s, which never asked", pod)
		}
	}

	// The deposits as the binary reads them from the dev chain's RPC.
	out, err := s.cliRun("deposit-contract", "events", "--eth1-rpc", "http://"+s.rpc, "--deposit-contract",
		crashContract().Hex(), "--format", "json", "--fork-version", "0x10000038")
	if err != nil {
		t.Fatalf("deposit-contract events: %v\n%s", err, out)
	}
	var events []struct {
		Pubkey string `json:"pubkey"`
	}
	if err := json.Unmarshal([]byte(out), &events); err != nil {
		t.Fatalf("deposit-contract events: %v\n%s", err, out)
	}
	onChain := map[string]int{}
	for _, e := range events {
		onChain[strings.TrimPrefix(strings.ToLower(e.Pubkey), "0x")]++
	}

	// A clean stop, then the store and the chain here.
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if err := p.stop(30 * time.Second); err != nil {
		t.Fatalf("stop the server: %v\n%s", err, tail(p.out.String(), 3000))
	}
	st, err := bolt.Open(filepath.Join(s.data, "pkmanager.db"), bolt.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	storetest.CheckInvariants(t, st)
	want := map[store.Pubkey]*store.DepositData{}
	if err := st.ListKeys(ctx, store.ListOptions{WithDeposit: true}, func(k store.Key) error {
		h := hex.EncodeToString(k.Pubkey[:])
		switch k.State {
		case store.StateAssigned, store.StateAvailable, store.StateCoolingDown:
		default:
			t.Errorf("key %s is %s (reason %q)", h, k.State, k.RetiredReason)
		}
		if k.LastPod == "" {
			t.Errorf("key %s was minted but never handed to a pod", h)
		}
		if k.Deposit == nil {
			t.Errorf("key %s has no deposit data", h)
		} else {
			want[k.Pubkey] = k.Deposit
		}
		if onChain[h] != 1 {
			t.Errorf("key %s has %d deposit events on chain (deposit-contract events)", h, onChain[h])
		}
		delete(onChain, h)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for h, n := range onChain {
		t.Errorf("%d deposits on chain for key %s, which the store does not have (a paid deposit whose key was lost)", n, h)
	}
	for h := range handed {
		var pk store.Pubkey
		if b, err := hex.DecodeString(h); err == nil {
			copy(pk[:], b)
		}
		if want[pk] == nil {
			t.Errorf("key %s was handed out but is not in the store", h)
		}
	}
	chain, err := devchain.Start(ctx, devchain.Config{DataDir: filepath.Join(s.data, "devchain"), Manual: true})
	if err != nil {
		t.Fatalf("open the dev chain: %v", err)
	}
	defer chain.Close()
	if !chain.CrashSafe() {
		t.Error("the dev server's chain is not crash-safe")
	}
	deptest.CheckDeposits(t, chain.Client(), chain.DepositContract(), want, uint64(len(want)))
	t.Logf("checked: %d answers over %d pod lives all consistent, %d keys handed out, none in two pods at once, %d keys in the store each deposited once",
		answers, len(lives), len(handed), len(want))
}

// crashContract is the dev chain's deposit contract: the dev account's
// first contract.
func crashContract() common.Address { return crypto.CreateAddress(devchain.DevAddress(), 0) }

func releasedAt(l *life) time.Time {
	if l.releaseStart.IsZero() {
		return time.Unix(1<<40, 0)
	}
	return l.releaseStart
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
