package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/beacon"
	"github.com/pkmanager/pkmanager/internal/beacon/beacontest"
	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/store"
)

// A request to a server with --require-active whose pod holds no keys yet,
// while the pool's keys are still activating, shows its progress from the
// server's account of the wait (how many pool keys are activating, the
// server's message), and gets its key once the beacon node shows it
// active. The server is the real binary; the beacon node is the
// spec-shaped stand-in (beacontest.Fake) on a chain of 2-second epochs.
func TestRequestProgressWhileWaitingForActivation(t *testing.T) {
	work := t.TempDir()
	made, pw := devKeystores(t, work, 2)

	fork, err := deposit.ParseForkVersion("0x10000038") // the dev network's
	if err != nil {
		t.Fatal(err)
	}
	chain := beacon.Chain{GenesisTime: time.Now().Add(-time.Hour).Truncate(time.Second), GenesisValidatorsRoot: [32]byte{7, 7},
		GenesisForkVersion: fork, SecondsPerSlot: time.Second, SlotsPerEpoch: 2}
	f := beacontest.NewFake(chain, time.Now)
	defer f.Close()
	var idx []uint64
	for _, hex := range sortedKeys(made) {
		pk, err := store.ParsePubkey(hex)
		if err != nil {
			t.Fatal(err)
		}
		i := uint64(len(idx))
		f.AddValidator(pk, i)
		f.SetEpochs(i, beacon.FarFutureEpoch, beacon.FarFutureEpoch) // pending_initialized
		idx = append(idx, i)
	}

	s := startServer(t, t.TempDir(), "--deposits", "off", "--beacon-url", f.URL(), "--require-active", "--reuse-delay", "0s")
	out := mustRun(t, "import", "--server", s.grpcAddr, "--keystores", filepath.Join(work, "src", "keystores"), "--password-file", pw)
	if !strings.Contains(out, "imported 2 keys as available") {
		t.Fatalf("import: %s", out)
	}

	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := run(t, "request", "--server", s.grpcAddr, "--pod-name", "w-0", "--keys", "1", "--out", filepath.Join(work, "w0"),
			"--insecure-kdf", "--progress-interval", "200ms")
		done <- result{out, err}
	}()
	// The request waits (the server claims again every 5 s); then the
	// validators activate.
	select {
	case r := <-done:
		t.Fatalf("request ended while no key was active: %v\n%s", r.err, r.out)
	case <-time.After(6 * time.Second):
	}
	for _, i := range idx {
		f.SetEpochs(i, 0, beacon.FarFutureEpoch) // active_ongoing
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("request still waiting 60 s after the validators activated")
	}
	if r.err != nil || !strings.Contains(r.out, "(recycled 1, minted 0)") {
		t.Fatalf("request: %v\n%s", r.err, r.out)
	}
	want := "pod w-0: waiting for activation: 0 of 1 keys active, 1 pool key activating (server: pod w-0 holds 0 of 1 keys active; it lacks 1: " +
		"the pool has 0 active keys, and 1 that would cover it wait for activation"
	if !strings.Contains(r.out, want) {
		t.Fatalf("no progress line of the wait for activation, want %q in:\n%s", want, r.out)
	}
}

// devKeystores has a dev server (stopped again) make n keys for a pod,
// written as keystores to work/src with the password in the file pw; it
// returns them by pubkey (their deposits are on that server's chain: made
// elsewhere for another server).
func devKeystores(t *testing.T, work string, n int) (made map[string][]byte, pw string) {
	t.Helper()
	src := startServer(t, t.TempDir())
	defer src.stop()
	pw = filepath.Join(work, "pw.txt")
	if err := os.WriteFile(pw, []byte("correct horse battery staple\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, made = request(t, src, "source-0", n, filepath.Join(work, "src"), "--password-file", pw)
	return made, pw
}
