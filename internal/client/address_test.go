package client

import (
	"strings"
	"testing"
)

func TestCheckAddress(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:8000", "pkmanager.validators.svc:8000", "[::1]:8000", "localhost:1"} {
		if err := CheckAddress(ok); err != nil {
			t.Errorf("CheckAddress(%q) = %v", ok, err)
		}
	}
	for addr, want := range map[string]string{
		"":                     "no server address",
		"http://host:8000":     "without a scheme (e.g. --server host:8000)",
		"https://host:8000/":   "for TLS give --ca-file",
		"grpc://host:8000":     "without a scheme",
		"host":                 "missing port",
		":8000":                "no host",
		"host:0":               "not a number from 1 to 65535",
		"host:99999":           "not a number from 1 to 65535",
		"host:grpc":            "not a number",
		"user@host:8000":       "is not a host name",
		"host/path:8000":       "is not a host name",
		"127.0.0.1:8000:8000":  "too many colons",
		"dns:///pkmanager:800": "without a scheme",
	} {
		err := CheckAddress(addr)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckAddress(%q) = %v, want %q", addr, err, want)
		}
	}
	if _, err := New("http://x:1", Options{}); err == nil {
		t.Error("New accepted a URL")
	}
}
