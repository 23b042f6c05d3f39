package bolt

import (
	"fmt"
	"sync"

	bbolt "go.etcd.io/bbolt"
)

// maxGroup bounds how many callers share one commit.
const maxGroup = 256

// groupCommit runs read-write transaction functions of concurrent callers
// in shared commits without waiting for company: a caller that finds no
// commit under way commits at once, alone; callers that arrive while a
// commit (and its fsyncs) is under way queue, and the first of them, once
// that commit is done, commits everything queued by then in one
// transaction. So a lone request pays one commit and no delay, and under
// load the commits grow with the number of waiting callers (bbolt's own
// DB.Batch instead waits up to MaxBatchDelay for company every time).
//
// The semantics are DB.Batch's: a function may run more than once, and a
// function that fails (or panics) is taken out of the group and run alone,
// so only its own caller sees its error; bbolt's errors go to every caller
// of the group.
type groupCommit struct {
	mu      sync.Mutex
	busy    bool // a leader is committing; new callers queue
	waiting []*groupCall
}

type groupCall struct {
	fn   func(*bbolt.Tx) error
	err  error
	lead chan bool // true: commit the queue yourself; false: done, err is set
}

// run commits fn, in a group with the functions of concurrent callers.
func (g *groupCommit) run(db *bbolt.DB, fn func(*bbolt.Tx) error) error {
	c := &groupCall{fn: fn, lead: make(chan bool, 1)}
	g.mu.Lock()
	g.waiting = append(g.waiting, c)
	leader := !g.busy
	g.busy = true
	g.mu.Unlock()
	if !leader && !<-c.lead {
		return c.err
	}
	// This caller leads: it is first in the queue (a new leader is always
	// handed the queue's head), so its own function is in the group.
	g.mu.Lock()
	n := min(len(g.waiting), maxGroup)
	group := g.waiting[:n:n]
	g.waiting = g.waiting[n:]
	g.mu.Unlock()

	commitGroup(db, group)

	g.mu.Lock()
	var next *groupCall
	if len(g.waiting) > 0 {
		next = g.waiting[0]
	} else {
		g.busy = false
		g.waiting = nil // drop the backing array of a long queue
	}
	g.mu.Unlock()
	if next != nil {
		next.lead <- true
	}
	for _, o := range group {
		if o != c {
			o.lead <- false
		}
	}
	return c.err
}

// commitGroup runs the functions of group in one read-write transaction and
// sets every call's err. A function that fails is run again alone, in its
// own transaction, for its own error, and the rest commit without it.
func commitGroup(db *bbolt.DB, group []*groupCall) {
	for len(group) > 0 {
		failed := -1
		err := db.Update(func(tx *bbolt.Tx) error {
			for i, c := range group {
				if err := callSafely(c.fn, tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed < 0 {
			for _, c := range group {
				c.err = err
			}
			return
		}
		c := group[failed]
		if len(group) == 1 {
			c.err = err
			return
		}
		c.err = db.Update(func(tx *bbolt.Tx) error { return callSafely(c.fn, tx) })
		group = append(group[:failed:failed], group[failed+1:]...)
	}
}

// callSafely runs fn, turning a panic into an error so that one caller's
// defect does not leave the group without a leader.
func callSafely(fn func(*bbolt.Tx) error, tx *bbolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("store transaction panicked: %v", p)
		}
	}()
	return fn(tx)
}
