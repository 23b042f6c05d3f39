package integration

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// A pod name is never guessed: an empty --pod-name and a missing one fail
// (nothing is minted for the machine's hostname) unless the hostname
// fallback is asked for.
func TestPodNameIsNotGuessed(t *testing.T) {
	s := startServer(t, t.TempDir())
	work := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"empty --pod-name", []string{"--pod-name", ""}, "--pod-name is empty"},
		{"no pod name", nil, "no pod name: give --pod-name, set $POD_NAME"},
	} {
		for _, command := range []string{"request", "release"} {
			args := append([]string{command, "--server", s.grpcAddr}, tc.args...)
			if command == "request" {
				args = append(args, "--keys", "1", "--insecure-kdf", "--out", filepath.Join(work, "k"))
			}
			out, err := run(t, args...)
			if err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("%s with %s: %v, want an error saying %q:\n%s", command, tc.name, err, tc.want, out)
			}
		}
	}
	if a := s.assignments(t); len(a) != 0 {
		t.Fatalf("refused requests assigned keys: %v", a)
	}
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	out := mustRun(t, "request", "--server", s.grpcAddr, "--pod-name-from-hostname", "--keys", "1", "--insecure-kdf", "--out", filepath.Join(work, "h"))
	if !strings.Contains(out, "pod "+host+" holds 1 key ") {
		t.Fatalf("request --pod-name-from-hostname:\n%s", out)
	}
}

// What a request prints: its result once, counts that name what they count,
// errors without repeated wording or gRPC code names.
func TestRequestOutput(t *testing.T) {
	s := startServer(t, t.TempDir())
	dir := filepath.Join(t.TempDir(), "keys")
	const uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
	out := mustRun(t, "request", "--server", s.grpcAddr, "--pod-name", "u-0", "--pod-uid", uid, "--keys", "2", "--insecure-kdf", "--out", dir)
	if !strings.Contains(out, "pod u-0 holds 2 keys (recycled 0, minted 2): 2 keystores written, 0 kept, 0 keystores removed") {
		t.Errorf("first request:\n%s", out)
	}
	if strings.Contains(out, "keystores ready") || strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Errorf("the result is printed more than once:\n%s", out)
	}

	// Another pod into the same directory: u-0's keystores and their
	// password files go, counted apart.
	out = mustRun(t, "request", "--server", s.grpcAddr, "--pod-name", "u-1", "--keys", "1", "--insecure-kdf", "--out", dir)
	if !strings.Contains(out, "1 keystore written, 0 kept, 2 keystores and 2 password files removed") ||
		strings.Count(out, "  removed keystore: ") != 2 || strings.Count(out, "  removed password file: ") != 2 {
		t.Errorf("request of another pod into the directory:\n%s", out)
	}

	out, err := run(t, "request", "--server", s.grpcAddr, "--pod-name", "u-0", "--pod-uid", strings.Replace(uid, "0f", "1f", 1),
		"--keys", "2", "--insecure-kdf", "--out", filepath.Join(t.TempDir(), "k"))
	if err == nil || !strings.Contains(out, "held under pod UID "+uid) {
		t.Fatalf("request under another UID: %v\n%s", err, out)
	}
	if n := strings.Count(out, "pod u-0"); n != 1 {
		t.Errorf("the error names the pod %d times:\n%s", n, out)
	}
	for _, code := range []string{"FailedPrecondition", "InvalidArgument", "Code("} {
		if strings.Contains(out, code) {
			t.Errorf("the error shows the gRPC code %s:\n%s", code, out)
		}
	}
}

// While a request waits for its deposits it reports progress (log lines
// when not on a terminal); Ctrl-C exits 130 and says what the server holds
// for the pod; the same command again finishes.
func TestRequestProgressAndInterrupt(t *testing.T) {
	// A deposit waits for a second block, which an idle dev chain makes 12 s
	// after the first: far longer than a progress interval.
	s := startServer(t, t.TempDir(), "--dev-block-time", "1s", "--confirmations", "2")
	dir := t.TempDir()
	out := mustRun(t, "request", "--server", s.grpcAddr, "--pod-name", "slow-0", "--keys", "2", "--insecure-kdf",
		"--out", filepath.Join(dir, "a"), "--progress-interval", "300ms")
	if !strings.Contains(out, "pod slow-0: waiting for deposits: 0 of 2 keys ready; 2 deposits: ") ||
		!strings.Contains(out, "pod slow-0 holds 2 keys (recycled 0, minted 2)") {
		t.Fatalf("no progress while the deposits were waited for:\n%s", out)
	}

	cmd := exec.Command(binary, "request", "--server", s.grpcAddr, "--pod-name", "slow-1", "--keys", "3", "--insecure-kdf",
		"--out", filepath.Join(dir, "b"), "--progress-interval", "200ms")
	cmd.Env = cleanEnv()
	var output syncBuffer
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(output.String(), "waiting for deposits"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no progress line within 20s:\n%s", output.String())
		}
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("interrupted request: %v, want exit code 130:\n%s", err, output.String())
	}
	// A block may land between the progress line and the signal: how many
	// keys still wait may vary, not the rest.
	want := regexp.MustCompile(`interrupted while the server prepared the keys: the server holds 3 keys: [^;]*for pod slow-1[^;]*; ` +
		`0 keystores written in ` + regexp.QuoteMeta(filepath.Join(dir, "b")) + `; run the same command again to finish`)
	if !want.MatchString(output.String()) {
		t.Fatalf("interrupted request says:\n%s\nwant %s", output.String(), want)
	}
	out = mustRun(t, "request", "--server", s.grpcAddr, "--pod-name", "slow-1", "--keys", "3", "--insecure-kdf", "--out", filepath.Join(dir, "b"))
	if !strings.Contains(out, "pod slow-1 holds 3 keys (recycled 0, minted 0): 3 keystores written") {
		t.Fatalf("the same command again:\n%s", out)
	}
}
