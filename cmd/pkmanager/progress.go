package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	pb "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/store"
)

// keyLister is what the progress report and the interrupt report ask the
// server (client.Client): the pod's keys, and what a request of the pod
// waiting for activation there waits for (nil: none waits).
type keyLister interface {
	PodKeys(ctx context.Context, pod string) ([]*pb.KeyInfo, *pb.ActivationWait, error)
}

// podState is what the server holds for a pod, by key state, and where
// the deposits of its pending keys are.
type podState struct {
	pending, assigned, other int
	// active counts the assigned keys whose validators the server's
	// beacon node shows active (KeyInfo.validator_status), statuses
	// whether it showed any: a server with --require-active hands the
	// pod's keys out once all are active.
	active   int
	statuses bool
	deposits []pendingDeposit // one per pending-deposit key
	// wait is what a request of the pod waiting for activation (on the
	// server asked) waits for, also while the pod holds no keys; nil when
	// none waits there.
	wait *pb.ActivationWait
}

// pendingDeposit is a pending key's deposit as the server sees it.
type pendingDeposit struct {
	pubkey string
	tx     string // "" until the server sent the deposit
	block  uint64 // 0 while the transaction is in no block
	toGo   uint64 // blocks still to follow before the server confirms it
}

func (s podState) total() int { return s.pending + s.assigned + s.other }

// String: "16 keys: 3 waiting for their deposits, 13 assigned".
func (s podState) String() string {
	if s.total() == 0 {
		return "no keys"
	}
	parts := []string{}
	if s.pending > 0 {
		parts = append(parts, fmt.Sprintf("%d waiting for their deposits", s.pending))
	}
	if s.assigned > 0 {
		parts = append(parts, fmt.Sprintf("%d assigned", s.assigned))
	}
	if s.other > 0 {
		parts = append(parts, fmt.Sprintf("%d in other states", s.other))
	}
	return plural(s.total(), "key") + ": " + strings.Join(parts, ", ")
}

// readPodState asks the server for the pod's keys.
func readPodState(ctx context.Context, c keyLister, pod string) (podState, error) {
	ks, wait, err := c.PodKeys(ctx, pod)
	if err != nil {
		return podState{}, err
	}
	s := podState{wait: wait}
	for _, k := range ks {
		switch k.GetState() {
		case "pending-deposit":
			s.pending++
			d := pendingDeposit{pubkey: "0x" + hex.EncodeToString(k.GetPubkey()), block: k.GetDepositBlock(), toGo: k.GetDepositBlocksToGo()}
			if h := k.GetDepositTxHash(); len(h) > 0 {
				d.tx = "0x" + hex.EncodeToString(h)
			}
			s.deposits = append(s.deposits, d)
		case "assigned":
			s.assigned++
			if st := k.GetValidatorStatus(); st != "" {
				s.statuses = true
				if store.ReadyForDuties(&store.ValidatorStatus{Status: st}) {
					s.active++
				}
			}
		default:
			s.other++
		}
	}
	return s, nil
}

// progress reports, while a request waits, what the server holds for the
// pod once some of its keys wait for their deposits: on a terminal as a
// live line on stderr (every second), otherwise as a log line every
// interval. A server that does not let the caller list keys (a pod's token
// may only request) gets no report.
type progress struct {
	c        keyLister
	pod      string
	want     uint32
	interval time.Duration
	logger   *slog.Logger
	tty      io.Writer // nil when stderr is not a terminal

	seen map[string]pendingDeposit // by pubkey: what was reported (run's goroutine only)

	stopOnce sync.Once
	stopCh   chan struct{}
	done     chan struct{}
}

func startProgress(ctx context.Context, c keyLister, pod string, want uint32, interval time.Duration, logger *slog.Logger) *progress {
	p := &progress{c: c, pod: pod, want: max(want, 1), interval: interval, logger: logger, stopCh: make(chan struct{}), done: make(chan struct{})}
	if term.IsTerminal(int(os.Stderr.Fd())) {
		p.tty, p.interval = os.Stderr, time.Second
	}
	go p.run(ctx)
	return p
}

func (p *progress) run(ctx context.Context) {
	defer close(p.done)
	start := time.Now()
	t := time.NewTicker(p.interval)
	defer t.Stop()
	shown := false
	for {
		select {
		case <-p.stopCh:
			if shown && p.tty != nil {
				fmt.Fprint(p.tty, "\r\033[K")
			}
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		qctx, cancel := context.WithTimeout(ctx, p.interval)
		s, err := readPodState(qctx, p.c, p.pod)
		cancel()
		if err != nil {
			p.logger.Debug("no progress report: the server does not list the pod's keys", "err", err)
			return
		}
		waiting := s.assigned - s.active // for activation
		if s.pending == 0 && s.wait != nil {
			// The server's own account, which includes the pool keys
			// that would cover what the pod lacks.
			p.show(activationLine(p.pod, s.wait, start))
			shown = true
			continue
		}
		if s.pending == 0 && (!s.statuses || waiting == 0) {
			continue
		}
		if s.pending == 0 {
			// Deposits done; a server with --require-active waits for
			// the validators' activation.
			line := fmt.Sprintf("pod %s: waiting for activation: %d of %d keys active, %d waiting for activation (%s)",
				p.pod, s.active, p.want, waiting, time.Since(start).Round(time.Second))
			p.show(line)
			shown = true
			continue
		}
		for _, d := range s.deposits {
			msg, ok := p.changed(d)
			if !ok {
				continue
			}
			if p.tty != nil {
				fmt.Fprint(p.tty, "\r\033[K"+msg+"\n")
			} else {
				p.logger.Info(msg, "pubkey", d.pubkey, "tx", d.tx, "block", d.block, "blocks_to_go", d.toGo)
			}
		}
		line := fmt.Sprintf("pod %s: waiting for deposits: %d of %d keys ready; %s (%s)",
			p.pod, s.assigned, p.want, depositSummary(s.deposits), time.Since(start).Round(time.Second))
		p.show(line)
		shown = true
	}
}

// activationLine: "pod p: waiting for activation: 0 of 2 keys active, 2
// pool keys activating (server: pod p holds 0 of 2 keys active; it lacks
// 2: ...) (1m5s)", the time counted from the server's start of the wait
// (else from start).
func activationLine(pod string, w *pb.ActivationWait, start time.Time) string {
	line := fmt.Sprintf("pod %s: waiting for activation: %d of %d keys active", pod, w.GetActive(), w.GetWant())
	if n := w.GetInactive(); n > 0 {
		line += fmt.Sprintf(", %d waiting for activation", n)
	}
	if w.GetLack() > 0 {
		line += fmt.Sprintf(", %s activating", plural(int(w.GetActivating()), "pool key"))
	}
	if since := w.GetSince(); since.IsValid() && !since.AsTime().IsZero() {
		start = since.AsTime()
	}
	return fmt.Sprintf("%s (server: %s) (%s)", line, w.GetMessage(), time.Since(start).Round(time.Second))
}

// show writes the progress line: the live line on a terminal, else a log
// line.
func (p *progress) show(line string) {
	if p.tty != nil {
		fmt.Fprint(p.tty, "\r\033[K"+line)
	} else {
		p.logger.Info(line)
	}
}

// changed returns the line that reports d once its transaction is sent
// and once it is in a block (again when either changes: a re-signed
// transaction, a reorganization), and remembers d.
func (p *progress) changed(d pendingDeposit) (string, bool) {
	if p.seen == nil {
		p.seen = make(map[string]pendingDeposit)
	}
	last, known := p.seen[d.pubkey]
	p.seen[d.pubkey] = d
	switch {
	case d.tx == "" || (known && last.tx == d.tx && last.block == d.block):
		return "", false
	case d.block == 0:
		return fmt.Sprintf("pod %s: deposit of key %s sent: transaction %s", p.pod, d.pubkey, d.tx), true
	default:
		return fmt.Sprintf("pod %s: deposit of key %s in block %d (transaction %s), %s to go", p.pod, d.pubkey, d.block, d.tx, plural(int(d.toGo), "more block")), true
	}
}

// depositSummary: "3 not sent yet, 2 sent and in no block yet, 11 in blocks
// 41-42 (at most 2 more blocks to go)".
func depositSummary(ds []pendingDeposit) string {
	unsent, sent, in := 0, 0, 0
	var lo, hi, toGo uint64
	for _, d := range ds {
		switch {
		case d.tx == "":
			unsent++
		case d.block == 0:
			sent++
		default:
			if in == 0 || d.block < lo {
				lo = d.block
			}
			hi, toGo = max(hi, d.block), max(toGo, d.toGo)
			in++
		}
	}
	var parts []string
	if unsent > 0 {
		parts = append(parts, fmt.Sprintf("%d not sent yet", unsent))
	}
	if sent > 0 {
		parts = append(parts, fmt.Sprintf("%d sent and in no block yet", sent))
	}
	if in > 0 {
		blocks := fmt.Sprintf("block %d", lo)
		if hi != lo {
			blocks = fmt.Sprintf("blocks %d-%d", lo, hi)
		}
		parts = append(parts, fmt.Sprintf("%d in %s (at most %s to go)", in, blocks, plural(int(toGo), "more block")))
	}
	return plural(len(ds), "deposit") + ": " + strings.Join(parts, ", ")
}

// stop ends the report and clears the live line.
func (p *progress) stop() {
	p.stopOnce.Do(func() { close(p.stopCh) })
	<-p.done
}

// interrupted is the error of a command stopped by Ctrl-C (SIGINT) or
// SIGTERM: exit code 130 and what the pod is left with.
type interrupted struct{ msg string }

func (e *interrupted) Error() string { return e.msg }
func (e *interrupted) ExitCode() int { return 130 }

// interruptedRequest describes a request stopped while it waited or wrote:
// what the server holds for the pod (asked with a fresh short deadline) and
// what was written.
func interruptedRequest(c keyLister, pod, out string, written int, during string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	state := "the server could not be asked what it holds for the pod"
	if s, err := readPodState(ctx, c, pod); err == nil {
		state = "the server holds " + s.String() + " for pod " + pod
		if s.pending > 0 {
			state += " (their deposits go on without this command)"
		}
	}
	return &interrupted{msg: fmt.Sprintf("interrupted %s: %s; %s written in %s; run the same command again to finish",
		during, state, plural(written, "keystore"), out)}
}
