package server

import (
	"testing"

	"github.com/pkmanager/pkmanager/internal/importer"
)

// The importer decides about derivation indices by the server's mnemonic
// binding: both must use one name.
func TestImportBindingName(t *testing.T) {
	if importer.BindMnemonic != bindMnemonic {
		t.Fatalf("importer reads binding %q, the server writes %q", importer.BindMnemonic, bindMnemonic)
	}
}
