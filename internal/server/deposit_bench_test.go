package server

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/devchain"
	"github.com/pkmanager/pkmanager/internal/mint"
	"github.com/pkmanager/pkmanager/internal/seal"
)

// BenchmarkChainRequest measures the time from a request for n new keys to
// the keys returned, with on-chain deposits on the embedded chain making a
// block every second (1 confirmation): the real server over gRPC, each
// iteration a new pod whose n keys are minted, simulated, signed, recorded,
// sent, mined and confirmed. Reports the seconds per request and the blocks
// made while it waited (blocks/op; 1 means the deposits went into the next
// block).
//
//	go test -run x -bench ChainRequest -benchtime 3x ./internal/server/
func BenchmarkChainRequest(b *testing.B) {
	for _, n := range []int{1, 16, 64, 256} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			kek, err := seal.ParseKEK(strings.Repeat("42", seal.KEKSize))
			if err != nil {
				b.Fatal(err)
			}
			dir := b.TempDir()
			fork, _ := deposit.ParseForkVersion("0x10000038")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			srv, err := New(ctx, Options{
				StoreURL: "bolt://" + filepath.Join(dir, "pk.db"), KEK: kek, GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
				MaxKeysPerRequest: 1024,
				Mint: mint.Config{Network: deposit.Network{Name: "devnet", GenesisForkVersion: fork},
					Withdrawal: mint.WithdrawalExecution, WithdrawalAddress: [20]byte{19: 1}},
				Deposits: DepositOptions{Mode: DepositsChain, DevChain: &devchain.Config{DataDir: filepath.Join(dir, "chain"), BlockTime: time.Second}},
			})
			if err != nil {
				b.Fatal(err)
			}
			served := make(chan error, 1)
			go func() { served <- srv.Serve(ctx) }()
			conn, err := grpc.NewClient(srv.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			client := pb.NewKeyServiceClient(conn)
			chain := srv.deposits.chain.Client()
			// Warm up (first deposit into an empty contract, connections).
			if _, err := client.RequestKeys(ctx, &pb.RequestKeysRequest{PodName: "warmup", Count: 1}); err != nil {
				b.Fatal(err)
			}
			var blocks, maxBlocks uint64
			b.ResetTimer()
			for i := range b.N {
				// Start at various points within a block interval, as pods would.
				b.StopTimer()
				time.Sleep(time.Duration(i%4) * 250 * time.Millisecond)
				b.StartTimer()
				before, err := chain.BlockNumber(ctx)
				if err != nil {
					b.Fatal(err)
				}
				resp, err := client.RequestKeys(ctx, &pb.RequestKeysRequest{PodName: fmt.Sprintf("pod-%d", i), Count: uint32(n)})
				if err != nil {
					b.Fatal(err)
				}
				after, err := chain.BlockNumber(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if len(resp.GetKeys()) != n || resp.GetMinted() != uint32(n) {
					b.Fatalf("got %d keys, minted %d", len(resp.GetKeys()), resp.GetMinted())
				}
				blocks += after - before
				maxBlocks = max(maxBlocks, after-before)
			}
			b.StopTimer()
			b.ReportMetric(float64(blocks)/float64(b.N), "blocks/op")
			b.ReportMetric(float64(maxBlocks), "max-blocks")
			cancel()
			if err := <-served; err != nil {
				b.Fatal(err)
			}
		})
	}
}
