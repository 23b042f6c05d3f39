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
		resp, err = c.keys.ImportKeys(ctx, req, grpc.WaitForReady(true), grpc.MaxCallSendMsgSize(64<<20))
		return err
	})
	return resp, err
}
