package depositor

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the depositor's Prometheus instruments.
type Metrics struct {
	Sent                prometheus.Counter
	Confirmed           prometheus.Counter
	Failed              prometheus.Counter
	FunderBalance       prometheus.Gauge
	Pending             prometheus.Gauge
	ConfirmationSeconds prometheus.Histogram
}

// NewMetrics creates the instruments and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pkmanager_deposits_sent_total",
			Help: "Deposit transactions broadcast by this server (first broadcasts; rebroadcasts of the same transaction are not counted).",
		}),
		Confirmed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pkmanager_deposits_confirmed_total",
			Help: "Deposits confirmed on chain (the key left pending-deposit).",
		}),
		Failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pkmanager_deposits_failed_total",
			Help: "Deposits that failed (reverted or rejected by simulation); their keys are in state deposit-failed.",
		}),
		FunderBalance: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pkmanager_funder_balance_wei",
			Help: "Balance of the deposit funder account, in wei, as last read.",
		}),
		Pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pkmanager_deposits_pending",
			Help: "Deposits the sender is working on: pending-deposit keys not sent yet or not confirmed yet.",
		}),
		ConfirmationSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pkmanager_deposit_confirmation_seconds",
			Help:    "Time from recording a deposit transaction to its confirmation.",
			Buckets: []float64{0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600, 1800},
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Sent, m.Confirmed, m.Failed, m.FunderBalance, m.Pending, m.ConfirmationSeconds)
	}
	return m
}
