package client

import (
	"context"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Health asks the server's standard gRPC health service about the whole
// server and returns its status ("SERVING", "NOT_SERVING").
func (c *Client) Health(ctx context.Context) (string, error) {
	var st string
	err := c.retry(ctx, "health check", func(ctx context.Context) error {
		resp, err := healthpb.NewHealthClient(c.conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		st = resp.GetStatus().String()
		return nil
	})
	return st, err
}
