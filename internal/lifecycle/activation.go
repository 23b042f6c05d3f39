package lifecycle

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pkmanager/pkmanager/internal/beacon"
	"github.com/pkmanager/pkmanager/internal/store"
)

// activationWindow bounds the epochs back from the head in which an
// activation is still observed: only keys activated that recently are
// looked up (a few per refresh, not every active key), so a watcher that
// was down longer misses those activations in the histogram.
const activationWindow = 16

func newActivationHistogram() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pkmanager_validator_activation_seconds",
		Help: "Time from the deposit transaction this server sent for a key to the start of its validator's activation epoch, " +
			"observed once per key when the beacon node first shows it active (keys deposited elsewhere are not observed).",
		Buckets: prometheus.ExponentialBuckets(60, 2, 14)}) // 1 minute to about 6 days
}

// observeActivations observes the deposit-to-active time of the keys in
// readings whose validators became active within activationWindow epochs
// and whose stored reading (the previous refresh's) was not active yet. It
// runs before the readings are recorded.
func (w *Watcher) observeActivations(ctx context.Context, chain beacon.Chain, epoch uint64, readings []store.ValidatorReading) {
	var fresh []store.ValidatorReading
	for _, r := range readings {
		act := r.Status.ActivationEpoch
		if strings.HasPrefix(r.Status.Status, "active_") && act != beacon.FarFutureEpoch && act <= epoch && act+activationWindow > epoch {
			fresh = append(fresh, r)
		}
	}
	if len(fresh) == 0 {
		return
	}
	pks := make([]store.Pubkey, len(fresh))
	for i, r := range fresh {
		pks[i] = r.Pubkey
	}
	prev, err := w.cfg.Store.Validators(ctx, pks)
	if err != nil {
		w.cfg.Logger.WarnContext(ctx, "read the previous validator statuses (activation times not observed)", slog.Any("error", err))
		return
	}
	for _, r := range fresh {
		if p, ok := prev[r.Pubkey]; ok && strings.HasPrefix(p.Status, "active_") {
			continue // observed when it turned active
		}
		k, err := w.cfg.Store.GetKey(ctx, r.Pubkey)
		if err != nil || k.DepositTx == nil || k.DepositTx.RecordedAt.IsZero() {
			continue
		}
		if d := chain.EpochStart(r.Status.ActivationEpoch).Sub(k.DepositTx.RecordedAt); d >= 0 {
			w.m.activation.Observe(d.Seconds())
			w.cfg.Logger.InfoContext(ctx, "validator active", slog.String("pubkey", r.Pubkey.String()),
				slog.Uint64("activation_epoch", r.Status.ActivationEpoch), slog.Duration("since_deposit", d.Round(time.Second)))
		}
	}
}
