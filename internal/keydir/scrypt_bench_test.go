package keydir

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/scrypt"
)

// Environment of the writing process of BenchmarkWriteScryptAllCores.
const (
	envScryptKeys    = "PKM_BENCH_SCRYPT_KEYS"
	envScryptWorkers = "PKM_BENCH_SCRYPT_WORKERS"
)

// BenchmarkWriteScryptAllCores measures Write of 16 standard-scrypt keys on
// all cores against scrypt's raw cost on the same cores (x/crypto/scrypt
// n=2^18, r=8, p=1 on as many goroutines, nothing else), and the peak
// memory of the writing process: another process (this test binary again,
// running TestWriteScryptProcess) writes them and reports its peak resident
// set (VmHWM), beside the workers x 256 MiB that scrypt needs.
func BenchmarkWriteScryptAllCores(b *testing.B) {
	const n = 16
	workers := runtime.GOMAXPROCS(0)
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	var raw, write time.Duration
	var peakKiB, baseKiB float64
	for b.Loop() {
		// Raw scrypt, on all cores.
		t0 := time.Now()
		var next atomic.Int64
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				salt := make([]byte, 32)
				rand.Read(salt)
				for next.Add(1) <= n {
					if _, err := scrypt.Key([]byte("a password of some length"), salt, 1<<18, 8, 1, 32); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		raw += time.Since(t0)

		cmd := exec.CommandContext(b.Context(), exe, "-test.run", "^TestWriteScryptProcess$", "-test.count", "1")
		cmd.Env = append(os.Environ(), envScryptKeys+"="+strconv.Itoa(n), envScryptWorkers+"="+strconv.Itoa(workers))
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("writing process: %v", err)
		}
		found := false
		for sc := bufio.NewScanner(strings.NewReader(string(out))); sc.Scan(); {
			if f := strings.Fields(sc.Text()); len(f) == 4 && f[0] == "write" {
				ns, _ := strconv.ParseFloat(f[1], 64)
				hwm, _ := strconv.ParseFloat(f[2], 64)
				base, _ := strconv.ParseFloat(f[3], 64)
				write += time.Duration(ns)
				peakKiB, baseKiB = max(peakKiB, hwm), max(baseKiB, base)
				found = true
			}
		}
		if !found {
			b.Fatalf("writing process reported nothing: %s", out)
		}
	}
	keys := float64(b.N * n)
	b.ReportMetric(raw.Seconds()/keys, "raw-s/key")
	b.ReportMetric(write.Seconds()/keys, "write-s/key")
	b.ReportMetric(100*(write.Seconds()/raw.Seconds()-1), "%-over-raw")
	b.ReportMetric(peakKiB/1024, "peak-rss-MiB")
	b.ReportMetric((peakKiB-baseKiB)/1024, "peak-over-start-MiB")
	b.ReportMetric(float64(workers*256), "workers-x-256-MiB")
}

// TestWriteScryptProcess is the writing process of
// BenchmarkWriteScryptAllCores; without its environment it does nothing.
func TestWriteScryptProcess(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv(envScryptKeys))
	workers, _ := strconv.Atoi(os.Getenv(envScryptWorkers))
	if n == 0 {
		return
	}
	ks := genKeys(t, n, true)
	base := vmHWM(t)
	t0 := time.Now()
	rep, err := Write(context.Background(), t.TempDir(), ks, Options{Workers: workers})
	elapsed := time.Since(t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Written) != n {
		t.Fatalf("wrote %d keystores, want %d", len(rep.Written), n)
	}
	fmt.Printf("write %d %s %s\n", elapsed.Nanoseconds(), vmHWM(t), base)
}

// vmHWM is this process's peak resident set in KiB, as a decimal string.
func vmHWM(t *testing.T) string {
	t.Helper()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strings.Fields(v)[0]
		}
	}
	t.Fatal("no VmHWM in /proc/self/status")
	return ""
}
