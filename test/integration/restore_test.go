package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// keyStates returns pubkey -> state from GET /api/v1/keys.
func (s *server) keyStates(t *testing.T) map[string]string {
	t.Helper()
	code, body := s.get(t, "/api/v1/keys")
	if code != 200 {
		t.Fatalf("/api/v1/keys: %d %s", code, body)
	}
	var v struct {
		Keys []struct {
			Pubkey string `json:"pubkey"`
			State  string `json:"state"`
		} `json:"keys"`
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, k := range v.Keys {
		out[k.Pubkey] = k.State
	}
	return out
}

// A restored (or migrated) snapshot may be older than the live state it
// replaces: keys free in it cool down from the restore on, whatever the
// server's reuse delay, and the server warns until the pod watcher has
// reconciled the snapshot's assignments.
func TestRestoreCoolsDownFreeKeys(t *testing.T) {
	for _, via := range []string{"restore", "migrate-store"} {
		t.Run(via, func(t *testing.T) {
			data := t.TempDir()
			work := t.TempDir()
			s := startServer(t, data, "--reuse-delay", "0s")
			_, held := request(t, s, "validator-0", 2, filepath.Join(work, "a"))
			mustRun(t, "release", "--server", s.grpcAddr, "--pod-name", "validator-0")
			deadline := time.Now().Add(30 * time.Second)
			for {
				st := s.keyStates(t)
				free := 0
				for pk := range held {
					if st[pk] == "available" {
						free++
					}
				}
				if free == len(held) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("released keys not available: %v", st)
				}
				time.Sleep(100 * time.Millisecond)
			}
			s.stop()

			kek, err := os.ReadFile(filepath.Join(data, "kek.hex"))
			if err != nil {
				t.Fatal(err)
			}
			kekFile := filepath.Join(work, "kek.hex")
			if err := os.WriteFile(kekFile, kek, 0o600); err != nil {
				t.Fatal(err)
			}
			db := filepath.Join(data, "pkmanager.db")
			old := filepath.Join(work, "old.db")
			if err := os.Rename(db, old); err != nil {
				t.Fatal(err)
			}
			var out string
			if via == "restore" {
				file := filepath.Join(work, "pk.backup")
				mustRun(t, "backup", "--store", "bolt://"+old, "--kek-file", kekFile, "--out", file)
				out = mustRun(t, "restore", "--in", file, "--store", "bolt://"+db, "--kek-file", kekFile, "--reuse-delay", "1h")
			} else {
				out = mustRun(t, "migrate-store", "--from", "bolt://"+old, "--to", "bolt://"+db, "--reuse-delay", "1h")
			}
			if !strings.Contains(out, "cooling down: 2 available and cooling-down keys until") {
				t.Errorf("%s output does not report the restore rule:\n%s", via, out)
			}

			// The server runs with no reuse delay; the restored keys still
			// cool down for the hour the restore gave them.
			s = startServer(t, data, "--reuse-delay", "0s")
			if !strings.Contains(s.stderr.String(), "filled from a snapshot") {
				t.Errorf("no warning about the restored snapshot:\n%s", s.stderr.String())
			}
			st := s.keyStates(t)
			for pk := range held {
				if st[pk] != "cooling-down" {
					t.Errorf("restored key %s is %q, want cooling-down", pk, st[pk])
				}
			}
			msg, got := request(t, s, "validator-1", 1, filepath.Join(work, "b"))
			for pk := range got {
				if _, ok := held[pk]; ok {
					t.Errorf("a key released before the backup was handed out right after the restore: %s (%s)", pk, msg)
				}
			}
			if code, body := s.get(t, "/metrics"); code != 200 || !strings.Contains(body, "pkmanager_restored_snapshot 1") {
				t.Errorf("/metrics does not say the store is a restored snapshot")
			}
		})
	}
}
