package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	pb "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/mint"
	"github.com/pkmanager/pkmanager/internal/seal"
	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/bolt"
)

const envMemStore = "PKM_BENCH_MEM_STORE"

// BenchmarkServerMemory100k measures the resident memory of a server
// process over a bbolt store of 100,000 keys, 90,000 of them assigned to
// 9,000 pods: another process (this test binary again, running
// TestServerMemoryProcess) starts the real server on the store, makes 1,000
// recycle allocations over gRPC, reads the whole /assignments listing as
// JSON and /metrics, and reports its peak resident set (VmHWM), its
// resident set then (VmRSS), the anonymous part of it (RssAnon: the rest is
// file pages, the store's mmap and the binary's text), the resident pages of
// the store's mapping and of the binary's, and the Go heap in use.
//
// Mapped file pages count as resident once the process touches them, and
// the kernel maps whole large folios and the already cached pages around a
// touched one (fault-around), so the figure depends on what the page cache
// holds when the server starts: page-cache=as-written starts the server
// right after this process wrote the store (and the linker the binary), all
// of both cached; page-cache=dropped first drops both files' cached pages
// (POSIX_FADV_DONTNEED on the store and on a copy of the binary the server
// runs from), as after a reboot or on another node.
func BenchmarkServerMemory100k(b *testing.B) {
	kek, err := seal.ParseKEK(strings.Repeat("42", seal.KEKSize))
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "pk.db")
	fillPool(b, path, kek, 100_000)
	st, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for i := next.Add(1); i <= 9000; i = next.Add(1) {
				_, err := st.Claim(b.Context(), store.ClaimParams{Pod: fmt.Sprintf("held-%d", i), PodUID: fmt.Sprintf("uid-%d", i), Want: 10, Now: time.Now(), AllOrNothing: true})
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("page-cache=as-written", func(b *testing.B) { measureServerMemory(b, exe, path, fi.Size(), false) })
	b.Run("page-cache=dropped", func(b *testing.B) { measureServerMemory(b, exe, path, fi.Size(), true) })
}

// measureServerMemory runs the server process of BenchmarkServerMemory100k
// b.N times on the store at path, first dropping the cached pages of the
// store and of the binary exe when drop is set, and reports the largest
// figures.
func measureServerMemory(b *testing.B, exe, path string, size int64, drop bool) {
	if drop {
		// This process maps the pages of its own binary, which stay
		// cached: the server runs from a copy.
		exe = copyFile(b, exe, filepath.Join(b.TempDir(), filepath.Base(exe)))
	}
	var rss, hwm, heap, anon, storeRSS, binRSS float64
	b.ResetTimer()
	for range b.N {
		if drop {
			for _, f := range []string{path, exe} {
				if err := dropPageCache(f); err != nil {
					b.Fatal(err)
				}
			}
		}
		cmd := exec.CommandContext(b.Context(), exe, "-test.run", "^TestServerMemoryProcess$", "-test.count", "1")
		cmd.Env = append(os.Environ(), envMemStore+"="+path)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("server process: %v", err)
		}
		sc := bufio.NewScanner(strings.NewReader(string(out)))
		found := false
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 5 && f[0] == "memory" {
				r, _ := strconv.ParseFloat(f[1], 64)
				h, _ := strconv.ParseFloat(f[2], 64)
				g, _ := strconv.ParseFloat(f[3], 64)
				a, _ := strconv.ParseFloat(f[4], 64)
				rss, hwm, heap, anon = max(rss, r), max(hwm, h), max(heap, g), max(anon, a)
				found = true
			}
			if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "mapped" {
				st, _ := strconv.ParseFloat(f[1], 64)
				bin, _ := strconv.ParseFloat(f[2], 64)
				storeRSS, binRSS = max(storeRSS, st), max(binRSS, bin)
			}
		}
		if !found {
			b.Fatalf("server process reported nothing: %s", out)
		}
	}
	b.StopTimer()
	b.ReportMetric(hwm/1024, "peak-rss-MiB")
	b.ReportMetric(rss/1024, "rss-MiB")
	b.ReportMetric(anon/1024, "anon-rss-MiB")
	b.ReportMetric(heap/(1<<20), "heap-MiB")
	b.ReportMetric(storeRSS/1024, "store-rss-MiB")
	b.ReportMetric(binRSS/1024, "binary-rss-MiB")
	b.ReportMetric(float64(size)/(1<<20), "store-MiB")
}

// copyFile copies the file from to a new executable file to and returns to.
func copyFile(b *testing.B, from, to string) string {
	src, err := os.Open(from)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o700)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		b.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		b.Fatal(err)
	}
	return to
}

// dropPageCache writes the file's dirty pages and asks the kernel to drop
// its cached ones (pages some process maps stay).
func dropPageCache(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return err
	}
	const fadvDontNeed = 4 // POSIX_FADV_DONTNEED
	if _, _, errno := syscall.Syscall6(syscall.SYS_FADVISE64, f.Fd(), 0, 0, fadvDontNeed, 0, 0); errno != 0 {
		return fmt.Errorf("fadvise %s: %w", path, errno)
	}
	return nil
}

// TestServerMemoryProcess is the server process of
// BenchmarkServerMemory100k; without its environment it does nothing.
func TestServerMemoryProcess(t *testing.T) {
	path := os.Getenv(envMemStore)
	if path == "" {
		return
	}
	kek, err := seal.ParseKEK(strings.Repeat("42", seal.KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	fork, _ := deposit.ParseForkVersion("0x10000038")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	srv, err := New(ctx, Options{
		StoreURL: "bolt://" + path, KEK: kek, GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Mint: mint.Config{Network: deposit.Network{Name: "devnet", GenesisForkVersion: fork},
			Withdrawal: mint.WithdrawalExecution, WithdrawalAddress: [20]byte{19: 1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	c := dialKeys(t, srv.GRPCAddr().String())
	for i := range 1000 {
		if _, err := c.RequestKeys(ctx, &pb.RequestKeysRequest{PodName: fmt.Sprintf("new-%d", i), Count: 1}); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range []string{"/assignments?format=json", "/metrics"} {
		resp, err := http.Get("http://" + srv.HTTPAddr().String() + u)
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || n == 0 {
			t.Fatalf("GET %s: %s, %d bytes, %v", u, resp.Status, n, err)
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	kib := func(field string) string {
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, field+":"); ok {
				return strings.Fields(v)[0]
			}
		}
		t.Fatalf("no %s in /proc/self/status", field)
		return ""
	}
	fmt.Printf("memory %s %s %d %s\n", kib("VmRSS"), kib("VmHWM"), ms.HeapInuse, kib("RssAnon"))
	fmt.Fprintf(os.Stderr, "server process: RssAnon %s KiB, RssFile %s KiB, Go heap in use %d MiB, Go runtime from the OS %d MiB\n", kib("RssAnon"), kib("RssFile"), ms.HeapInuse>>20, ms.Sys>>20)
	printMappings(t, path)
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

// printMappings writes the resident size of each mapping of at least 1 MiB
// (from /proc/self/smaps) to stderr, what the resident set is made of, and
// the resident KiB of the store's mapping and of the binary's mappings
// (text, read-only data) to stdout.
func printMappings(t *testing.T, storePath string) {
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var name, file string
	storeKiB, binKiB := 0, 0
	for _, line := range strings.Split(string(smaps), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":"):
			name, file = "[anon]", ""
			if len(f) >= 6 {
				file = f[5]
				name = filepath.Base(file) + " " + f[1]
			}
		case len(f) == 3 && f[0] == "Rss:":
			kib, _ := strconv.Atoi(f[1])
			switch file {
			case storePath:
				storeKiB += kib
			case exe:
				binKiB += kib
			}
			if kib >= 1024 {
				fmt.Fprintf(os.Stderr, "server process: mapping %s: %d KiB resident\n", name, kib)
			}
		}
	}
	fmt.Printf("mapped %d %d\n", storeKiB, binKiB)
}
