// Package client talks to a pkmanager server over gRPC (pkmanager.v1), waiting
// and retrying while the server is unreachable, within the caller's deadline.
package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
	if addr == "" {
		return nil, errors.New("no server address given (--server host:port)")
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
		resp, err = c.keys.RequestKeys(ctx, &pb.RequestKeysRequest{PodName: pod, PodUid: podUID, Count: count}, grpc.WaitForReady(true))
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
		resp, err = c.keys.ReleaseKeys(ctx, &pb.ReleaseKeysRequest{PodName: pod, PodUid: podUID, SlashingProtection: slashingProtection},
			grpc.WaitForReady(true))
		return err
	})
	return resp, err
}

// DepositData returns the deposit data of every key the server minted.
func (c *Client) DepositData(ctx context.Context) ([]*pb.DepositData, error) {
	var out []*pb.DepositData
	err := c.retry(ctx, "list deposit data", func(ctx context.Context) error {
		out = out[:0]
		stream, err := c.keys.ListDepositData(ctx, &pb.ListDepositDataRequest{}, grpc.WaitForReady(true))
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
	var out []*pb.KeyInfo
	err := c.retry(ctx, "list keys", func(ctx context.Context) error {
		out = out[:0]
		stream, err := c.keys.ListKeys(ctx, req, grpc.WaitForReady(true))
		if err != nil {
			return err
		}
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
	return out, err
}

// retry runs call until it succeeds, fails with a non-retryable status, or
// ctx ends. Unavailable (server down or restarting) is retried with backoff.
func (c *Client) retry(ctx context.Context, what string, call func(context.Context) error) error {
	delay := 200 * time.Millisecond
	start := time.Now()
	var last error
	for attempt := 1; ; attempt++ {
		err := call(ctx)
		if err == nil {
			return nil
		}
		code := status.Code(err)
		if code != codes.Unavailable {
			if (code == codes.DeadlineExceeded || code == codes.Canceled) && ctx.Err() != nil {
				if last == nil {
					last = err
				}
				return c.unreachable(what, start, last, ctx.Err())
			}
			return fmt.Errorf("%s: %s", what, statusText(err))
		}
		last = err
		c.logger.Warn("server unavailable, retrying", slog.String("server", c.addr), slog.Int("attempt", attempt),
			slog.String("error", statusText(err)))
		select {
		case <-ctx.Done():
			return c.unreachable(what, start, last, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}

func (c *Client) unreachable(what string, start time.Time, last, ctxErr error) error {
	msg := fmt.Sprintf("%s: no answer from server %s within %s", what, c.addr, time.Since(start).Round(time.Millisecond))
	if last != nil {
		msg += " (last error: " + statusText(last) + ")"
	}
	return fmt.Errorf("%s: %w", msg, ctxErr)
}

// statusText renders a gRPC error as "Code: message".
func statusText(err error) string {
	if s, ok := status.FromError(err); ok {
		return fmt.Sprintf("%s: %s", s.Code(), s.Message())
	}
	return err.Error()
}
