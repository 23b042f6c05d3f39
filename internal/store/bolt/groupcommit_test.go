package bolt

import (
	"errors"
	"fmt"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"
)

func openRaw(t testing.TB) *bbolt.DB {
	t.Helper()
	db, err := bbolt.Open(t.TempDir()+"/raw.db", 0o600, &bbolt.Options{FreelistType: bbolt.FreelistMapType, NoFreelistSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err }); err != nil {
		t.Fatal(err)
	}
	return db
}

func put(k string) func(*bbolt.Tx) error {
	return func(tx *bbolt.Tx) error { return tx.Bucket([]byte("b")).Put([]byte(k), []byte("v")) }
}

// A lone caller commits in its own transaction; callers arriving while a
// commit is under way share the next one, and a failing or panicking
// function is run alone: only its caller sees the error, the others commit.
func TestGroupCommit(t *testing.T) {
	db := openRaw(t)
	var g groupCommit
	// The committed transactions of the calls (OnCommit runs under bbolt's
	// writer lock).
	committed := map[int]bool{}
	countingPut := func(k string) func(*bbolt.Tx) error {
		return func(tx *bbolt.Tx) error {
			id := tx.ID()
			tx.OnCommit(func() { committed[id] = true })
			return put(k)(tx)
		}
	}

	// Alone: one commit.
	if err := g.run(db, countingPut("alone")); err != nil {
		t.Fatal(err)
	}
	if len(committed) != 1 {
		t.Fatalf("a lone call made %d commits, want 1", len(committed))
	}

	// The first caller's transaction is held open until 20 others queue.
	clear(committed)
	entered, unblock := make(chan struct{}), make(chan struct{})
	errs := make(chan error, 21)
	go func() {
		errs <- g.run(db, func(tx *bbolt.Tx) error {
			close(entered)
			<-unblock
			return countingPut("first")(tx)
		})
	}()
	<-entered
	for i := range 20 {
		fn := countingPut(fmt.Sprintf("k%d", i))
		switch i {
		case 5:
			fn = func(*bbolt.Tx) error { return errors.New("refused") }
		case 9:
			fn = func(*bbolt.Tx) error { panic("defect") }
		}
		go func() {
			err := g.run(db, fn)
			switch {
			case i == 5 && (err == nil || err.Error() != "refused"):
				err = fmt.Errorf("failing call: %v, want its own error", err)
			case i == 9 && err == nil:
				err = errors.New("panicking call: no error")
			case i == 5 || i == 9:
				err = nil
			}
			errs <- err
		}()
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		g.mu.Lock()
		n := len(g.waiting)
		g.mu.Unlock()
		if n == 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d callers queued, want 20", n)
		}
		time.Sleep(time.Millisecond)
	}
	close(unblock)
	for range 21 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	// The first call alone, then the 18 good ones together (after two
	// failed attempts of the group, each followed by the failing call alone).
	if len(committed) != 2 {
		t.Errorf("%d commits for 19 successful calls, want 2", len(committed))
	}
	err := db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte("b"))
		for i := range 20 {
			got := b.Get([]byte(fmt.Sprintf("k%d", i))) != nil
			if want := i != 5 && i != 9; got != want {
				t.Errorf("k%d stored: %v, want %v", i, got, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.busy || len(g.waiting) != 0 {
		t.Errorf("after the calls: busy %v, %d waiting", g.busy, len(g.waiting))
	}
}
