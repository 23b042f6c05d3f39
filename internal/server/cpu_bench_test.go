package server

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/mint"
	"github.com/pkmanager/pkmanager/internal/seal"
)

// startRecycleServer starts the real server on a new bbolt store holding a
// pool of n available keys, on loopback TCP, and returns its gRPC address.
// The server stops when the benchmark ends.
func startRecycleServer(b *testing.B, n int) string {
	b.Helper()
	kek, err := seal.ParseKEK(strings.Repeat("42", seal.KEKSize))
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "pk.db")
	fillPool(b, path, kek, n)
	fork, _ := deposit.ParseForkVersion("0x10000038")
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := New(ctx, Options{
		StoreURL: "bolt://" + path, KEK: kek, GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Mint: mint.Config{Network: deposit.Network{Name: "devnet", GenesisForkVersion: fork},
			Withdrawal: mint.WithdrawalExecution, WithdrawalAddress: [20]byte{19: 1}},
	})
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	b.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			b.Error(err)
		}
	})
	return srv.GRPCAddr().String()
}

// dialKeys connects a KeyService client to addr; the connection closes when
// the test ends.
func dialKeys(tb testing.TB, addr string) pb.KeyServiceClient {
	tb.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return pb.NewKeyServiceClient(conn)
}

// processCPU is the CPU time (user and system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// processSysCPU is the part of processCPU spent in the kernel (for the
// store: its writes and fdatasyncs; for gRPC: the socket calls).
func processSysCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Stime.Nano())
}

// Environment of the client process of BenchmarkRecycleGRPCServerCPU.
const (
	envClientAddr    = "PKM_BENCH_RECYCLE_ADDR"
	envClientN       = "PKM_BENCH_RECYCLE_N"
	envClientClients = "PKM_BENCH_RECYCLE_CLIENTS"
)

// BenchmarkRecycleGRPCServerCPU is RecycleGRPC with the clients in another
// process (this test binary again, running TestRecycleClientProcess), so
// that this process's CPU time is the server's alone: it reports the
// server's CPU time per allocation (server-cpu-ms) beside allocations/s and
// the latencies the clients saw.
func BenchmarkRecycleGRPCServerCPU(b *testing.B) {
	for _, clients := range []int{1, 32} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			addr := startRecycleServer(b, b.N+clients)
			exe, err := os.Executable()
			if err != nil {
				b.Fatal(err)
			}
			cmd := exec.CommandContext(b.Context(), exe, "-test.run", "^TestRecycleClientProcess$", "-test.count", "1")
			cmd.Env = append(os.Environ(), envClientAddr+"="+addr, envClientN+"="+strconv.Itoa(b.N), envClientClients+"="+strconv.Itoa(clients))
			cmd.Stderr = os.Stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			// The client prints "ready" once connected and "result ..." when done;
			// the server's CPU is counted between the two.
			var cpu0, cpu, sys0, sys time.Duration
			var result []string
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				switch f := strings.Fields(sc.Text()); {
				case len(f) == 1 && f[0] == "ready":
					cpu0, sys0 = processCPU(), processSysCPU()
				case len(f) == 5 && f[0] == "result":
					cpu, sys = processCPU()-cpu0, processSysCPU()-sys0
					result = f[1:]
				}
			}
			if err := cmd.Wait(); err != nil {
				b.Fatalf("client process: %v", err)
			}
			b.StopTimer()
			if result == nil {
				b.Fatal("client process reported no result")
			}
			n, _ := strconv.ParseFloat(result[0], 64)
			ns, _ := strconv.ParseFloat(result[1], 64)
			p50, _ := strconv.ParseFloat(result[2], 64)
			p99, _ := strconv.ParseFloat(result[3], 64)
			b.ReportMetric(n/(ns/1e9), "allocs/s")
			b.ReportMetric(p50, "p50-ms")
			b.ReportMetric(p99, "p99-ms")
			b.ReportMetric(float64(cpu.Microseconds())/1000/n, "server-cpu-ms")
			b.ReportMetric(float64(sys.Microseconds())/1000/n, "server-sys-ms")
		})
	}
}

// TestRecycleClientProcess is the client process of
// BenchmarkRecycleGRPCServerCPU; without its environment it does nothing.
func TestRecycleClientProcess(t *testing.T) {
	addr := os.Getenv(envClientAddr)
	if addr == "" {
		return
	}
	n, _ := strconv.Atoi(os.Getenv(envClientN))
	clients, _ := strconv.Atoi(os.Getenv(envClientClients))
	c := dialKeys(t, addr)
	// A first call connects (its pod takes one of the pool's spare keys).
	if _, err := c.RequestKeys(t.Context(), &pb.RequestKeysRequest{PodName: "bench-warmup", Count: 1}); err != nil {
		t.Fatal(err)
	}
	fmt.Println("ready")
	r := runRecycle(t.Context(), []pb.KeyServiceClient{c}, clients, n)
	if r.err != nil {
		t.Fatal(r.err)
	}
	fmt.Printf("result %d %d %.3f %.3f\n", r.n, r.elapsed.Nanoseconds(), r.pct(0.50), r.pct(0.99))
}
