// Package client talks to a pkmanager server over gRPC (pkmanager.v1), waiting
// and retrying while the server is unreachable, within the caller's deadline.
package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/pkmanager/pkmanager/api/pkmanager/v1"
)

// Client is a connection to one server. It is safe for concurrent use.
type Client struct {
	addr   string
	conn   *grpc.ClientConn
	keys   pb.KeyServiceClient
	logger *slog.Logger
}

// Options configure a Client.
type Options struct {
	Logger *slog.Logger
	// MaxRetryDelay caps the wait between attempts (default 5 s).
	MaxRetryDelay time.Duration
	// Security: TLS and the pod's token (auth.go).
	Security
}

// New prepares a client for the server at addr (host:port). It does not
// connect yet: every call waits for the server within its context's deadline.
func New(addr string, opts Options) (*Client, error) {
	if err := CheckAddress(addr); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxRetryDelay <= 0 {
		opts.MaxRetryDelay = 5 * time.Second
	}
	dialSec, err := opts.Security.dialOptions()
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(addr, append(dialSec,
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: opts.MaxRetryDelay,
			},
			MinConnectTimeout: 5 * time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)),
	)...)
	if err != nil {
		return nil, fmt.Errorf("server address %q: %w", addr, err)
	}
	return &Client{addr: addr, conn: conn, keys: pb.NewKeyServiceClient(conn), logger: opts.Logger}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// RequestKeys asks for the pod's keys (count 0 means 1). The server answers
// the same set to retries, so the call is retried while the server is
// unavailable.
func (c *Client) RequestKeys(ctx context.Context, pod, podUID string, count uint32) (*pb.RequestKeysResponse, error) {
	var resp *pb.RequestKeysResponse
	err := c.retry(ctx, "request keys", func(ctx context.Context) error {
		var err error
		resp, err = c.keys.RequestKeys(ctx, &pb.RequestKeysRequest{PodName: pod, PodUid: podUID, Count: count})
		return err
	})
	return resp, err
}

// ReleaseKeys returns the pod's keys to the pool (idempotent), with the
// slashing-protection interchange of its validator client when
// slashingProtection is not empty (the server records it with the release).
func (c *Client) ReleaseKeys(ctx context.Context, pod, podUID string, slashingProtection []byte) (*pb.ReleaseKeysResponse, error) {
	var resp *pb.ReleaseKeysResponse
	err := c.retry(ctx, "release keys", func(ctx context.Context) error {
		var err error
		resp, err = c.keys.ReleaseKeys(ctx, &pb.ReleaseKeysRequest{PodName: pod, PodUid: podUID, SlashingProtection: slashingProtection})
		return err
	})
	return resp, err
}

// DepositData returns the deposit data of every key the server minted.
func (c *Client) DepositData(ctx context.Context) ([]*pb.DepositData, error) {
	var out []*pb.DepositData
	err := c.retry(ctx, "list deposit data", func(ctx context.Context) error {
		out = out[:0]
		stream, err := c.keys.ListDepositData(ctx, &pb.ListDepositDataRequest{})
		if err != nil {
			return err
		}
		for {
			d, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			out = append(out, d)
		}
	})
	return out, err
}

// ListKeys returns public information about keys.
func (c *Client) ListKeys(ctx context.Context, req *pb.ListKeysRequest) ([]*pb.KeyInfo, error) {
	out, _, err := c.listKeys(ctx, req)
	return out, err
}

// PodKeys lists the pod's keys, and what a request of the pod waiting for
// activation on the server waits for (nil when none waits there; the
// header pb.ActivationWaitHeader).
func (c *Client) PodKeys(ctx context.Context, pod string) ([]*pb.KeyInfo, *pb.ActivationWait, error) {
	out, md, err := c.listKeys(ctx, &pb.ListKeysRequest{PodName: pod})
	if err != nil {
		return nil, nil, err
	}
	v := md.Get(pb.ActivationWaitHeader)
	if len(v) == 0 {
		return out, nil, nil
	}
	var w pb.ActivationWait
	if err := proto.Unmarshal([]byte(v[0]), &w); err != nil {
		return nil, nil, fmt.Errorf("list keys of pod %s: header %s: %w", pod, pb.ActivationWaitHeader, err)
	}
	return out, &w, nil
}

// listKeys is ListKeys, with the response header.
func (c *Client) listKeys(ctx context.Context, req *pb.ListKeysRequest) ([]*pb.KeyInfo, metadata.MD, error) {
	var (
		out []*pb.KeyInfo
		md  metadata.MD
	)
	err := c.retry(ctx, "list keys", func(ctx context.Context) error {
		out = out[:0]
		stream, err := c.keys.ListKeys(ctx, req)
		if err != nil {
			return err
		}
		// A stream that broke before its header says so in Recv.
		md, _ = stream.Header()
		for {
			k, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			out = append(out, k)
		}
	})
	return out, md, err
}

// NoticeAfter is how long a call waits for an unreachable server before
// it says so (the call goes on retrying until its context ends).
const NoticeAfter = 2 * time.Second

// noticeEvery repeats the notice while the server stays unreachable.
const noticeEvery = 30 * time.Second

// retry runs call until it succeeds, fails with a non-retryable status, or
// ctx ends. Unavailable (server down or restarting) is retried with backoff;
// calls fail fast, so the loop sees why. Within NoticeAfter of the first
// failure (or of a connection that does not come up) the caller is told
// that the server is unreachable and until when it is retried; a peer that
// does not speak gRPC (the HTTP port, a TLS port without --ca-file) fails
// at once.
func (c *Client) retry(ctx context.Context, what string, call func(context.Context) error) error {
	delay := 200 * time.Millisecond
	start := time.Now()
	n := &notice{c: c, ctx: ctx}
	defer n.stop()
	n.timer = time.AfterFunc(NoticeAfter, func() {
		if c.conn.GetState() != connectivity.Ready {
			n.say(nil)
		}
	})
	var last error
	for attempt := 1; ; attempt++ {
		err := call(ctx)
		if err == nil {
			n.recovered(start)
			return nil
		}
		code := status.Code(err)
		if code == codes.Unavailable && notGRPC(statusText(err)) {
			return fmt.Errorf("%s: server %s does not answer gRPC: is it the HTTP port? --server wants the gRPC port (%s by default); "+
				"a TLS listener needs --ca-file", what, c.addr, DefaultPort)
		}
		if code != codes.Unavailable {
			if (code == codes.DeadlineExceeded || code == codes.Canceled) && ctx.Err() != nil {
				if last == nil {
					last = err
				}
				return c.unreachable(what, start, last, ctx.Err())
			}
			// Worded for a person, and still the server's status for a
			// program (status.Code, errors.As).
			return &quietWrap{msg: what + ": " + statusText(err), err: err}
		}
		last = err
		n.say(err)
		select {
		case <-ctx.Done():
			return c.unreachable(what, start, last, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// notice tells the caller, once and then every noticeEvery, that the server
// does not answer.
type notice struct {
	c     *Client
	ctx   context.Context
	timer *time.Timer
	mu    sync.Mutex
	first time.Time // of the first notice
	last  time.Time
}

func (n *notice) stop() { n.timer.Stop() }

// say logs the notice unless it was given less than noticeEvery ago; err is
// the last failure (nil: the connection is not up yet).
func (n *notice) say(err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	now := time.Now()
	if !n.last.IsZero() && now.Sub(n.last) < noticeEvery {
		if err != nil {
			n.c.logger.Debug("server unavailable, retrying", slog.String("server", n.c.addr), slog.String("error", reasonText(err)))
		}
		return
	}
	until := "the call is canceled"
	if d, ok := n.ctx.Deadline(); ok {
		until = d.Format("15:04:05") + " (--timeout)"
	}
	state := "unreachable"
	reason := "no connection yet"
	if err != nil {
		reason = reasonText(err)
		if !transportError(err) {
			state = "unavailable"
		}
	}
	msg := fmt.Sprintf("server %s %s (%s), retrying until %s", n.c.addr, state, reason, until)
	if !n.first.IsZero() {
		msg = fmt.Sprintf("server %s still %s after %s (%s), retrying until %s", n.c.addr, state, now.Sub(n.first).Round(time.Second), reason, until)
	} else {
		n.first = now
	}
	n.last = now
	n.c.logger.Warn(msg)
}

// recovered says that the server answers, when a notice was given.
func (n *notice) recovered(start time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.first.IsZero() {
		n.c.logger.Info(fmt.Sprintf("server %s answers (after %s)", n.c.addr, time.Since(start).Round(100*time.Millisecond)))
	}
}

// transportError reports whether a gRPC Unavailable came from the
// connection rather than from the server's answer.
func transportError(err error) bool {
	msg := status.Convert(err).Message()
	return strings.Contains(msg, "connection error") || strings.Contains(msg, "transport") || strings.Contains(msg, "dial")
}

func (c *Client) unreachable(what string, start time.Time, last, ctxErr error) error {
	msg := fmt.Sprintf("%s: no answer from server %s within %s", what, c.addr, time.Since(start).Round(time.Millisecond))
	if errors.Is(ctxErr, context.DeadlineExceeded) {
		msg += " (--timeout)"
	}
	if last != nil {
		msg += "; last error: " + reasonText(last)
	}
	return &quietWrap{msg: msg, err: ctxErr}
}

// quietWrap is an error with its own message that still matches the error
// it wraps (errors.Is), without repeating that error's text.
type quietWrap struct {
	msg string
	err error
}

func (e *quietWrap) Error() string { return e.msg }
func (e *quietWrap) Unwrap() error { return e.err }

// reasonText is the part of a connection error a person needs
// ("connect: connection refused"), or the status text of any other error.
func reasonText(err error) string {
	s, ok := status.FromError(err)
	if !ok || s.Code() != codes.Unavailable || !transportError(err) {
		return statusText(err)
	}
	msg := s.Message()
	for _, prefix := range []string{`connection error: desc = "`, `transport: `, `Error while dialing: `, `error while dialing: `} {
		msg = strings.TrimPrefix(msg, prefix)
	}
	msg = strings.TrimSuffix(msg, `"`)
	// "dial tcp 127.0.0.1:1: connect: connection refused" -> "connect: connection refused"
	if rest, ok := strings.CutPrefix(msg, "dial tcp "); ok {
		if _, after, ok := strings.Cut(rest, ": "); ok {
			msg = after
		}
	}
	return msg
}

// statusText renders a gRPC error for a person: the server's message,
// after a few words where the message alone would not say what happened
// (never the status code's Go name).
func statusText(err error) string {
	s, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	msg := s.Message()
	if what := codeWords[s.Code()]; what != "" && !strings.HasPrefix(msg, what) {
		return what + ": " + msg
	}
	return msg
}

// codeWords name the codes whose messages do not say what went wrong.
var codeWords = map[codes.Code]string{
	codes.Unauthenticated:  "not authenticated",
	codes.PermissionDenied: "permission denied",
	codes.Unavailable:      "server unavailable",
	codes.DeadlineExceeded: "timed out",
	codes.Canceled:         "canceled",
	codes.Internal:         "server error",
	codes.Unknown:          "server error",
	codes.DataLoss:         "server error",
	codes.Unimplemented:    "not supported by this server",
}
