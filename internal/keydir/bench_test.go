package keydir

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"testing"
)

// BenchmarkWrite64Scrypt writes 64 keys with standard scrypt (n=2^18,
// 256 MiB and about a second per key): the real cost of a fresh output
// directory, on one worker and on all cores. Each op takes tens of
// seconds; run with -benchtime 1x.
func BenchmarkWrite64Scrypt(b *testing.B) {
	ks := genKeys(b, 64, true)
	for _, workers := range []int{1, runtime.GOMAXPROCS(0)} {
		b.Run("workers="+strconv.Itoa(workers), func(b *testing.B) {
			opts := Options{Workers: workers}
			for b.Loop() {
				b.StopTimer()
				out, err := os.MkdirTemp(b.TempDir(), "out")
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				rep, err := Write(context.Background(), out, ks, opts)
				if err != nil {
					b.Fatal(err)
				}
				if len(rep.Written) != len(ks) {
					b.Fatalf("wrote %d keystores", len(rep.Written))
				}
			}
			b.ReportMetric(float64(b.Elapsed().Seconds())/float64(b.N*len(ks)), "s/key")
		})
	}
}
