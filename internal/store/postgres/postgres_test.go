package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/redact"
	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/postgres"
	"github.com/pkmanager/pkmanager/internal/store/postgres/pgtest"
	"github.com/pkmanager/pkmanager/internal/store/storetest"
)

var quiet = slog.New(slog.DiscardHandler)

// open opens a store on url, closed at cleanup.
func open(t testing.TB, url string) *postgres.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := postgres.Open(ctx, url, postgres.Options{Logger: quiet})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	pgtest.BaseURL(t)
	storetest.Run(t, func(t *testing.T) store.Store { return open(t, pgtest.NewSchema(t)) })
}

func TestConformanceReopen(t *testing.T) {
	pgtest.BaseURL(t)
	urls := map[store.Store]string{}
	storetest.RunReopen(t,
		func(t *testing.T) store.Store {
			u := pgtest.NewSchema(t)
			s := open(t, u)
			urls[s] = u
			return s
		},
		func(t *testing.T, s store.Store) store.Store {
			u := urls[s]
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			n := open(t, u)
			urls[n] = u
			return n
		})
}

// The conformance suite run with every call going to one of three stores
// (three replicas' connection pools) on one database.
func TestConformanceThreeReplicas(t *testing.T) {
	pgtest.BaseURL(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		u := pgtest.NewSchema(t)
		return &roundRobin{stores: []store.Store{open(t, u), open(t, u), open(t, u)}}
	})
}

// roundRobin sends each call to the next of several stores.
type roundRobin struct {
	mu     sync.Mutex
	n      int
	stores []store.Store
}

func (r *roundRobin) next() store.Store {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	return r.stores[r.n%len(r.stores)]
}

func (r *roundRobin) Claim(ctx context.Context, p store.ClaimParams) (store.Claim, error) {
	return r.next().Claim(ctx, p)
}
func (r *roundRobin) AddAssigned(ctx context.Context, p store.AddParams) (store.Claim, error) {
	return r.next().AddAssigned(ctx, p)
}
func (r *roundRobin) AddPending(ctx context.Context, p store.AddParams) error {
	return r.next().AddPending(ctx, p)
}
func (r *roundRobin) RenewReservation(ctx context.Context, pod, token string, until time.Time) error {
	return r.next().RenewReservation(ctx, pod, token, until)
}
func (r *roundRobin) ReleaseReservation(ctx context.Context, pod, token string) error {
	return r.next().ReleaseReservation(ctx, pod, token)
}
func (r *roundRobin) SetDepositTx(ctx context.Context, pk store.Pubkey, tx store.DepositTx, now time.Time) error {
	return r.next().SetDepositTx(ctx, pk, tx, now)
}
func (r *roundRobin) ConfirmDeposit(ctx context.Context, pk store.Pubkey, block uint64, now time.Time) (store.Key, error) {
	return r.next().ConfirmDeposit(ctx, pk, block, now)
}
func (r *roundRobin) FailDeposit(ctx context.Context, pk store.Pubkey, reason string, now time.Time) error {
	return r.next().FailDeposit(ctx, pk, reason, now)
}
func (r *roundRobin) AddKeys(ctx context.Context, keys []store.NewKey, st store.State, now time.Time) error {
	return r.next().AddKeys(ctx, keys, st, now)
}
func (r *roundRobin) Release(ctx context.Context, p store.ReleaseParams) (int, error) {
	return r.next().Release(ctx, p)
}
func (r *roundRobin) Retire(ctx context.Context, pk store.Pubkey, reason string, now time.Time) error {
	return r.next().Retire(ctx, pk, reason, now)
}
func (r *roundRobin) AppendAudit(ctx context.Context, e store.AuditEvent) error {
	return r.next().AppendAudit(ctx, e)
}
func (r *roundRobin) ListAudit(ctx context.Context, after uint64, limit int) ([]store.AuditEvent, error) {
	return r.next().ListAudit(ctx, after, limit)
}
func (r *roundRobin) Sweep(ctx context.Context, now time.Time) (int, error) {
	return r.next().Sweep(ctx, now)
}
func (r *roundRobin) RecoverDeposit(ctx context.Context, pk store.Pubkey, block uint64, reason string, now time.Time) (store.Key, error) {
	return r.next().RecoverDeposit(ctx, pk, block, reason, now)
}
func (r *roundRobin) Quarantine(ctx context.Context, pks []store.Pubkey, reason string, now time.Time) (int, error) {
	return r.next().Quarantine(ctx, pks, reason, now)
}
func (r *roundRobin) CoolDown(ctx context.Context, pks []store.Pubkey, until, now time.Time) (int, error) {
	return r.next().CoolDown(ctx, pks, until, now)
}
func (r *roundRobin) RecordValidators(ctx context.Context, rd []store.ValidatorReading, now time.Time) ([]store.ChainChange, error) {
	return r.next().RecordValidators(ctx, rd, now)
}
func (r *roundRobin) Validators(ctx context.Context, pks []store.Pubkey) (map[store.Pubkey]store.ValidatorStatus, error) {
	return r.next().Validators(ctx, pks)
}
func (r *roundRobin) Exit(ctx context.Context, p store.ExitParams) ([]store.Key, error) {
	return r.next().Exit(ctx, p)
}
func (r *roundRobin) Protections(ctx context.Context, pks []store.Pubkey) (map[store.Pubkey]store.Protection, error) {
	return r.next().Protections(ctx, pks)
}
func (r *roundRobin) Bindings(ctx context.Context) (map[string]string, error) {
	return r.next().Bindings(ctx)
}
func (r *roundRobin) DepositIndexCursor(ctx context.Context) (store.IndexCursor, error) {
	return r.next().DepositIndexCursor(ctx)
}
func (r *roundRobin) MoveDepositIndex(ctx context.Context, from, to store.IndexCursor, entries []store.IndexEntry) error {
	return r.next().MoveDepositIndex(ctx, from, to, entries)
}
func (r *roundRobin) LookupDepositIndex(ctx context.Context, keys []uint64) (map[uint64][]uint64, error) {
	return r.next().LookupDepositIndex(ctx, keys)
}
func (r *roundRobin) GetKey(ctx context.Context, pk store.Pubkey) (store.Key, error) {
	return r.next().GetKey(ctx, pk)
}
func (r *roundRobin) ListKeys(ctx context.Context, o store.ListOptions, fn func(store.Key) error) error {
	return r.next().ListKeys(ctx, o, fn)
}
func (r *roundRobin) Counts(ctx context.Context) (map[store.State]int, error) {
	return r.next().Counts(ctx)
}
func (r *roundRobin) PodSizes(ctx context.Context) (map[string]int, error) {
	return r.next().PodSizes(ctx)
}
func (r *roundRobin) ReserveIndices(ctx context.Context, n int) (uint32, error) {
	return r.next().ReserveIndices(ctx, n)
}
func (r *roundRobin) Bind(ctx context.Context, name, value string) error {
	return r.next().Bind(ctx, name, value)
}
func (r *roundRobin) Dump(ctx context.Context, fn func(store.Key) error) (store.Snapshot, error) {
	return r.next().Dump(ctx, fn)
}
func (r *roundRobin) Load(ctx context.Context, snap store.Snapshot, keys []store.Key) error {
	return r.next().Load(ctx, snap, keys)
}
func (r *roundRobin) Ping(ctx context.Context) error { return r.next().Ping(ctx) }
func (r *roundRobin) Close() error {
	var errs []error
	for _, s := range r.stores {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}

// A database migrated by a newer pkmanager is refused with a clear error, and
// a running store reports not-ready.
func TestSchemaNewerThanBuild(t *testing.T) {
	u := pgtest.NewSchema(t)
	s := open(t, u)
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping of a fresh store: %v", err)
	}
	conn := pgtest.Connect(t, u)
	newer := postgres.SchemaVersion + 1
	if _, err := conn.Exec(t.Context(), `INSERT INTO pkm_schema_migrations (version, name) VALUES ($1, 'from the future')`, newer); err != nil {
		t.Fatal(err)
	}
	_, err := postgres.Open(t.Context(), u, postgres.Options{Logger: quiet})
	if !errors.Is(err, store.ErrUnsupportedSchema) {
		t.Fatalf("Open of a newer schema: %v, want ErrUnsupportedSchema", err)
	}
	for _, want := range []string{fmt.Sprintf("schema version %d", newer), fmt.Sprintf("up to %d", postgres.SchemaVersion)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if err := s.Ping(t.Context()); !errors.Is(err, store.ErrUnsupportedSchema) {
		t.Errorf("Ping after the schema moved on: %v, want ErrUnsupportedSchema", err)
	}
}

// Replicas starting together migrate once.
func TestConcurrentMigration(t *testing.T) {
	u := pgtest.NewSchema(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			s, err := postgres.Open(t.Context(), u, postgres.Options{Logger: quiet})
			if err == nil {
				s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open %d: %v", i, err)
		}
	}
	conn := pgtest.Connect(t, u)
	var n, v int
	if err := conn.QueryRow(t.Context(), `SELECT count(*), max(version) FROM pkm_schema_migrations`).Scan(&n, &v); err != nil {
		t.Fatal(err)
	}
	if n != postgres.SchemaVersion || v != postgres.SchemaVersion {
		t.Errorf("%d migrations recorded up to version %d, want %d", n, v, postgres.SchemaVersion)
	}
}

// Errors never show the password of the URL, in its user information or
// its query.
func TestErrorsHidePassword(t *testing.T) {
	const secret = "s3cret-pw-x"
	for _, u := range []string{
		"postgres://pkm:" + secret + "@127.0.0.1:1/db?connect_timeout=1",
		"postgres://pkm@127.0.0.1:1/db?connect_timeout=1&password=" + secret,
		"postgres://pkm@127.0.0.1:1/db?connect_timeout=1&sslpassword=" + secret,
		"postgres://pkm:" + secret + "@127.0.0.1:1/db?sslmode=bogus",
		"postgres://pkm:" + secret + "@[::1/db",
	} {
		_, err := postgres.Open(t.Context(), u, postgres.Options{Logger: quiet})
		if err == nil {
			t.Fatalf("Open(%s) succeeded", redact.URL(u))
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error shows the password: %v", err)
		}
	}
	if r := redact.URL("postgres://pkm:" + secret + "@host/db?password=" + secret); strings.Contains(r, secret) || !strings.Contains(r, "host/db") {
		t.Errorf("redact.URL = %q", r)
	}
}

func pk(i int) store.Pubkey { return storetest.PK(i) }

func newKeys(from, to int) []store.NewKey {
	var out []store.NewKey
	for i := from; i <= to; i++ {
		out = append(out, store.NewKey{Pubkey: pk(i), SealedSecret: []byte{1, 2, byte(i)}, Origin: store.OriginRandom})
	}
	return out
}

// Three replicas' stores claim, release and sweep for the same and for
// different pods at once: no key is ever handed to two pods, duplicate claims
// for a pod get one set, and the pool comes back whole.
func TestReplicasNeverShareKeys(t *testing.T) {
	// Three pools open connections on demand while 24 pods claim on every
	// replica at once and sweepers run: on
	// a heavily loaded machine (load 17 on 2 cores) setting one up took more
	// than the default 5 s connect timeout and the claim failed with it. The
	// test is about who gets which key, not connection set-up time.
	u := pgtest.NewSchema(t) + "&connect_timeout=60"
	stores := []*postgres.Store{open(t, u), open(t, u), open(t, u)}
	const (
		pods   = 24
		want   = 3
		rounds = 15
	)
	// One fixed time for every call: released keys are due at once.
	now := time.Now()
	if err := stores[0].AddKeys(t.Context(), newKeys(1, pods*want), store.StateAvailable, now); err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		owner = map[store.Pubkey]string{}
		errs  []error
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	stop := make(chan struct{})
	var sweepers sync.WaitGroup
	for _, s := range stores {
		sweepers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := s.Sweep(t.Context(), now); err != nil {
					fail(fmt.Errorf("Sweep: %w", err))
					return
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
	var wg sync.WaitGroup
	for g := range pods {
		wg.Go(func() {
			pod := fmt.Sprintf("pod-%d", g)
			for r := range rounds {
				uid := fmt.Sprintf("uid-%d-%d", g, r)
				// The same request reaches every replica at once.
				sets := make([]store.Claim, len(stores))
				cerrs := make([]error, len(stores))
				var dup sync.WaitGroup
				for i, s := range stores {
					dup.Go(func() {
						sets[i], cerrs[i] = s.Claim(t.Context(), store.ClaimParams{Pod: pod, PodUID: uid, Want: want, Now: now})
					})
				}
				dup.Wait()
				recycled := 0
				for i := range stores {
					if cerrs[i] != nil {
						fail(fmt.Errorf("Claim(%s) on replica %d: %w", pod, i, cerrs[i]))
						return
					}
					recycled += sets[i].Recycled
					if !slices.Equal(pubkeys(sets[i].Keys), pubkeys(sets[0].Keys)) {
						fail(fmt.Errorf("Claim(%s): replica %d answered %d keys, replica 0 %d different ones", pod, i, len(sets[i].Keys), len(sets[0].Keys)))
					}
				}
				if len(sets[0].Keys) != want || recycled != want {
					fail(fmt.Errorf("Claim(%s) round %d: %d keys, %d recycled in all; want %d (the pool fits every pod)", pod, r, len(sets[0].Keys), recycled, want))
				}
				mu.Lock()
				for _, k := range sets[0].Keys {
					if prev, held := owner[k.Pubkey]; held {
						errs = append(errs, fmt.Errorf("key %s handed to %s while %s holds it", k.Pubkey, pod, prev))
					}
					owner[k.Pubkey] = pod
				}
				for _, k := range sets[0].Keys {
					delete(owner, k.Pubkey)
				}
				mu.Unlock()
				n, err := stores[(g+r)%len(stores)].Release(t.Context(), store.ReleaseParams{Pod: pod, PodUID: uid, Until: now, Now: now, Reason: "test"})
				if err != nil {
					fail(fmt.Errorf("Release(%s): %w", pod, err))
					return
				}
				if n != len(sets[0].Keys) {
					fail(fmt.Errorf("Release(%s) = %d, held %d", pod, n, len(sets[0].Keys)))
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	sweepers.Wait()
	for i, err := range errs {
		if i == 20 {
			t.Errorf("... and %d more", len(errs)-20)
			break
		}
		t.Error(err)
	}
	c, err := stores[1].Counts(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if c[store.StateAvailable]+c[store.StateCoolingDown] != pods*want || c[store.StateAssigned] != 0 {
		t.Errorf("counts %v: want all %d keys back in the pool", c, pods*want)
	}
	storetest.CheckInvariants(t, stores[2])
	// Every release was audited once and every key taken once per round
	// (a claim's contended rounds commit, and record, apart), in commit
	// order without gaps.
	events, err := stores[0].ListAudit(t.Context(), 0, 100*pods*rounds)
	if err != nil {
		t.Fatal(err)
	}
	releases, assigned := 0, 0
	for _, e := range events {
		switch e.Action {
		case store.AuditRelease:
			releases++
		case store.AuditAssign:
			assigned += len(e.Pubkeys)
		default:
			t.Errorf("audit event %+v", e)
		}
	}
	if releases != pods*rounds || assigned != pods*rounds*want {
		t.Errorf("%d releases and %d keys assigned in the audit trail, want %d and %d", releases, assigned, pods*rounds, pods*rounds*want)
	}
	for i, e := range events {
		if e.Seq != uint64(i+1) {
			t.Fatalf("audit event %d has Seq %d", i, e.Seq)
		}
	}
}

func pubkeys(keys []store.Key) []store.Pubkey {
	out := make([]store.Pubkey, len(keys))
	for i, k := range keys {
		out[i] = k.Pubkey
	}
	return out
}

// A database of schema version 1 (before mint reservations), with pods and
// keys in it, is upgraded in place by Open: the keys and pods are kept, the
// old claim function is replaced, and reservations work.
func TestMigrateFromSchema1(t *testing.T) {
	u := pgtest.NewSchema(t)
	ctx := t.Context()
	conn := pgtest.Connect(t, u)
	v1, err := os.ReadFile(filepath.Join("migrations", "0001_init.sql"))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		string(v1),
		`CREATE TABLE pkm_schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());
		 INSERT INTO pkm_schema_migrations (version, name) VALUES (1, 'init')`,
		`INSERT INTO pkm_keys (pubkey, state, origin, since, created_at, sealed_secret)
		 SELECT decode(lpad(to_hex(i), 96, '0'), 'hex'), 'available', 'random', now(), now(), '\x01' FROM generate_series(1, 3) i`,
		`SELECT count(*) FROM pkm_claim('pod-a', 'uid-a', 2, now(), false, 20)`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("schema 1 setup: %v", err)
		}
	}

	s := open(t, u)
	// Schema 11 counted the pods' keys of the older schema.
	if sizes, err := s.PodSizes(ctx); err != nil || !maps.Equal(sizes, map[string]int{"pod-a": 2}) {
		t.Errorf("PodSizes after the upgrade = %v, %v; want pod-a's 2 keys", sizes, err)
	}
	var versions, claimFuncs int
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM pkm_schema_migrations),
		(SELECT count(*) FROM pg_proc WHERE proname = 'pkm_claim' AND pronamespace = current_schema()::regnamespace)`).Scan(&versions, &claimFuncs); err != nil {
		t.Fatal(err)
	}
	if versions != postgres.SchemaVersion || claimFuncs != 1 {
		t.Errorf("after the upgrade: %d migrations recorded, %d pkm_claim functions; want %d and 1", versions, claimFuncs, postgres.SchemaVersion)
	}
	c, err := s.Claim(ctx, store.ClaimParams{Pod: "pod-a", PodUID: "uid-a", Want: 2, Now: time.Now()})
	if err != nil || len(c.Keys) != 2 || c.Recycled != 0 || c.Keys[0].PodUID != "uid-a" {
		t.Fatalf("Claim(pod-a) after the upgrade = %+v, %v; want its 2 keys", c, err)
	}
	now := time.Now()
	c, err = s.Claim(ctx, store.ClaimParams{Pod: "pod-b", Want: 3, Now: now, ReserveToken: "tok", ReserveUntil: now.Add(time.Minute)})
	if err != nil || len(c.Keys) != 1 || c.Reservation == nil || c.Reservation.Token != "tok" || c.Reservation.Count != 2 {
		t.Fatalf("Claim(pod-b) with a token after the upgrade = %+v, %v; want 1 key and a reservation of 2", c, err)
	}
	if _, err := s.AddAssigned(ctx, store.AddParams{Pod: "pod-b", Want: 3, Keys: newKeys(10, 11), Now: now, ReserveToken: "tok"}); err != nil {
		t.Fatalf("AddAssigned under the reservation: %v", err)
	}
	storetest.CheckInvariants(t, s)
}
