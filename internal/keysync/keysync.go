// Package keysync keeps a validator client's keys equal to its pod's
// assignment (`pkmanager sync`, a sidecar beside the client): it asks the
// server for the pod's keys and pushes them, with their slashing-protection
// history, into the client through the standard keymanager API; keys the pod
// no longer holds are deleted from the client. At shutdown it deletes every
// key from the client, and only once the client no longer lists any of them
// releases the pod's keys with the history the client returned.
//
// The rule it never breaks: keys are released only once the client has
// stopped signing with them. When the client cannot be reached, a DELETE
// fails, or a key stays listed, Shutdown returns an error and releases
// nothing: the keys stay with the pod, and the pod watcher releases them
// once the pod can no longer run.
//
// Keystores are encrypted in memory with a random password per key and
// exist only in the request to the client; nothing is written to disk here.
// Decide and JudgeDelete are the decisions, without I/O.
package keysync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/pkmanager/pkmanager/internal/keymanager"
	"github.com/pkmanager/pkmanager/internal/keystore"
	"github.com/pkmanager/pkmanager/internal/slashing"
	"github.com/pkmanager/pkmanager/internal/store"
)

// Key is one key of the pod's assignment, as the server sent it (checked:
// the secret belongs to the pubkey).
type Key struct {
	Pubkey store.Pubkey
	Secret []byte
	Path   string // EIP-2334 derivation path, or ""
}

// Assignment is the server's answer to the pod's request.
type Assignment struct {
	Keys []Key
	// SlashingProtection is the keys' EIP-3076 interchange (nil: no key
	// had a holder before).
	SlashingProtection []byte
	// GenesisValidatorsRoot is the chain's (32 bytes); nil when the server
	// knows no chain parameters and keeps no history.
	GenesisValidatorsRoot []byte
}

// Server is the pkmanager server, for the pod this syncer serves.
type Server interface {
	// Request asks for the pod's keys (idempotent: the keys it holds).
	Request(ctx context.Context) (Assignment, error)
	// Release returns the pod's keys to the pool with their history (nil:
	// none) and returns the server's message.
	Release(ctx context.Context, slashingProtection []byte) (string, error)
}

// Keymanager is the validator client's keymanager API.
type Keymanager interface {
	List(ctx context.Context) ([]keymanager.Key, error)
	Import(ctx context.Context, keystores [][]byte, passwords []string, slashingProtection []byte) ([]keymanager.Status, error)
	Delete(ctx context.Context, pubkeys []store.Pubkey) ([]keymanager.Status, []byte, error)
}

// Config configures a Syncer. Server and Client are required.
type Config struct {
	Server Server
	Client Keymanager
	// Interval between syncs (default DefaultInterval). After a failed
	// sync the next one comes sooner (1 s, doubling up to Interval).
	Interval time.Duration
	// Keystore is the protection of the keystores pushed to the client.
	Keystore keystore.Options
	// DeleteRounds bounds the DELETEs of one removal (default 5).
	DeleteRounds int
	// ImportTimeout bounds an import once sent; it is not cut short by the
	// end of Run's context, so that Shutdown sees whatever it loaded
	// (default 2 min).
	ImportTimeout time.Duration
	Logger        *slog.Logger
}

// DefaultInterval is how often the assignment is asked for by default.
const DefaultInterval = time.Minute

// Syncer keeps one validator client's keys equal to one pod's assignment.
type Syncer struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	assigned []store.Pubkey // from the last answer
	gvr      []byte         // from the last answer
	synced   bool
}

// New returns a Syncer.
func New(cfg Config) (*Syncer, error) {
	if cfg.Server == nil || cfg.Client == nil {
		return nil, errors.New("keysync: Server and Client are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.DeleteRounds <= 0 {
		cfg.DeleteRounds = 5
	}
	if cfg.ImportTimeout <= 0 {
		cfg.ImportTimeout = 2 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Syncer{cfg: cfg, log: cfg.Logger}, nil
}

// Result is what one sync did.
type Result struct {
	Assigned, Imported, Deleted, Stuck int
}

// Run syncs now and then every Interval until ctx ends, and returns nil
// then. A failed sync is logged and tried again sooner.
func (s *Syncer) Run(ctx context.Context) error {
	retry := time.Second
	for {
		res, err := s.Sync(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wait := s.cfg.Interval
		switch {
		case err != nil:
			s.log.Error("sync failed; trying again", slog.Any("error", err), slog.Duration("in", retry))
			wait, retry = retry, min(2*retry, s.cfg.Interval)
		case res.Imported+res.Deleted > 0:
			retry = time.Second
			s.log.Info("validator client synced with the pod's assignment", slog.Int("keys", res.Assigned),
				slog.Int("imported", res.Imported), slog.Int("deleted", res.Deleted))
		default:
			retry = time.Second
			s.log.Debug("validator client holds the pod's assignment", slog.Int("keys", res.Assigned))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// Sync asks for the assignment once and makes the client hold exactly it:
// keys the pod no longer holds are deleted first, then missing keys are
// imported with their history.
func (s *Syncer) Sync(ctx context.Context) (Result, error) {
	a, err := s.cfg.Server.Request(ctx)
	if err != nil {
		return Result{}, err
	}
	defer func() {
		for _, k := range a.Keys {
			clear(k.Secret)
		}
	}()
	assigned := make([]store.Pubkey, len(a.Keys))
	byKey := make(map[store.Pubkey]Key, len(a.Keys))
	for i, k := range a.Keys {
		assigned[i] = k.Pubkey
		byKey[k.Pubkey] = k
	}
	marks, err := history(a, assigned)
	if err != nil {
		return Result{}, err
	}
	s.mu.Lock()
	s.assigned, s.gvr = assigned, a.GenesisValidatorsRoot
	first := !s.synced
	s.synced = true
	s.mu.Unlock()
	if first && len(a.GenesisValidatorsRoot) == 0 {
		s.log.Warn("the server keeps no slashing-protection history (it knows no chain parameters): " +
			"the validator client gets the keys without their earlier holders' history")
	}

	listed, err := s.cfg.Client.List(ctx)
	if err != nil {
		return Result{}, err
	}
	plan := Decide(assigned, listed)
	res := Result{Assigned: len(assigned), Stuck: len(plan.Stuck)}
	if len(plan.Stuck) > 0 {
		s.log.Error("the validator client signs with keys this pod does not hold and that the keymanager API cannot delete (read-only): "+
			"remove them from the client's configuration", slog.String("keys", joinKeys(plan.Stuck)))
	}
	if len(plan.Delete) > 0 {
		// Keys released while the pod ran (by hand): fence them at once.
		// Their history cannot go with a release the pod no longer owns.
		f, err := s.remove(ctx, plan.Delete)
		if err != nil {
			return res, fmt.Errorf("delete keys the pod no longer holds from the validator client: %w", err)
		}
		res.Deleted = len(plan.Delete)
		s.log.Warn("deleted keys the pod no longer holds from the validator client; their signing history is not uploaded (the pod no longer holds them)",
			slog.String("keys", joinKeys(plan.Delete)), slog.Int("deletes", f.rounds), slog.String("history", describe(f.interchanges, a.GenesisValidatorsRoot)))
	}
	if len(plan.Import) > 0 {
		if err := s.importKeys(ctx, plan.Import, byKey, marks, a.GenesisValidatorsRoot); err != nil {
			return res, err
		}
		res.Imported = len(plan.Import)
	}
	return res, nil
}

// history checks the assignment's interchange (format 5, the chain named,
// only the pod's keys) and returns its watermarks.
func history(a Assignment, assigned []store.Pubkey) (map[store.Pubkey]slashing.Watermarks, error) {
	if len(a.GenesisValidatorsRoot) == 0 {
		if len(a.SlashingProtection) > 0 {
			return nil, errors.New("the server sent a slashing-protection history without the chain's genesis validators root; nothing imported")
		}
		return nil, nil
	}
	gvr, err := root(a.GenesisValidatorsRoot)
	if err != nil {
		return nil, err
	}
	if len(a.SlashingProtection) == 0 {
		return nil, nil
	}
	marks, err := slashing.Parse(a.SlashingProtection, gvr, allowOnly(assigned, "not one of the pod's keys"))
	if err != nil {
		return nil, fmt.Errorf("the server sent a bad slashing-protection history; nothing imported: %w", err)
	}
	return marks, nil
}

func root(b []byte) ([32]byte, error) {
	var r [32]byte
	if len(b) != len(r) {
		return r, fmt.Errorf("the server sent a genesis validators root of %d bytes, want 32", len(b))
	}
	copy(r[:], b)
	return r, nil
}

func allowOnly(keys []store.Pubkey, why string) slashing.Allowed {
	set := make(map[store.Pubkey]bool, len(keys))
	for _, pk := range keys {
		set[pk] = true
	}
	return func(pk store.Pubkey) error {
		if !set[pk] {
			return errors.New(why)
		}
		return nil
	}
}

// importKeys encrypts the keys and imports them with their watermarks.
func (s *Syncer) importKeys(ctx context.Context, pks []store.Pubkey, byKey map[store.Pubkey]Key, marks map[store.Pubkey]slashing.Watermarks, gvrBytes []byte) error {
	keys := make([]Key, len(pks))
	for i, pk := range pks {
		keys[i] = byKey[pk]
	}
	jsons, passwords, err := encrypt(ctx, keys, s.cfg.Keystore)
	if err != nil {
		return err
	}
	var sp []byte
	if len(gvrBytes) > 0 {
		// Only the imported keys' history, in the minimal form; an
		// interchange with no entry when none of them had a holder.
		gvr, _ := root(gvrBytes) // checked by history
		mine := make(map[store.Pubkey]slashing.Watermarks, len(pks))
		for _, pk := range pks {
			if w, ok := marks[pk]; ok {
				mine[pk] = w
			}
		}
		if sp, err = slashing.Write(gvr, mine); err != nil {
			return fmt.Errorf("slashing-protection history for the validator client: %w", err)
		}
	}
	// Once sent, the import runs to its end even if ctx ends (SIGTERM):
	// whatever the client loads, Shutdown must find and delete.
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ImportTimeout)
	defer cancel()
	statuses, err := s.cfg.Client.Import(ictx, jsons, passwords, sp)
	if err != nil {
		return fmt.Errorf("import %d keys into the validator client: %w", len(pks), err)
	}
	var failed []string
	for i, st := range statuses {
		switch st.Status {
		case keymanager.StatusImported, keymanager.StatusDuplicate:
		default:
			failed = append(failed, fmt.Sprintf("%s: %s %s", pks[i], st.Status, st.Message))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("the validator client did not import %d of %d keys: %s", len(failed), len(pks), strings.Join(failed, "; "))
	}
	s.log.Info("imported keys into the validator client", slog.String("keys", joinKeys(pks)), slog.Int("with_history", len(marksOf(marks, pks))))
	return nil
}

func marksOf(marks map[store.Pubkey]slashing.Watermarks, pks []store.Pubkey) []store.Pubkey {
	var out []store.Pubkey
	for _, pk := range pks {
		if _, ok := marks[pk]; ok {
			out = append(out, pk)
		}
	}
	return out
}

// encrypt makes one EIP-2335 keystore per key under a random password, in
// parallel (scrypt at the standard cost takes most of a second per key).
func encrypt(ctx context.Context, keys []Key, opts keystore.Options) ([][]byte, []string, error) {
	jsons := make([][]byte, len(keys))
	passwords := make([]string, len(keys))
	errs := make([]error, len(keys))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(keys)) {
		wg.Go(func() {
			for i := range next {
				pw, err := keystore.RandomPassword()
				if err != nil {
					errs[i] = err
					continue
				}
				ks, err := keystore.Encrypt(keys[i].Secret, pw, keys[i].Pubkey, keys[i].Path, opts)
				if err == nil {
					jsons[i], err = ks.Marshal()
				}
				errs[i], passwords[i] = err, pw
			}
		})
	}
feed:
	for i := range keys {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	for i, err := range errs {
		if err != nil {
			return nil, nil, fmt.Errorf("encrypt the keystore of %s: %w", keys[i].Pubkey, err)
		}
	}
	return jsons, passwords, nil
}

// fenced is the outcome of a removal.
type fenced struct {
	rounds       int
	interchanges [][]byte // one per DELETE that returned one
}

// remove deletes keys from the client until GET no longer lists them (at
// most DeleteRounds DELETEs).
func (s *Syncer) remove(ctx context.Context, pks []store.Pubkey) (fenced, error) {
	var f fenced
	for {
		f.rounds++
		statuses, sp, err := s.cfg.Client.Delete(ctx, pks)
		if err != nil {
			return f, err
		}
		if len(sp) > 0 {
			f.interchanges = append(f.interchanges, sp)
		}
		listed, err := s.cfg.Client.List(ctx)
		if err != nil {
			return f, fmt.Errorf("after DELETE: %w", err)
		}
		verdict, why := JudgeDelete(pks, statuses, listed)
		switch {
		case verdict == Fenced:
			return f, nil
		case verdict == Stuck:
			return f, errors.New(why)
		case f.rounds >= s.cfg.DeleteRounds:
			return f, fmt.Errorf("after %d DELETEs: %s", f.rounds, why)
		}
		s.log.Warn("keys not out of the validator client yet; DELETE again", slog.Int("round", f.rounds), slog.String("why", why))
		select {
		case <-ctx.Done():
			return f, ctx.Err()
		case <-time.After(time.Duration(f.rounds) * 200 * time.Millisecond):
		}
	}
}

// ErrNotReleased wraps every Shutdown error: the pod's keys were not
// released.
var ErrNotReleased = errors.New("keys NOT released")

// Shutdown takes every key out of the client and then releases the pod's
// keys with the history the client returned. It releases nothing when the
// client cannot be reached, a key cannot be deleted, or the history is bad:
// the error (wrapping ErrNotReleased) says what happened. Call it after Run
// returned.
func (s *Syncer) Shutdown(ctx context.Context) (string, error) {
	s.mu.Lock()
	assigned, gvrBytes := s.assigned, s.gvr
	s.mu.Unlock()

	fail := func(format string, args ...any) (string, error) {
		return "", fmt.Errorf("%w: %s; they stay with the pod, and the pod watcher releases them once the pod can no longer run",
			ErrNotReleased, fmt.Sprintf(format, args...))
	}
	listed, err := s.cfg.Client.List(ctx)
	if err != nil {
		return fail("the validator client may still sign with them: %v", err)
	}
	targets := append([]store.Pubkey(nil), assigned...)
	mine := make(map[store.Pubkey]bool, len(assigned))
	for _, pk := range assigned {
		mine[pk] = true
	}
	var stray []store.Pubkey
	for _, k := range listed {
		switch {
		case k.Readonly && mine[k.Pubkey]:
			return fail("the validator client holds %s read-only (the keymanager API cannot delete it)", k.Pubkey)
		case k.Readonly:
			s.log.Error("the validator client keeps a read-only key this pod does not hold", slog.String("key", k.Pubkey.String()))
		case !mine[k.Pubkey]:
			mine[k.Pubkey] = true
			stray = append(stray, k.Pubkey)
			targets = append(targets, k.Pubkey)
		}
	}
	var f fenced
	if len(targets) > 0 {
		if f, err = s.remove(ctx, targets); err != nil {
			return fail("deleting them from the validator client failed, it may still sign with them: %v", err)
		}
		s.log.Info("deleted every key from the validator client", slog.Int("keys", len(targets)), slog.Int("deletes", f.rounds))
	}
	var upload []byte
	if len(gvrBytes) > 0 {
		gvr, err := root(gvrBytes)
		if err != nil {
			return fail("%v", err)
		}
		marks := make(map[store.Pubkey]slashing.Watermarks)
		for i, sp := range f.interchanges {
			m, err := slashing.Parse(sp, gvr, allowOnly(targets, "not a key this sidecar deleted"))
			if err != nil {
				return fail("the keys are out of the validator client, but the history it returned (DELETE %d) is not one pkmanager accepts: %v", i+1, err)
			}
			for pk, w := range m {
				marks[pk] = marks[pk].Merge(w)
			}
		}
		for _, pk := range stray {
			if w, ok := marks[pk]; ok {
				s.log.Warn("history of a key the pod does not hold is not uploaded", slog.String("key", pk.String()),
					slog.String("watermarks", fmt.Sprintf("%+v", w)))
				delete(marks, pk)
			}
		}
		if len(marks) > 0 {
			if upload, err = slashing.Write(gvr, marks); err != nil {
				return fail("history for the release: %v", err)
			}
		}
	}
	msg, err := s.cfg.Server.Release(ctx, upload)
	if err != nil {
		return fail("the keys are out of the validator client, but the release failed: %v", err)
	}
	return msg, nil
}

// describe summarizes interchanges for a log line.
func describe(interchanges [][]byte, gvrBytes []byte) string {
	if len(interchanges) == 0 {
		return "none returned"
	}
	gvr, err := root(gvrBytes)
	if err != nil {
		return fmt.Sprintf("%d interchanges (not checked: the server knows no chain)", len(interchanges))
	}
	all := make(map[store.Pubkey]slashing.Watermarks)
	for _, sp := range interchanges {
		m, err := slashing.Parse(sp, gvr, nil)
		if err != nil {
			return "unreadable: " + err.Error()
		}
		for pk, w := range m {
			all[pk] = all[pk].Merge(w)
		}
	}
	var parts []string
	for _, pk := range sortedKeys(all) {
		w := all[pk]
		parts = append(parts, fmt.Sprintf("%s block slot %d (%v), attestation %d->%d (%v)", pk, w.BlockSlot, w.HasBlock, w.SourceEpoch, w.TargetEpoch, w.HasAttestation))
	}
	if len(parts) == 0 {
		return "no signature"
	}
	return strings.Join(parts, "; ")
}

func sortedKeys[V any](m map[store.Pubkey]V) []store.Pubkey {
	out := make([]store.Pubkey, 0, len(m))
	for pk := range m {
		out = append(out, pk)
	}
	sortPubkeys(out)
	return out
}

func joinKeys(pks []store.Pubkey) string {
	s := make([]string, len(pks))
	for i, pk := range pks {
		s[i] = pk.String()
	}
	return strings.Join(s, ",")
}
