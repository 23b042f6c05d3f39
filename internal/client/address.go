package client

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// DefaultPort is the server's gRPC port.
const DefaultPort = "8000"

// CheckAddress checks a --server value: host:port of the server's gRPC
// listener. A URL (http://host:8000, grpc://host:8000) or a missing port is
// refused with what is expected, before anything is sent.
func CheckAddress(addr string) error {
	if addr == "" {
		return fmt.Errorf("no server address: give --server host:port (the gRPC port, %s by default)", DefaultPort)
	}
	if scheme, rest, ok := strings.Cut(addr, "://"); ok {
		hint := ""
		if strings.EqualFold(scheme, "https") || strings.EqualFold(scheme, "grpcs") {
			hint = "; for TLS give --ca-file"
		}
		return fmt.Errorf("--server %q: want host:port of the gRPC port without a scheme (e.g. --server %s)%s",
			addr, strings.TrimSuffix(rest, "/"), hint)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--server %q: want host:port of the gRPC port (e.g. 127.0.0.1:%s): %w", addr, DefaultPort, err)
	}
	if host == "" {
		return fmt.Errorf("--server %q: no host (e.g. 127.0.0.1:%s)", addr, DefaultPort)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("--server %q: port %q is not a number from 1 to 65535", addr, port)
	}
	if strings.ContainsAny(host, "/?#@ ") {
		return fmt.Errorf("--server %q: %q is not a host name or address", addr, host)
	}
	return nil
}

// notGRPC reports whether a connection error says the peer does not speak
// plaintext gRPC: an HTTP/1 server (the server's HTTP port) or a TLS
// listener answers the HTTP/2 preface with bytes that are no HTTP/2 frame.
func notGRPC(msg string) bool {
	return strings.Contains(msg, "frame too large") || strings.Contains(msg, "server preface") ||
		strings.Contains(msg, "malformed HTTP") || strings.Contains(msg, "tls: first record does not look like a TLS handshake")
}
