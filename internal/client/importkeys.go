package client

import (
	"context"

	"google.golang.org/grpc"

	pb "github.com/pkmanager/pkmanager/api/pkmanager/v1"
)

// ImportKeys adds keys to the server's pool as available (idempotent: keys
// already stored are reported, not changed), retried while the server is
// unavailable.
func (c *Client) ImportKeys(ctx context.Context, req *pb.ImportKeysRequest) (*pb.ImportKeysResponse, error) {
	var resp *pb.ImportKeysResponse
	err := c.retry(ctx, "import keys", func(ctx context.Context) error {
		var err error
		resp, err = c.keys.ImportKeys(ctx, req, grpc.MaxCallSendMsgSize(64<<20))
		return err
	})
	return resp, err
}

// RecoverKey returns a deposit-failed key to the pool once its deposit is
// on chain (see KeyService.RecoverKey), retried while the server is
// unavailable.
func (c *Client) RecoverKey(ctx context.Context, pubkey []byte) (*pb.RecoverKeyResponse, error) {
	var resp *pb.RecoverKeyResponse
	err := c.retry(ctx, "recover key", func(ctx context.Context) error {
		var err error
		resp, err = c.keys.RecoverKey(ctx, &pb.RecoverKeyRequest{Pubkey: pubkey})
		return err
	})
	return resp, err
}
