//go:build unix

package httpapi

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// devtools drives one headless Chromium over the DevTools protocol on a
// pipe (--remote-debugging-pipe: Chromium reads NUL-terminated JSON
// messages on fd 3 and writes its own on fd 4), with one page attached.
type devtools struct {
	t   *testing.T
	cmd *exec.Cmd
	toChrome,
	fromChrome *os.File
	msgs    chan cdpMessage
	done    chan struct{}
	next    int
	session string
	stderr  bytes.Buffer
	// events are the events read while waiting for answers.
	events []cdpMessage
}

type cdpMessage struct {
	ID        int             `json:"id,omitempty"`
	Method    string          `json:"method,omitempty"`
	Params    json.RawMessage `json:"params,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	SessionID string          `json:"sessionId,omitempty"`
	Error     *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

// cdpTimeout bounds one DevTools command (a page load included).
const cdpTimeout = 60 * time.Second

// startDevtools starts Chromium with a page of width x height CSS pixels
// at device scale 1. It is stopped when the test ends.
func startDevtools(t *testing.T, bin string, width, height int) *devtools {
	t.Helper()
	chromeIn, toChrome, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	fromChrome, chromeOut, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	d := &devtools{t: t, toChrome: toChrome, fromChrome: fromChrome, msgs: make(chan cdpMessage, 64), done: make(chan struct{})}
	d.cmd = exec.Command(bin,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--hide-scrollbars", "--user-data-dir="+t.TempDir(),
		"--remote-debugging-pipe", "about:blank")
	d.cmd.ExtraFiles = []*os.File{chromeIn, chromeOut} // fd 3, fd 4
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	d.cmd.Stderr = &d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	chromeIn.Close()
	chromeOut.Close()
	go d.read()
	t.Cleanup(d.stop)

	var target struct {
		TargetID string `json:"targetId"`
	}
	d.call("", "Target.createTarget", map[string]any{"url": "about:blank"}, &target)
	var attached struct {
		SessionID string `json:"sessionId"`
	}
	d.call("", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &attached)
	d.session = attached.SessionID
	d.call(d.session, "Page.enable", nil, nil)
	d.call(d.session, "Emulation.setDeviceMetricsOverride", map[string]any{
		"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false,
	}, nil)
	return d
}

// read delivers Chromium's messages until the pipe closes.
func (d *devtools) read() {
	defer close(d.done)
	r := bufio.NewReaderSize(d.fromChrome, 1<<20)
	for {
		b, err := r.ReadBytes(0)
		if err != nil {
			return
		}
		var m cdpMessage
		if err := json.Unmarshal(b[:len(b)-1], &m); err != nil {
			continue
		}
		select {
		case d.msgs <- m:
		case <-time.After(cdpTimeout):
			return
		}
	}
}

// stop closes the browser and kills what is left of its process group.
func (d *devtools) stop() {
	msg, _ := json.Marshal(map[string]any{"id": 1 << 30, "method": "Browser.close"})
	_, _ = d.toChrome.Write(append(msg, 0))
	exited := make(chan struct{})
	go func() { _ = d.cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL) // helpers it left behind
	d.toChrome.Close()
	d.fromChrome.Close()
}

// call sends a command and decodes its result into out (unless nil),
// failing the test on an error or a timeout.
func (d *devtools) call(session, method string, params any, out any) {
	d.t.Helper()
	d.next++
	id := d.next
	req := map[string]any{"id": id, "method": method}
	if params != nil {
		req["params"] = params
	}
	if session != "" {
		req["sessionId"] = session
	}
	b, err := json.Marshal(req)
	if err != nil {
		d.t.Fatal(err)
	}
	if _, err := d.toChrome.Write(append(b, 0)); err != nil {
		d.t.Fatalf("devtools %s: %v\nstderr:\n%s", method, err, tail(d.stderr.String(), 3000))
	}
	timeout := time.After(cdpTimeout)
	for {
		select {
		case m := <-d.msgs:
			if m.ID != id {
				if m.Method != "" {
					d.events = append(d.events, m)
				}
				continue
			}
			if m.Error != nil {
				d.t.Fatalf("devtools %s: %d %s", method, m.Error.Code, m.Error.Message)
			}
			if out != nil {
				if err := json.Unmarshal(m.Result, out); err != nil {
					d.t.Fatalf("devtools %s: decode %s: %v", method, m.Result, err)
				}
			}
			return
		case <-d.done:
			d.t.Fatalf("devtools %s: chromium exited\nstderr:\n%s", method, tail(d.stderr.String(), 3000))
		case <-timeout:
			d.t.Fatalf("devtools %s: no answer in %v", method, cdpTimeout)
		}
	}
}

// waitEvent waits for the page's event named method.
func (d *devtools) waitEvent(method string) {
	d.t.Helper()
	for i, m := range d.events {
		if m.Method == method && m.SessionID == d.session {
			d.events = append(d.events[:i:i], d.events[i+1:]...)
			return
		}
	}
	timeout := time.After(cdpTimeout)
	for {
		select {
		case m := <-d.msgs:
			if m.Method == method && m.SessionID == d.session {
				return
			}
			if m.Method != "" {
				d.events = append(d.events, m)
			}
		case <-d.done:
			d.t.Fatalf("waiting for %s: chromium exited\nstderr:\n%s", method, tail(d.stderr.String(), 3000))
		case <-timeout:
			d.t.Fatalf("no %s in %v", method, cdpTimeout)
		}
	}
}

// navigate loads url and waits for its load event.
func (d *devtools) navigate(url string) {
	d.t.Helper()
	d.events = nil
	var res struct {
		ErrorText string `json:"errorText"`
	}
	d.call(d.session, "Page.navigate", map[string]any{"url": url}, &res)
	if res.ErrorText != "" {
		d.t.Fatalf("navigate %s: %s", url, res.ErrorText)
	}
	d.waitEvent("Page.loadEventFired")
}

// eval evaluates a JavaScript expression in the page (DevTools is not
// bound by the page's Content-Security-Policy) and decodes its value,
// which must be JSON-serialisable, into out.
func (d *devtools) eval(expr string, out any) {
	d.t.Helper()
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	d.call(d.session, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &res)
	if e := res.ExceptionDetails; e != nil {
		d.t.Fatalf("evaluate: %s %s", e.Text, e.Exception.Description)
	}
	if err := json.Unmarshal(res.Result.Value, out); err != nil {
		d.t.Fatalf("evaluate: decode %s: %v", res.Result.Value, err)
	}
}

// rect is a box in CSS pixels of the document (not the viewport).
type rect struct {
	X, Y, W, H float64
}

// screenshot captures the document's region r as a PNG, beyond the
// viewport if need be, and returns the file's bytes and decoded image.
func (d *devtools) screenshot(r rect) ([]byte, image.Image) {
	d.t.Helper()
	var res struct {
		Data string `json:"data"`
	}
	d.call(d.session, "Page.captureScreenshot", map[string]any{
		"format": "png", "captureBeyondViewport": true, "fromSurface": true,
		"clip": map[string]any{"x": r.X, "y": r.Y, "width": r.W, "height": r.H, "scale": 1},
	}, &res)
	b, err := base64.StdEncoding.DecodeString(res.Data)
	if err != nil {
		d.t.Fatalf("screenshot: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		d.t.Fatalf("screenshot is not a PNG: %v", err)
	}
	return b, img
}

// checkScreenshot fails unless img is the size of r (to a pixel of
// rounding) and shows something: at least minColors distinct colours.
func checkScreenshot(t *testing.T, name string, img image.Image, r rect, minColors int) {
	t.Helper()
	bounds := img.Bounds()
	if dw, dh := float64(bounds.Dx())-r.W, float64(bounds.Dy())-r.H; dw < -1.5 || dw > 1.5 || dh < -1.5 || dh > 1.5 {
		t.Errorf("screenshot %s is %dx%d, want the element's %.0fx%.0f", name, bounds.Dx(), bounds.Dy(), r.W, r.H)
	}
	colors := map[[4]uint32]bool{}
	for y := bounds.Min.Y; y < bounds.Max.Y && len(colors) < minColors; y++ {
		for x := bounds.Min.X; x < bounds.Max.X; x++ {
			r, g, b, a := img.At(x, y).RGBA()
			colors[[4]uint32{r, g, b, a}] = true
		}
	}
	if len(colors) < minColors {
		t.Errorf("screenshot %s has %d colours: blank, want at least %d", name, len(colors), minColors)
	}
}

func (r rect) String() string { return fmt.Sprintf("%.0fx%.0f at (%.0f,%.0f)", r.W, r.H, r.X, r.Y) }
