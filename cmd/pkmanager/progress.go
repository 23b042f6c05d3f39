package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	pb "github.com/pkmanager/pkmanager/api/pkmanager/v1"
)

// keyLister is what the progress report and the interrupt report ask the
// server (client.Client).
type keyLister interface {
	ListKeys(ctx context.Context, req *pb.ListKeysRequest) ([]*pb.KeyInfo, error)
}

// podState is what the server holds for a pod, by key state.
type podState struct {
	pending, assigned, other int
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
	ks, err := c.ListKeys(ctx, &pb.ListKeysRequest{PodName: pod})
	if err != nil {
		return podState{}, err
	}
	var s podState
	for _, k := range ks {
		switch k.GetState() {
		case "pending-deposit":
			s.pending++
		case "assigned":
			s.assigned++
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
		if s.pending == 0 {
			continue
		}
		line := fmt.Sprintf("pod %s: waiting for deposits: %d of %d keys ready, %d waiting for their deposits to be in a block (%s)",
			p.pod, s.assigned, p.want, s.pending, time.Since(start).Round(time.Second))
		if p.tty != nil {
			fmt.Fprint(p.tty, "\r\033[K"+line)
		} else {
			p.logger.Info(line)
		}
		shown = true
	}
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
