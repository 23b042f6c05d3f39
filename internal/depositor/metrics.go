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
	// FoundOnChain counts keys about to be deposited whose deposit the
	// chain already had (a restored or rebuilt store): confirmed, not
	// deposited again.
	FoundOnChain prometheus.Counter
	// IndexBlock is the last block of the stored deposit index.
	IndexBlock prometheus.Gauge
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
		FoundOnChain: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pkmanager_deposits_found_on_chain_total",
			Help: "Keys about to be deposited whose deposit was already on chain (a restored or rebuilt store, or another installation): not deposited again.",
		}),
		IndexBlock: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pkmanager_deposit_index_block",
			Help: "Last block of the stored deposit index (DepositEvents by public key); newer blocks are read live.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Sent, m.Confirmed, m.Failed, m.FunderBalance, m.Pending, m.ConfirmationSeconds, m.FoundOnChain, m.IndexBlock)
	}
	return m
}
