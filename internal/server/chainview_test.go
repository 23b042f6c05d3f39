package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/depositcontract"
	"github.com/pkmanager/pkmanager/internal/devchain"
	"github.com/pkmanager/pkmanager/internal/keys"
	"github.com/pkmanager/pkmanager/internal/mint"
	"github.com/pkmanager/pkmanager/internal/seal"
	"github.com/pkmanager/pkmanager/internal/store"
)

// chainServer is a server in chain mode on a shared dev chain.
type chainServer struct {
	srv    *Server
	client pb.KeyServiceClient
}

// operatorKey is an account of the dev chains below other than the
// server's funder: an operator's own wallet.
var operatorKey, _ = crypto.HexToECDSA("59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")

func startDevChain(t *testing.T) *devchain.Chain {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := devchain.Start(ctx, devchain.Config{BlockTime: 200 * time.Millisecond, RPCAddr: "127.0.0.1:0",
		Alloc: types.GenesisAlloc{crypto.PubkeyToAddress(operatorKey.PublicKey): {Balance: new(big.Int).Mul(big.NewInt(1000), big.NewInt(1e18))}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func startChainServer(t *testing.T, chain *devchain.Chain, dir string, deriver *keys.Deriver) *chainServer {
	t.Helper()
	kek, err := seal.ParseKEK(strings.Repeat("42", seal.KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	fork, _ := deposit.ParseForkVersion("0x10000038")
	mc := mint.Config{Network: deposit.Network{Name: "devnet", GenesisForkVersion: fork},
		Withdrawal: mint.WithdrawalExecution, WithdrawalAddress: [20]byte{19: 1}, Deriver: deriver}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := New(ctx, Options{
		StoreURL: "bolt://" + filepath.Join(dir, "pk.db"), KEK: kek, GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Mint: mc,
		Deposits: DepositOptions{Mode: DepositsChain, RPCURL: chain.RPCEndpoint(), Contract: chain.DepositContract(),
			FunderKey: chain.FunderKey(), PollInterval: 50 * time.Millisecond},
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	conn, err := grpc.NewClient(srv.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &chainServer{srv: srv, client: pb.NewKeyServiceClient(conn)}
}

func newDeriver(t *testing.T) *keys.Deriver {
	t.Helper()
	seed := make([]byte, 32)
	rand.Read(seed)
	d, err := keys.NewDeriver(seed)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func requestKeys(t *testing.T, s *chainServer, pod string, n uint32) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := s.client.RequestKeys(ctx, &pb.RequestKeysRequest{PodName: pod, Count: n})
	if err != nil {
		t.Fatalf("RequestKeys(%s): %v", pod, err)
	}
	out := map[string]string{}
	for _, k := range resp.GetKeys() {
		out[hex.EncodeToString(k.GetPubkey())] = k.GetDerivationPath()
	}
	return out
}

// Two installations on one mnemonic: the second skips the derivation
// indices whose keys the first deposited, and says so in its audit trail.
func TestDerivationSkipsKeysDepositedElsewhere(t *testing.T) {
	chain := startDevChain(t)
	seed := make([]byte, 32)
	rand.Read(seed)
	d1, err := keys.NewDeriver(seed)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := keys.NewDeriver(seed)
	if err != nil {
		t.Fatal(err)
	}
	first := startChainServer(t, chain, t.TempDir(), d1)
	a := requestKeys(t, first, "validator-0", 2)
	second := startChainServer(t, chain, t.TempDir(), d2)
	b := requestKeys(t, second, "validator-0", 2)
	for pk, path := range b {
		if _, dup := a[pk]; dup {
			t.Errorf("key %s (%s) handed out by both installations", pk, path)
		}
	}
	paths := map[string]bool{}
	for _, p := range b {
		paths[p] = true
	}
	if !paths["m/12381/3600/2/0/0"] || !paths["m/12381/3600/3/0/0"] {
		t.Errorf("second installation's keys %v, want indices 2 and 3 (0 and 1 are deposited)", b)
	}
	events, err := second.srv.store.ListAudit(context.Background(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	skipped := 0
	for _, e := range events {
		if e.Action == mint.AuditDerivationSkipped {
			skipped++
		}
	}
	if skipped != 2 {
		t.Errorf("%d derivation-skipped audit events, want 2: %+v", skipped, events)
	}
	// Every key was deposited exactly once.
	head, _ := chain.Client().BlockNumber(context.Background())
	evs, err := depositcontract.Events(context.Background(), chain.Client(), chain.DepositContract(), 0, head, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 4 {
		t.Errorf("%d deposits on chain, want 4", len(evs))
	}
}

// The documented recovery of a deposit-failed key: deposit it by other
// means, then RecoverKey makes it available; before that it refuses.
func TestRecoverDepositFailedKey(t *testing.T) {
	chain := startDevChain(t)
	s := startChainServer(t, chain, t.TempDir(), nil)
	ctx := context.Background()

	// A key whose stored deposit data the contract rejects (a wrong
	// deposit_data_root): its deposit fails in simulation.
	m, err := mint.New(mint.Config{Sealer: s.srv.opts.KEK, Network: s.srv.opts.Mint.Network,
		Withdrawal: mint.WithdrawalExecution, WithdrawalAddress: [20]byte{19: 1}})
	if err != nil {
		t.Fatal(err)
	}
	nks, err := m.Mint(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	good := *nks[0].Deposit
	bad := good
	bad.DepositDataRoot[0] ^= 0xff
	nks[0].Deposit = &bad
	pk := nks[0].Pubkey
	if err := s.srv.store.AddPending(ctx, store.AddParams{Keys: nks, Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		k, err := s.srv.store.GetKey(ctx, pk)
		if err != nil {
			t.Fatal(err)
		}
		if k.State == store.StateDepositFailed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("key still %s", k.State)
		}
		time.Sleep(50 * time.Millisecond)
	}

	_, err = s.client.RecoverKey(ctx, &pb.RecoverKeyRequest{Pubkey: pk[:]})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "no deposit on chain") {
		t.Fatalf("RecoverKey before any deposit = %v, want FailedPrecondition: no deposit on chain", err)
	}
	if k, _ := s.srv.store.GetKey(ctx, pk); k.State != store.StateDepositFailed {
		t.Fatalf("a refused recovery changed the key: %s", k.State)
	}

	// The operator deposits it with correct data from another account.
	sendDeposit(t, chain, pk, &good)
	var resp *pb.RecoverKeyResponse
	for {
		resp, err = s.client.RecoverKey(ctx, &pb.RecoverKeyRequest{Pubkey: pk[:]})
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("RecoverKey after the deposit: %v", err)
	}
	if resp.GetKey().GetState() != string(store.StateAvailable) || resp.GetBlock() == 0 {
		t.Errorf("RecoverKey = %+v", resp)
	}
	got := requestKeys(t, s, "validator-9", 1)
	if _, ok := got[hex.EncodeToString(pk[:])]; !ok {
		t.Errorf("the recovered key was not handed out from the pool: %v", got)
	}
	if _, err := s.client.RecoverKey(ctx, &pb.RecoverKeyRequest{Pubkey: pk[:]}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("RecoverKey of an assigned key = %v, want FailedPrecondition", err)
	}
	if _, err := s.client.RecoverKey(ctx, &pb.RecoverKeyRequest{Pubkey: pk[:4]}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("RecoverKey of a short key = %v, want InvalidArgument", err)
	}
}

// sendDeposit pays d for pk from a funded account other than the server's.
func sendDeposit(t *testing.T, chain *devchain.Chain, pk store.Pubkey, d *store.DepositData) {
	t.Helper()
	ctx := context.Background()
	key := operatorKey
	nonce, err := chain.Client().PendingNonceAt(ctx, crypto.PubkeyToAddress(key.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	to := chain.DepositContract()
	tx, err := types.SignNewTx(key, types.LatestSignerForChainID(devchain.ChainID), &types.DynamicFeeTx{
		ChainID: devchain.ChainID, Nonce: nonce, GasTipCap: big.NewInt(1e9), GasFeeCap: big.NewInt(100e9), Gas: 300_000,
		To: &to, Value: depositcontract.GweiToWei(d.AmountGwei),
		Data: depositcontract.PackDeposit(pk, d.WithdrawalCredentials, d.Signature, d.DepositDataRoot),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := chain.Client().SendTransaction(ctx, tx); err != nil {
		t.Fatal(err)
	}
}
