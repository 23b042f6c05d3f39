package httpapi

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A client that stops reading a response is cut off once a write has
// waited WriteStall for it: the handler ends instead of waiting forever.
func TestStalledClientIsCutOff(t *testing.T) {
	st := openBolt(t, t.TempDir())
	t.Cleanup(func() { st.Close() })
	// About 15 MB of listing: more than the socket buffers hold.
	if err := st.AddKeys(context.Background(), newKeys(0xa0, 0, 50_000), store.StateAvailable, fixtureNow); err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	h := NewHandler(Config{Allocator: &fakeAllocator{}, Keys: st, WriteStall: 300 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	c, err := d.DialContext(t.Context(), "tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, "GET /api/v1/keys HTTP/1.1\r\nHost: pkmanager\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Minute))
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("status line %q, %v", line, err)
	}
	// The client reads no more.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(logs.String(), "response failed after it started") {
		if time.Now().After(deadline) {
			t.Fatalf("the handler still writes to a client that stopped reading 30 s ago (write stall 300ms); log:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "i/o timeout") {
		t.Errorf("the response ended for another reason than the write deadline:\n%s", logs.String())
	}
}
