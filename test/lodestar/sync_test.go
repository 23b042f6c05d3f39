package lodestar

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/lodestartest"
	"github.com/pkmanager/pkmanager/test/testbin"
)

// syncSidecar: push delivery through `pkmanager sync` on a real chain, with
// interop validators p and q as the pool, validator idle run by nobody (the
// control group), and the beacon node as the reuse gate's.
//
//   - push: the sidecars of pods a and x push one key each into validator
//     clients A and X; both sign (liveness) and earn more than the idle
//     validator over the same two epochs (balances);
//   - crash: pod x's sidecar and client X are killed (nothing uploaded) and
//     the pod is released by hand, as the pod watcher would: the server
//     keeps release-time watermarks for its key;
//   - hand-off: pod a's sidecar gets SIGTERM: it deletes the key from A,
//     uploads A's history with the release and exits 0; A lists no key;
//   - pod b's sidecar gets both keys once the gate lets them through (not
//     before --quiet-epochs after the stop) and pushes them into client B
//     with their history, where they attest again;
//   - watermarks: after b's sidecar released them at SIGTERM, client B's own
//     slashing-protection database (DELETE's interchange) holds what it
//     imported and never signed itself: watermarks at or above everything A
//     signed with a's key (A's own database says what), the release-time
//     watermarks for x's key. Lodestar refuses to sign at or below them
//     (EIP-3076; its refusals, when the chain asks for such a vote, are
//     logged here);
//   - nobody is slashed.
func syncSidecar(t *testing.T, chain *lodestartest.Chain, p, q, idle int) {
	step := stepper(t)
	ctx, cancel := context.WithTimeout(t.Context(), 12*time.Minute)
	defer cancel()
	const quietEpochs = 2
	srv := startServer(t, chain, "--beacon-url", chain.URL, "--quiet-epochs", strconv.Itoa(quietEpochs), "--reuse-delay", "0s")
	srv.importInterop(t, chain, p, q)
	index := map[string]uint64{lodestartest.InteropPubkey(p): uint64(p), lodestartest.InteropPubkey(q): uint64(q)}
	step("pkmanager up with --beacon-url; interop validators %d and %d imported", p, q)

	vcA := chain.StartValidatorClient(t)
	vcX := chain.StartValidatorClient(t)
	scA := startSync(t, srv, "a", 1, vcA)
	scX := startSync(t, srv, "x", 1, vcX)
	vcB := chain.StartValidatorClient(t) // for later; it starts while A and X get going
	keyA := waitKeys(ctx, t, vcA, 1, time.Minute)[0]
	keyX := waitKeys(ctx, t, vcX, 1, time.Minute)[0]
	if keyA == keyX {
		t.Fatalf("pods a and x both got %s", keyA)
	}
	step("sidecars pushed validator %d into client A (pod a) and %d into client X (pod x)", index[keyA], index[keyX])
	liveA, err := chain.WaitLive(ctx, chain.Epoch(), 8, index[keyA], index[keyX])
	if err != nil {
		t.Fatal(err)
	}
	keyIdle := lodestartest.InteropPubkey(idle)
	bal0 := balances(ctx, t, chain, keyA, keyX, keyIdle)
	if err := chain.WaitEpochDone(ctx, liveA+2); err != nil {
		t.Fatal(err)
	}
	bal1 := balances(ctx, t, chain, keyA, keyX, keyIdle)
	gain := func(k string) int64 { return int64(bal1[k]) - int64(bal0[k]) }
	for _, k := range []string{keyA, keyX} {
		if gain(k) <= gain(keyIdle) {
			t.Errorf("validator %d: balance %+d gwei from the end of epoch %d to the end of epoch %d, idle validator %d %+d: not earning as a signing validator",
				index[k], gain(k), liveA, liveA+2, idle, gain(keyIdle))
		}
	}
	step("both live in epoch %d; balances from then to the end of epoch %d: %+d, %+d gwei (idle validator %d: %+d)",
		liveA, liveA+2, gain(keyA), gain(keyX), idle, gain(keyIdle))

	// x crashes: its sidecar and client die, nothing is uploaded; the pod
	// is released by hand.
	scX.kill()
	vcX.Kill()
	xFrom := chain.Slot()
	out := mustRun(t, "release", "--server", srv.grpcAddr, "--pod-name", "x")
	xTo := chain.Slot()
	step("pod x crashed (sidecar and client killed) and was released by hand in slots %d..%d: %s", xFrom, xTo, strings.TrimSpace(out))

	// a stops: its sidecar fences the key in A and releases it with A's history.
	stopFrom := chain.Epoch()
	msg, err := scA.stop(syscall.SIGTERM, 90*time.Second)
	stopA := chain.Epoch()
	if err != nil {
		t.Fatalf("pod a's sidecar at SIGTERM: %v\n%s", err, msg)
	}
	if !strings.Contains(msg, "keys deleted from the validator client and released") || !strings.Contains(msg, "slashing-protection history of 1 key recorded") {
		t.Errorf("pod a's sidecar did not say it released with the history of its key: %s", lastLines(msg, 10))
	}
	if left, err := vcA.ListKeystores(ctx); err != nil || len(left) != 0 {
		t.Fatalf("client A lists %+v (%v) after its sidecar stopped, want no key", left, err)
	}
	// What A signed: its database keeps the history after the DELETE.
	stA, spA, err := vcA.DeleteKeystores(ctx, keyA)
	if err != nil || stA[0].Status != "not_active" {
		t.Fatalf("DELETE again of a's key in client A: %+v %v, want not_active (deleted, history kept)", stA, err)
	}
	icA, err := lodestartest.ParseInterchange(spA)
	if err != nil || icA.Key(keyA) == nil {
		t.Fatalf("client A's history of %s: %v: %.300s", keyA, err, spA)
	}
	signedA := marks(icA.Key(keyA))
	if !signedA.attested {
		t.Fatalf("client A's history of validator %d has no attestation", index[keyA])
	}
	step("pod a's sidecar stopped at SIGTERM (epochs %d..%d): key out of client A, released with A's history (%+v)", stopFrom, stopA, signedA)

	// b gets both keys once the gate lets them through.
	scB := startSync(t, srv, "b", 2, vcB)
	got := waitKeys(ctx, t, vcB, 2, time.Duration(quietEpochs+5)*chain.EpochDuration())
	reuse := chain.Epoch()
	if reuse < stopFrom+quietEpochs {
		t.Errorf("keys in client B in epoch %d after a stop in epoch %d: fewer than %d quiet epochs can have passed", reuse, stopFrom, quietEpochs)
	}
	if !(contains(got, keyA) && contains(got, keyX)) {
		t.Fatalf("client B got %v, want %s and %s", got, keyA, keyX)
	}
	step("pod b's sidecar pushed both keys into client B in epoch %d", reuse)
	for _, l := range grepLines(srv.stderr.String(), "still signing", "cleared for reuse") {
		t.Logf("  server: %s", l)
	}
	liveB, err := chain.WaitLive(ctx, reuse, 8, index[keyA], index[keyX])
	if err != nil {
		t.Fatal(err)
	}
	step("both keys live from client B in epoch %d", liveB)

	msg, err = scB.stop(syscall.SIGTERM, 90*time.Second)
	if err != nil {
		t.Fatalf("pod b's sidecar at SIGTERM: %v\n%s", err, msg)
	}
	if !strings.Contains(msg, "slashing-protection history of 2 keys recorded") {
		t.Errorf("pod b's sidecar did not say it released with the history of both keys: %s", lastLines(msg, 10))
	}
	// B's database after the sidecar's DELETE: its own history plus what
	// the sidecar imported.
	st, sp, err := vcB.DeleteKeystores(ctx, keyA, keyX)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range st {
		if s.Status != "not_active" {
			t.Errorf("DELETE again of %s in client B: %s %s, want not_active (deleted, history kept)", []string{keyA, keyX}[i], s.Status, s.Message)
		}
	}
	ic, err := lodestartest.ParseInterchange(sp)
	if err != nil {
		t.Fatalf("client B's interchange: %v: %.300s", err, sp)
	}
	if ic.Metadata.GenesisValidatorsRoot != chain.GenesisValidatorsRoot {
		t.Errorf("client B's interchange is for %s, want %s", ic.Metadata.GenesisValidatorsRoot, chain.GenesisValidatorsRoot)
	}
	// a's key: watermarks at or above everything A signed, below anything
	// B can have signed itself (B got the key in epoch reuse).
	hA := ic.Key(keyA)
	if hA == nil || !hasTarget(hA, func(src, tgt uint64) bool { return tgt >= signedA.target && tgt < reuse }) ||
		!hasTarget(hA, func(src, tgt uint64) bool { return src >= signedA.source && tgt < reuse }) {
		t.Errorf("client B holds no attestation watermark of validator %d at or above A's (source %d, target %d) and below epoch %d: %+v",
			index[keyA], signedA.source, signedA.target, reuse, hA)
	}
	if signedA.proposed && (hA == nil || !hasBlock(hA, signedA.slot, reuse*uint64(chain.SlotsPerEpoch)-1)) {
		t.Errorf("client B holds no block watermark of validator %d at or above A's slot %d: %+v", index[keyA], signedA.slot, hA)
	}
	// x's key: the release-time watermarks (a block at the release slot, an
	// attestation with source = target = the release epoch).
	spe := uint64(chain.SlotsPerEpoch)
	hx := ic.Key(keyX)
	if hx == nil || !hasTarget(hx, func(src, tgt uint64) bool { return src == tgt && tgt >= xFrom/spe && tgt <= xTo/spe }) {
		t.Errorf("client B holds no release-time attestation watermark (epoch %d..%d) for validator %d: %+v", xFrom/spe, xTo/spe, index[keyX], hx)
	}
	if hx == nil || !hasBlock(hx, xFrom, xTo) {
		t.Errorf("client B holds no release-time block watermark (slot %d..%d) for validator %d: %+v", xFrom, xTo, index[keyX], hx)
	}
	step("pod b's sidecar released at SIGTERM; client B holds watermarks covering A's history for %d (%+v) and the release-time watermarks for %d (%+v)",
		index[keyA], marks(hA), index[keyX], marks(hx))
	logB, _ := os.ReadFile(vcB.Log)
	if refusals := grepLines(ansi.ReplaceAllString(string(logB), ""), "code=ERR_INVALID_ATTESTATION", "code=ERR_INVALID_BLOCK"); len(refusals) > 0 {
		step("client B refused %d votes behind the imported watermarks, first: %s", len(refusals), refusals[0])
	}

	nobodySlashed(ctx, t, chain)
}

// sidecar is a running `pkmanager sync`.
type sidecar struct {
	pod  string
	cmd  *exec.Cmd
	out  *testbin.Buffer
	done chan error
}

// startSync runs `pkmanager sync` for pod (n keys) beside client vc.
func startSync(t *testing.T, srv *server, pod string, n int, vc *lodestartest.ValidatorClient) *sidecar {
	t.Helper()
	cmd := exec.Command(binary, "sync", "--server", srv.grpcAddr, "--pod-name", pod, "--keys", strconv.Itoa(n),
		"--keymanager-url", vc.URL, "--keymanager-token-file", vc.TokenFile, "--interval", "2s", "--insecure-kdf",
		"--shutdown-timeout", "60s", "--log-format", "json")
	cmd.Env = testbin.Env()
	s := &sidecar{pod: pod, cmd: cmd, out: &testbin.Buffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = s.out, s.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- cmd.Wait() }()
	t.Cleanup(func() {
		s.kill()
		if t.Failed() {
			t.Logf("sidecar of pod %s:\n%s", pod, lastLines(s.out.String(), 40))
		}
	})
	return s
}

// stop sends sig and waits for the exit; it returns the output and the
// exit error.
func (s *sidecar) stop(sig syscall.Signal, wait time.Duration) (string, error) {
	if err := s.cmd.Process.Signal(sig); err != nil {
		return s.out.String(), err
	}
	select {
	case err := <-s.done:
		s.done <- err
		return s.out.String(), err
	case <-time.After(wait):
		_ = s.cmd.Process.Kill()
		return s.out.String(), fmt.Errorf("sidecar of pod %s still running %s after %s", s.pod, wait, sig)
	}
}

// kill kills the sidecar at once (SIGKILL) unless it has exited.
func (s *sidecar) kill() {
	select {
	case err := <-s.done:
		s.done <- err
		return
	default:
	}
	_ = s.cmd.Process.Kill()
	err := <-s.done
	s.done <- err
}

// waitKeys waits until vc lists n keys and returns them (0x lower-case hex).
func waitKeys(ctx context.Context, t *testing.T, vc *lodestartest.ValidatorClient, n int, within time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		list, err := vc.ListKeystores(ctx)
		if err == nil && len(list) == n {
			out := make([]string, n)
			for i, k := range list {
				out[i] = strings.ToLower(k.ValidatingPubkey)
			}
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("client %s lists %+v (%v) after %s, want %d keys", vc.URL, list, err, within, n)
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

func balances(ctx context.Context, t *testing.T, chain *lodestartest.Chain, keys ...string) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, k := range keys {
		v, err := chain.Validator(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		out[k] = v.Balance
	}
	return out
}

func contains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

func hasTarget(h *lodestartest.InterchangeKey, ok func(src, tgt uint64) bool) bool {
	for _, a := range h.SignedAttestations {
		if ok(uint64(a.SourceEpoch), uint64(a.TargetEpoch)) {
			return true
		}
	}
	return false
}

func hasBlock(h *lodestartest.InterchangeKey, from, to uint64) bool {
	for _, b := range h.SignedBlocks {
		if uint64(b.Slot) >= from && uint64(b.Slot) <= to {
			return true
		}
	}
	return false
}

// signed is the highest of an interchange entry.
type signed struct {
	attested, proposed   bool
	source, target, slot uint64
}

func marks(h *lodestartest.InterchangeKey) signed {
	var m signed
	if h == nil {
		return m
	}
	for _, a := range h.SignedAttestations {
		m.attested = true
		m.source, m.target = max(m.source, uint64(a.SourceEpoch)), max(m.target, uint64(a.TargetEpoch))
	}
	for _, b := range h.SignedBlocks {
		m.proposed = true
		m.slot = max(m.slot, uint64(b.Slot))
	}
	return m
}

// ansi matches the colour codes of Lodestar's log.
var ansi = regexp.MustCompile(`\x1b\[[0-9;]*m`)

// grepLines returns the lines of text containing any of the strings.
func grepLines(text string, subs ...string) []string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		for _, s := range subs {
			if strings.Contains(line, s) {
				out = append(out, strings.TrimSpace(line))
				break
			}
		}
	}
	return out
}
