// Package lodestartest runs real Lodestar 1.5.1 consensus clients on loopback
// for tests: a single-node dev chain (`lodestar dev`: interop genesis
// validators, minimal preset, Altair from genesis, its own validator client
// running a chosen index range) and validator clients that start with no keys
// and the standard keymanager API on. It has Go helpers for the parts of the
// beacon API and the keymanager API the tests assert on.
//
// The install comes from scripts/lodestar/install.sh: $PKM_LODESTAR, or the
// cache directory that script uses for the pinned lock file. Without it tests
// skip, except under CI=true where they fail (Require).
//
// Every process runs in its own process group with its output in a log file
// in the test's temporary directory; the group is killed at t.Cleanup and the
// logs' tails are printed when the test failed. Every wait is bounded.
//
// Lodestar 1.5.1 facts the helpers rely on (more on each helper):
//   - no Bellatrix or later fork from genesis: `lodestar dev` has no execution
//     engine (its --execution.engineMock does not know the interop genesis
//     payload and answers "Execution Layer Syncing"), so the chain runs Altair;
//   - liveness is GET /eth/v1/validator/liveness?epoch=E&indices=I (the
//     pre-standard form; the standard POST .../liveness/{epoch} is 404) and
//     only for epochs current-1..current+1;
//   - never set a variable whose name starts with LODESTAR_ in the clients'
//     environment: the CLI reads those as flags (they are removed here).
package lodestartest

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Version is the Lodestar version the install script pins.
const Version = "1.5.1"

// KeystorePassword is the password of the interop keystores `lodestar dev
// --dumpTestnetFiles` writes.
const KeystorePassword = "test_password"

// marker is the file scripts/lodestar/install.sh writes last.
const marker = ".pkm-lodestar-complete"

// cliPath is the Lodestar CLI inside an install directory.
func cliPath(dir string) string {
	return filepath.Join(dir, "node_modules", "@chainsafe", "lodestar", "lib", "index.js")
}

// Dir returns the Lodestar install directory, or "" with the reason it is
// missing: $PKM_LODESTAR if set, else the cache directory of
// scripts/lodestar/install.sh (sha256 of the lock file, the install recipe
// and the Node.js major version).
func Dir() (string, string) {
	if _, err := exec.LookPath("node"); err != nil {
		return "", "no node on PATH (Lodestar needs Node.js 20)"
	}
	if d := os.Getenv("PKM_LODESTAR"); d != "" {
		if _, err := os.Stat(cliPath(d)); err != nil {
			return "", fmt.Sprintf("PKM_LODESTAR=%s has no Lodestar CLI (%s)", d, cliPath(d))
		}
		return d, ""
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err.Error()
	}
	out, err := exec.Command("node", "-p", `process.versions.node.split(".")[0]`).Output()
	if err != nil {
		return "", fmt.Sprintf("node -p process.versions.node: %v", err)
	}
	h := sha256.New()
	for _, f := range []string{"lodestar-v1.5.1.yarn.lock", "lodestar-install.sh"} {
		b, err := os.ReadFile(filepath.Join(root, "scripts", "lodestar", f))
		if err != nil {
			return "", err.Error()
		}
		h.Write(b)
	}
	fmt.Fprintf(h, "node%s\n", strings.TrimSpace(string(out)))
	cache := os.Getenv("PKM_LODESTAR_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", err.Error()
			}
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "pkmanager", "lodestar")
	}
	d := filepath.Join(cache, hex.EncodeToString(h.Sum(nil))[:16])
	if _, err := os.Stat(filepath.Join(d, marker)); err != nil {
		return "", fmt.Sprintf("no Lodestar %s installed in %s: run scripts/lodestar/install.sh (cold 1.5-11 min)", Version, d)
	}
	return d, ""
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module github.com/pkmanager/pkmanager\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("pkmanager's go.mod not found above the working directory")
		}
		dir = parent
	}
}

// SkipOrFail is what a test does without Lodestar: skip, or fail under
// CI=true.
func SkipOrFail(tb testing.TB, reason string) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatalf("Lodestar missing under CI=true: %s", reason)
	}
	tb.Skipf("Lodestar missing: %s", reason)
}

// Require returns the install directory, or skips the test (fails it under
// CI=true) without one.
func Require(tb testing.TB) string {
	tb.Helper()
	d, why := Dir()
	if why != "" {
		SkipOrFail(tb, why)
	}
	return d
}

// proc is a started Lodestar process in its own process group.
type proc struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	once sync.Once
}

// startNode runs `node <cli> args...` in dir with its output in logPath.
func startNode(install, dir, name, logPath string, args ...string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fmt.Fprintf(f, "# node %s %s\n", cliPath(install), strings.Join(args, " "))
	cmd := exec.Command("node", append([]string{cliPath(install)}, args...)...)
	cmd.Dir = dir
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = f, f
	// Own process group (killed as a whole); killed too if this test binary dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	return p, nil
}

// cleanEnv is this process's environment without LODESTAR_* variables and
// without colours in the logs.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(strings.ToUpper(kv), "LODESTAR_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "NO_COLOR=1", "FORCE_COLOR=0")
}

// exited reports whether the process has ended (and how).
func (p *proc) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// stop sends SIGTERM to the group, waits up to grace, then SIGKILLs the group.
func (p *proc) stop(grace time.Duration) {
	if p == nil {
		return
	}
	p.once.Do(func() {
		pgid := p.cmd.Process.Pid
		if grace > 0 {
			_ = syscall.Kill(-pgid, syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(grace):
			}
		}
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
		}
	})
}

var ansi = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]`)

// tail returns the last n lines of a log, without colours and without the
// "    at ..." lines of JavaScript stack traces.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		l := ansi.ReplaceAllString(sc.Text(), "")
		if strings.HasPrefix(strings.TrimSpace(l), "at ") {
			continue
		}
		lines = append(lines, l)
		if len(lines) > 4*n {
			lines = lines[len(lines)-n:]
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// logOnFailure registers a cleanup that prints the tails of logs if the test
// failed. Register it after the cleanups that stop the processes (cleanups
// run last-registered first), so it prints once they are stopped.
func logOnFailure(tb testing.TB, p *proc) {
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("--- %s log (%s), last lines:\n%s", p.name, p.log, tail(p.log, 60))
		}
	})
}

// freePorts returns n distinct free TCP ports on 127.0.0.1 (also free for
// UDP, as Lodestar's p2p port is both).
func freePorts(n int) ([]int, error) {
	var closers []func()
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	var out []int
	for len(out) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		closers = append(closers, func() { l.Close() })
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		closers = append(closers, func() { u.Close() })
		out = append(out, port)
	}
	return out, nil
}

// addrInUse reports whether a log says a listen address was taken (a port
// picked by freePorts was taken by someone else before Lodestar bound it).
func addrInUse(logPath string) bool {
	b, _ := os.ReadFile(logPath)
	return bytes.Contains(b, []byte("EADDRINUSE"))
}
