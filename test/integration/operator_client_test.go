package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
