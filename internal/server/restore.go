package server

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pkmanager/pkmanager/internal/kube/watcher"
	"github.com/pkmanager/pkmanager/internal/store"
)

// A store filled from a snapshot (restore, migrate-store) may hold
// assignments older than the live state it replaced. The server warns at
// every start until the pod watcher has found every pod that holds keys
// running as recorded (store.BindRestoreReconciled); pkmanager_restored_snapshot
// is 1 meanwhile.

// checkRestored reads the store's restore bindings and warns when the store
// is a restored snapshot not reconciled yet.
func (s *Server) checkRestored(ctx context.Context) error {
	b, err := s.store.Bindings(ctx)
	if err != nil {
		return err
	}
	at, ok := b[store.BindRestoredAt]
	if ok && b[store.BindRestoreReconciled] == "" {
		s.restored.Store(true)
		attrs := []any{slog.String("restored_at", at)}
		if s.kube == nil || s.kube.watcher == nil {
			attrs = append(attrs, slog.String("watcher", "off: nothing checks the snapshot's assignments against the cluster, so this warning stays"))
		}
		s.logger.Warn("this store was filled from a snapshot (restore or migrate-store): its assignments may be older than the live state it replaced "+
			"and released keys may still be in use; keys free in the snapshot cool down from the restore on, and this warning repeats "+
			"at every start until the pod watcher has found every pod that holds keys running as recorded", attrs...)
	}
	return s.metrics.Registry.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pkmanager_restored_snapshot",
		Help: "1 while the store is a restored snapshot whose assignments the pod watcher has not reconciled yet, else 0.",
	}, func() float64 {
		if s.restored.Load() {
			return 1
		}
		return 0
	}))
}

// restoreReconciled is the pod watcher's Reconciled callback: the first
// reconciliation that found every holder running as recorded ends the
// restored state.
func (s *Server) restoreReconciled(ctx context.Context) {
	if !s.restored.Load() {
		return
	}
	now := s.now()
	if err := s.store.Bind(ctx, store.BindRestoreReconciled, now.UTC().Format(time.RFC3339Nano)); err != nil && !errors.Is(err, store.ErrBindingMismatch) {
		s.logger.Warn("record that the restored snapshot is reconciled", slog.Any("error", err))
		return
	}
	s.restored.Store(false)
	if err := s.store.AppendAudit(store.WithActor(ctx, watcher.Actor), store.AuditEvent{
		Time: now, Action: "restore-reconciled",
		Reason: "every pod holding keys in the restored snapshot was found running as recorded",
	}); err != nil {
		s.logger.Warn("audit: restore reconciled", slog.Any("error", err))
	}
	s.logger.Info("restored snapshot reconciled: every pod that holds keys runs as recorded")
}
