package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pkmanager/pkmanager/internal/store"
)

// The schema migrations, applied in order of their number: NNNN_name.sql.
// A migration is never changed once released; a new one is added instead.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

var migrations = mustLoadMigrations()

func mustLoadMigrations() []migration {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		panic(err)
	}
	var out []migration
	for _, e := range entries {
		base := strings.TrimSuffix(e.Name(), ".sql")
		num, name, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v < 1 {
			panic(fmt.Sprintf("postgres: migration file %s is not named NNNN_name.sql", e.Name()))
		}
		b, err := migrationFiles.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			panic(err)
		}
		out = append(out, migration{version: v, name: name, sql: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i, m := range out {
		if m.version != i+1 {
			panic(fmt.Sprintf("postgres: migrations are not numbered 1, 2, ...: %d is at position %d", m.version, i+1))
		}
	}
	return out
}

// latestVersion is the newest schema version this build knows.
func latestVersion() int { return len(migrations) }

// SchemaVersion is the schema version this build creates and reads.
var SchemaVersion = latestVersion()

// migrate brings the schema to latestVersion in one transaction, under an
// advisory lock so that replicas starting together migrate once. It fails
// with store.ErrUnsupportedSchema when the database is newer than this build.
func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("store %s: %w", s.where, wrapCtx(ctx, err))
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var schema string
	if err := tx.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		return fmt.Errorf("store %s: %w", s.where, err)
	}
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockKey("pkmanager migrate", schema)); err != nil {
		return fmt.Errorf("store %s: lock for schema migration: %w", s.where, err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS pkm_schema_migrations (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("store %s: create migrations table: %w", s.where, err)
	}
	var current int
	if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM pkm_schema_migrations").Scan(&current); err != nil {
		return fmt.Errorf("store %s: read schema version: %w", s.where, err)
	}
	latest := latestVersion()
	if current > latest {
		return fmt.Errorf("store %s has schema version %d, but this pkmanager knows versions up to %d; run a newer pkmanager: %w",
			s.where, current, latest, store.ErrUnsupportedSchema)
	}
	if current == latest {
		return nil
	}
	for _, m := range migrations[current:] {
		if _, err := tx.Exec(ctx, m.sql, pgx.QueryExecModeSimpleProtocol); err != nil {
			return fmt.Errorf("store %s: schema migration %d (%s): %w", s.where, m.version, m.name, err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO pkm_schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name); err != nil {
			return fmt.Errorf("store %s: record schema migration %d: %w", s.where, m.version, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("store %s: commit schema migrations: %w", s.where, err)
	}
	s.log.Info("store schema migrated", slog.String("store", s.where), slog.Int("from", current), slog.Int("to", latest))
	return nil
}

// ErrNoSchema: a store opened with NoMigrate holds no pkmanager schema.
var ErrNoSchema = errors.New("no pkmanager schema")

// checkSchema fails unless the database has exactly this build's schema.
func (s *Store) checkSchema(ctx context.Context) error {
	var exists bool
	if err := s.pool.QueryRow(ctx, `SELECT to_regclass('pkm_schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return fmt.Errorf("store %s: %w", s.where, wrapCtx(ctx, err))
	}
	if !exists {
		return fmt.Errorf("store %s holds no pkmanager schema (wrong database or search_path?): %w", s.where, ErrNoSchema)
	}
	var v int
	if err := s.pool.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM pkm_schema_migrations").Scan(&v); err != nil {
		return fmt.Errorf("store %s: read schema version: %w", s.where, wrapCtx(ctx, err))
	}
	switch latest := latestVersion(); {
	case v > latest:
		return fmt.Errorf("store %s has schema version %d, but this pkmanager knows versions up to %d; run a newer pkmanager: %w",
			s.where, v, latest, store.ErrUnsupportedSchema)
	case v < latest:
		return fmt.Errorf("store %s has schema version %d, older than this pkmanager's %d; start this version's server once to upgrade it, or use the pkmanager that matches: %w",
			s.where, v, latest, store.ErrUnsupportedSchema)
	}
	return nil
}
