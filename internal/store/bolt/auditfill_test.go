package bolt

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/pkmanager/pkmanager/internal/store"
)

// TestAuditPagesFull: the audit trail, which only grows at its end, fills
// its pages instead of leaving each split page half empty (44% full with
// bbolt's default split, the largest bucket after keys and secrets once a
// 100,000-key store has made 9,000 claims).
func TestAuditPagesFull(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pk.db")
	s := openAt(t, path) // closed below, before the file is read
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 2000 {
		e := store.AuditEvent{Time: now, Action: store.AuditRelease, Pod: fmt.Sprintf("pod-%d", i), Reason: "a reason of some length"}
		if err := s.AppendAudit(t.Context(), e); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bbolt.Tx) error {
		st := tx.Bucket(bucketAudit).Stats()
		if st.KeyN != 2000 || st.LeafPageN < 10 {
			return fmt.Errorf("audit bucket: %d events in %d leaf pages, want 2000 in at least 10", st.KeyN, st.LeafPageN)
		}
		if fill := float64(st.LeafInuse) / float64(st.LeafAlloc); fill < 0.85 {
			return fmt.Errorf("audit leaf pages %.0f%% full (%d pages), want at least 85%%", 100*fill, st.LeafPageN)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
