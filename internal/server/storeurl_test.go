package server

import (
	"context"
	"strings"
	"testing"

	"github.com/pkmanager/pkmanager/internal/redact"
)

// No message shows the password of a store URL, also when the URL does not
// parse or the database cannot be reached.
func TestStoreURLPasswordNeverShown(t *testing.T) {
	const pw = "Sup3rSecretPw"
	for _, u := range []string{
		"postgres://pkm:" + pw + "@127.0.0.1:1/pk?connect_timeout=1",
		"postgres://pkm@127.0.0.1:1/pk?connect_timeout=1&password=" + pw,
		"postgres://pkm:" + pw + "@[::1/pk",
		"postgres://pkm:" + pw + "@host:notaport/pk",
		"mysql://pkm:" + pw + "@host/pk",
	} {
		if r := redact.URL(u); strings.Contains(r, pw) {
			t.Errorf("redact.URL shows the password: %s", r)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5e9)
		_, err := OpenStore(ctx, u, nil)
		cancel()
		if err == nil {
			t.Fatalf("OpenStore(%s) succeeded", redact.URL(u))
		}
		if strings.Contains(err.Error(), pw) {
			t.Errorf("OpenStore error shows the password: %v", err)
		}
	}
}
