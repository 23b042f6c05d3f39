package lodestar

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/keystore"
	"github.com/pkmanager/pkmanager/internal/lodestartest"
)

// importOutsiders puts keys of interop indices beyond the chain's genesis
// validators into the server's pool: valid BLS keys that no validator of
// the chain has, so the beacon node never reports them (to pkmanager they
// are keys whose deposits it has not seen yet: never active).
func (s *server) importOutsiders(t *testing.T, chain *lodestartest.Chain, indices ...int) []string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "outsiders")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	var pks []string
	for _, i := range indices {
		if i < chain.ValidatorCount {
			t.Fatalf("interop key %d is a genesis validator of the chain", i)
		}
		sk := lodestartest.InteropSecretKey(i)
		ks, err := keystore.Encrypt(sk.Bytes(), lodestartest.KeystorePassword, sk.PublicKey(), "", keystore.Options{KDF: keystore.PBKDF2})
		if err != nil {
			t.Fatal(err)
		}
		b, err := ks.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("keystore-%d.json", i)), b, 0o600); err != nil {
			t.Fatal(err)
		}
		pks = append(pks, lodestartest.InteropPubkey(i))
	}
	mustRun(t, "import", "--server", s.grpcAddr, "--keystores", dir, "--password-file", chain.PasswordFile)
	return pks
}

// waitLog waits until the server's log holds substr.
func (s *server) waitLog(t *testing.T, substr string, within time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(within); !strings.Contains(s.stderr.String(), substr); {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the server's log after %s", substr, within)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
