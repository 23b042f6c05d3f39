package server

import (
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/pkmanager/pkmanager/internal/kube/auth"
)

type addrListener struct {
	net.Listener
	addr net.Addr
}

func (l addrListener) Addr() net.Addr { return l.addr }

// TestAuthNoneOnlyOnLoopback: without authentication the server refuses
// non-loopback listeners, also in dev mode unless InsecureListenAny says
// otherwise (checked without binding one).
func TestAuthNoneOnlyOnLoopback(t *testing.T) {
	lo := addrListener{addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8000}}
	any := addrListener{addr: &net.TCPAddr{IP: net.IPv4zero, Port: 8080}}
	for _, tc := range []struct {
		name      string
		dev, any  bool
		grpc, web net.Listener
		auth      bool
		ok        bool
	}{
		{"loopback", false, false, lo, lo, false, true},
		{"all interfaces", false, false, lo, any, false, false},
		{"all interfaces, dev", true, false, any, any, false, false},
		{"all interfaces, dev, insecure-listen-any", true, true, any, lo, false, true},
		{"all interfaces, insecure-listen-any without dev", false, true, any, any, false, false},
		{"all interfaces, token auth", false, false, any, any, true, true},
	} {
		s := &Server{opts: Options{Dev: tc.dev, InsecureListenAny: tc.any}, grpcLis: tc.grpc, httpLis: tc.web, logger: slog.New(slog.DiscardHandler)}
		if tc.auth {
			s.kube = &kubeParts{gate: &auth.Gate{}}
		}
		err := s.checkListeners()
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
		if err != nil && !strings.Contains(err.Error(), "loopback") {
			t.Errorf("%s: unclear error %v", tc.name, err)
		}
	}
}

func TestLoopbackAddr(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.0.1:8000": true, "[::1]:0": true, "localhost:80": true,
		":8000": false, "0.0.0.0:8000": false, "10.0.0.1:80": false, "pkmanager:80": false, "nonsense": false} {
		if got := loopbackAddr(addr); got != want {
			t.Errorf("loopbackAddr(%q) = %v", addr, got)
		}
	}
}
