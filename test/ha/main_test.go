// Package ha runs several real pkmanager server processes against one
// PostgreSQL database (PKM_TEST_POSTGRES; scripts/test.sh starts one) and
// checks that no key is ever live in two pods, also while replicas are
// killed; and drives backup, restore and migrate-store through the binary.
// Everything runs on loopback.
package ha

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/test/testbin"
)

var binary string

// testKEK is the key-encryption key every replica of a test shares.
const testKEK = "6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b"

func TestMain(m *testing.M) { os.Exit(testbin.Main(m, &binary)) }

// env is the test's environment without PKM_* and POD_* variables, plus
// extra.
func env(extra ...string) []string { return testbin.Env(extra...) }

type syncBuffer = testbin.Buffer

func freeAddr(t testing.TB) string { return testbin.FreeAddr(t) }

// process is one `pkmanager serve` on fixed loopback ports.
type process struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan error
}

var bannerReady = regexp.MustCompile(`(?m)^  reuse delay:`)

// serve starts `pkmanager serve --dev` with args and waits for its banner.
func serve(t testing.TB, dataDir, grpcAddr, httpAddr string, extraEnv []string, args ...string) (*process, error) {
	all := append([]string{"serve", "--dev", "--data-dir", dataDir, "--grpc-addr", grpcAddr, "--http-addr", httpAddr,
		"--log-format", "json", "--reuse-delay", "0s"}, args...)
	cmd := exec.Command(binary, all...)
	cmd.Env = env(append([]string{"PKM_KEK=" + testKEK}, extraEnv...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p := &process{cmd: cmd, stderr: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		var out strings.Builder
		sent := false
		for sc.Scan() {
			out.WriteString(sc.Text() + "\n")
			if !sent && bannerReady.MatchString(out.String()) {
				ready <- true
				sent = true
			}
		}
		if !sent {
			ready <- false
		}
	}()
	go func() { p.done <- cmd.Wait() }()
	select {
	case ok := <-ready:
		if !ok {
			<-p.done
			return nil, fmt.Errorf("server did not start:\n%s", tail(p.stderr.String(), 3000))
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-p.done
		return nil, fmt.Errorf("server did not start within 60s:\n%s", tail(p.stderr.String(), 3000))
	}
	return p, nil
}

// kill sends SIGKILL and waits for the process to go.
func (p *process) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits; it returns the exit error.
func (p *process) stop(timeout time.Duration) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		return err
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("no exit within %s of SIGTERM", timeout)
	}
}

// run runs a pkmanager command and returns its combined output.
func run(ctx context.Context, extraEnv []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = env(extraEnv...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
