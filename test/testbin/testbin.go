// Package testbin holds what the end-to-end test suites share: building the
// real pkmanager binary once, a clean environment for the processes they
// start, and small helpers for output and loopback ports.
package testbin

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Main builds the pkmanager binary into a temporary directory, stores its
// path in *binary, runs the tests and removes the directory. Call it from
// TestMain: os.Exit(testbin.Main(m, &binary)).
func Main(m *testing.M, binary *string) int {
	dir, err := os.MkdirTemp("", "pkm-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	*binary = filepath.Join(dir, "pkmanager")
	build := exec.Command("go", "build", "-o", *binary, "github.com/pkmanager/pkmanager/cmd/pkmanager")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build pkmanager:", err)
		return 1
	}
	return m.Run()
}

// Env is the test process's environment without PKM_* variables and
// POD_NAME/POD_UID, plus extra: the commands see only what a test passes.
func Env(extra ...string) []string {
	var out []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "PKM_") && !strings.HasPrefix(e, "POD_NAME=") && !strings.HasPrefix(e, "POD_UID=") {
			out = append(out, e)
		}
	}
	return append(out, extra...)
}

// Buffer is a bytes buffer safe for concurrent writes (a process's output).
type Buffer struct {
	mu sync.Mutex
	sb strings.Builder
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sb.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sb.String()
}

// FreeAddr returns a loopback address that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
