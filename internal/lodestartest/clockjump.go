package lodestartest

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// watchClock records, until the test ends, each moment the machine's wall
// clock moved more than a second ahead of (or behind) its monotonic clock:
// a paused virtual machine or a stepped clock. The chain's slots follow the
// wall clock, the test's waits the monotonic one, so such a jump explains
// missed slots; if the test failed, the jumps are logged.
func watchClock(tb testing.TB) {
	var (
		mu    sync.Mutex
		jumps []string
	)
	done := make(chan struct{})
	go func() {
		prev := time.Now()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			now := time.Now()
			mono := now.Sub(prev)                   // monotonic readings
			wall := now.Round(0).Sub(prev.Round(0)) // wall clock readings
			if d := wall - mono; d > time.Second || d < -time.Second {
				mu.Lock()
				jumps = append(jumps, fmt.Sprintf("%s: wall clock %+.1fs against the monotonic clock",
					now.UTC().Format(time.TimeOnly), d.Seconds()))
				mu.Unlock()
			}
			prev = now
		}
	}()
	tb.Cleanup(func() {
		close(done)
		mu.Lock()
		defer mu.Unlock()
		if tb.Failed() && len(jumps) > 0 {
			tb.Logf("lodestartest: the machine's clock jumped during the test (a paused machine?):\n  %s", strings.Join(jumps, "\n  "))
		}
	})
}
