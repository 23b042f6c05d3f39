package client

import (
	"context"

	pb "github.com/pkmanager/pkmanager/api/pkmanager/v1"
)

// ExitKeys signs voluntary exits (and submits them; see
// KeyService.ExitKeys), retried while the server is unavailable (asking
// again is safe: exiting keys are signed and submitted again).
func (c *Client) ExitKeys(ctx context.Context, req *pb.ExitKeysRequest) (*pb.ExitKeysResponse, error) {
	var resp *pb.ExitKeysResponse
	err := c.retry(ctx, "exit keys", func(ctx context.Context) error {
		var err error
		resp, err = c.keys.ExitKeys(ctx, req)
		return err
	})
	return resp, err
}

// RetireKey takes a key out of circulation for good (see
// KeyService.RetireKey), retried while the server is unavailable.
func (c *Client) RetireKey(ctx context.Context, pubkey []byte, reason string) error {
	return c.retry(ctx, "retire key", func(ctx context.Context) error {
		_, err := c.keys.RetireKey(ctx, &pb.RetireKeyRequest{Pubkey: pubkey, Reason: reason})
		return err
	})
}
