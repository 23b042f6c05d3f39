//go:build unix

package httpapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

// chromiumOrSkip returns the chromium binary. Without one the test is
// skipped, except in CI (CI=true), which installs it and must run the test.
func chromiumOrSkip(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err == nil {
		return bin
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("chromium is not installed but CI=true: the browser test must run in CI (apt-get install -y chromium): %v", err)
	}
	t.Skip("chromium is not installed; skipping the browser test (install it with apt-get install -y chromium; in CI, with CI=true, it is required)")
	return ""
}

// runChromium runs headless chromium with args plus url and returns stdout.
// The browser runs in its own process group, killed as a whole on timeout.
func runChromium(t *testing.T, bin, url string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	base := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--user-data-dir=" + t.TempDir(),
	}
	cmd := exec.CommandContext(ctx, bin, append(append(base, args...), url)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\nstderr:\n%s", args, err, tail(stderr.String(), 3000))
	}
	return stdout.Bytes()
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// TestAssignmentsInChromium renders /assignments from a real bbolt store in
// headless Chromium and checks that the DOM shows each pod with each of its
// public keys in one table row.
func TestAssignmentsInChromium(t *testing.T) {
	bin := chromiumOrSkip(t)
	s := openBolt(t, t.TempDir())
	defer s.Close()
	pods := []string{"validator-0", "validator-1", "validator-2"}
	fillAssigned(t, s, 0xc0, pods, 3, fixtureNow)
	held := map[string][]string{}
	for _, pod := range pods {
		err := s.ListKeys(context.Background(), store.ListOptions{Pod: pod}, func(k store.Key) error {
			held[pod] = append(held[pod], k.Pubkey.String())
			return nil
		})
		if err != nil || len(held[pod]) != 3 {
			t.Fatalf("pod %s holds %v (%v)", pod, held[pod], err)
		}
	}

	srv := httptest.NewServer(NewHandler(Config{Allocator: &fakeAllocator{}, Keys: s, Logger: quietLogger(t)}))
	defer srv.Close()
	url := srv.URL + "/assignments"

	dom := runChromium(t, bin, url, "--dump-dom")
	if !bytes.Contains(dom, []byte("Key assignments")) {
		t.Fatalf("chromium did not render the page; DOM:\n%s", tail(string(dom), 2000))
	}
	assertNoSecret(t, "DOM", dom)
	_, rows := parsePage(t, string(dom))
	if len(rows) != 9 {
		t.Errorf("DOM table has %d rows, want 9", len(rows))
	}
	for _, pod := range pods {
		for _, key := range held[pod] {
			if !slices.ContainsFunc(rows, func(r pageRow) bool { return len(r) >= 2 && r[0] == pod && r[1] == key }) {
				t.Errorf("no table row shows pod %s with key %s", pod, key)
			}
		}
	}

	// A screenshot, for a human to look at with HTTPAPI_SCREENSHOT=file.png.
	png := filepath.Join(t.TempDir(), "assignments.png")
	runChromium(t, bin, url, "--screenshot="+png, "--window-size=1280,800", "--hide-scrollbars")
	b, err := os.ReadFile(png)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	if !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) || len(b) < 10_000 {
		t.Errorf("screenshot is not a plausible PNG (%d bytes)", len(b))
	}
	if dst := os.Getenv("HTTPAPI_SCREENSHOT"); dst != "" {
		if err := copyFile(png, dst); err != nil {
			t.Error(err)
		}
		t.Logf("screenshot written to %s", dst)
	}
}

func copyFile(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, out.Close()) }()
	_, err = io.Copy(out, in)
	return err
}
