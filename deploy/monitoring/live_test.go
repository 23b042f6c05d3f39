package monitoring

import (
	"bufio"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/beacon"
	"github.com/pkmanager/pkmanager/internal/beacon/beacontest"
	"github.com/pkmanager/pkmanager/test/testbin"
)

var binary string // the pkmanager binary, built once for the package's tests

// liveNames caches exportedNames: one server is scraped per test binary.
var (
	liveOnce  sync.Mutex
	liveNames map[string]bool
)

func TestMain(m *testing.M) { os.Exit(testbin.Main(m, &binary)) }

// liveMetrics runs a real server (dev mode: embedded store and dev chain,
// deposits on chain, a spare pool, and a beacon node at --beacon-url so the
// reuse gate and the validator lifecycle run), has it mint, deposit and
// release a key, and returns the metric families its /metrics exposes, by
// name, with histograms' and summaries' series names.
func liveMetrics(t *testing.T) map[string]bool {
	t.Helper()
	dir := t.TempDir()
	chain := beacon.Chain{GenesisTime: time.Now().Add(-time.Hour).Truncate(time.Second), GenesisValidatorsRoot: [32]byte{1},
		GenesisForkVersion: [4]byte{0x10, 0, 0, 0x38}, SecondsPerSlot: 12 * time.Second, SlotsPerEpoch: 32}
	f := beacontest.NewFake(chain, time.Now)
	t.Cleanup(f.Close)

	cmd := exec.Command(binary, "serve", "--dev", "--data-dir", filepath.Join(dir, "data"), "--grpc-addr", "127.0.0.1:0",
		"--http-addr", "127.0.0.1:0", "--dev-rpc-addr", "127.0.0.1:0", "--dev-block-time", "200ms", "--reuse-delay", "0s",
		"--spare-pool", "1", "--beacon-url", f.URL(), "--log-format", "json")
	cmd.Env = testbin.Env()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr testbin.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
		}
	})
	addrs := make(chan [2]string, 1)
	go func() {
		grpcLine, httpLine := regexp.MustCompile(`^  grpc:\s+(\S+)`), regexp.MustCompile(`^  http:\s+http://(\S+)`)
		var a [2]string
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := grpcLine.FindStringSubmatch(sc.Text()); m != nil {
				a[0] = m[1]
			}
			if m := httpLine.FindStringSubmatch(sc.Text()); m != nil {
				a[1] = m[1]
			}
			if strings.Contains(sc.Text(), "reuse delay:") {
				addrs <- a
			}
		}
	}()
	var grpcAddr, httpAddr string
	select {
	case a := <-addrs:
		grpcAddr, httpAddr = a[0], a[1]
	case <-time.After(60 * time.Second):
		t.Fatalf("the server did not start within 60 s:\n%s", stderr.String())
	}

	client := func(args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c := exec.CommandContext(ctx, binary, append(args, "--server", grpcAddr)...)
		c.Env = testbin.Env()
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("pkmanager %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	client("request", "--pod-name", "metrics-0", "--keys", "1", "--insecure-kdf", "--out", filepath.Join(dir, "keys"))
	client("release", "--pod-name", "metrics-0")

	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	names, err := SeriesNames(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// exportedNames are the metric names alerts and panels may use: those a
// real server's /metrics exposes, and those of ClusterOnly (scraped live
// by test/k8s).
func exportedNames(t *testing.T) map[string]bool {
	t.Helper()
	liveOnce.Lock()
	defer liveOnce.Unlock()
	if liveNames != nil {
		return liveNames
	}
	live := liveMetrics(t)
	declared := exportedMetrics(t)
	out := map[string]bool{}
	for n := range live {
		if strings.HasPrefix(n, "pkmanager_") {
			out[n] = true
		}
	}
	for n, why := range ClusterOnly {
		if live[n] {
			t.Errorf("%s is listed as needing %s, but the server scraped exports it: drop it from ClusterOnly", n, why)
		}
		out[n] = true
	}
	// What the source declares but neither the server scraped nor
	// ClusterOnly covers: a metric the test does not see live.
	var unseen []string
	for n := range declared {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_sum"), "_count")
		if _, cluster := ClusterOnly[base]; !out[n] && !cluster {
			unseen = append(unseen, n)
		}
	}
	sort.Strings(unseen)
	if len(unseen) > 0 {
		t.Logf("declared but not exposed by the scraped server (no sample yet): %v", unseen)
	}
	t.Logf("%d pkmanager_* series names live, %d from ClusterOnly", len(out)-len(ClusterOnly), len(ClusterOnly))
	if !t.Failed() {
		liveNames = out
	}
	return out
}
