package depositcontract

import (
	"context"
	"math/big"
	"testing"
	"time"

	ethereum "github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
)

// laggingChain mines the deployment in block 8 at once, but its head (what
// "latest" reads) is still block 7: go-ethereum indexes a new block's
// transactions before it moves the head pointer, so a receipt can be found
// while the latest state does not have the block yet.
type laggingChain struct {
	sent *types.Transaction
	addr common.Address
}

func (c *laggingChain) ChainID(context.Context) (*big.Int, error) { return big.NewInt(1337), nil }
func (c *laggingChain) PendingNonceAt(context.Context, common.Address) (uint64, error) {
	return 0, nil
}
func (c *laggingChain) HeaderByNumber(context.Context, *big.Int) (*types.Header, error) {
	return &types.Header{Number: big.NewInt(7), BaseFee: big.NewInt(1)}, nil
}
func (c *laggingChain) SuggestGasTipCap(context.Context) (*big.Int, error) { return big.NewInt(1), nil }
func (c *laggingChain) EstimateGas(context.Context, ethereum.CallMsg) (uint64, error) {
	return 1_000_000, nil
}
func (c *laggingChain) SendTransaction(_ context.Context, tx *types.Transaction) error {
	c.sent = tx
	return nil
}
func (c *laggingChain) TransactionReceipt(_ context.Context, h common.Hash) (*types.Receipt, error) {
	if c.sent == nil || c.sent.Hash() != h {
		return nil, ethereum.NotFound
	}
	return &types.Receipt{Status: types.ReceiptStatusSuccessful, BlockNumber: big.NewInt(8), TxHash: h}, nil
}
func (c *laggingChain) CodeAt(_ context.Context, a common.Address, block *big.Int) ([]byte, error) {
	if a == c.addr && block != nil && block.Int64() >= 8 {
		return []byte{0x60}, nil
	}
	return nil, nil
}

// TestDeployChecksCodeAtTheReceiptsBlock: Deploy looks for the contract's
// code in the block of its receipt, not in whatever block is latest (a dev
// chain failed to start with "no code ... after the deployment" when the
// head lagged).
func TestDeployChecksCodeAtTheReceiptsBlock(t *testing.T) {
	key, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	c := &laggingChain{addr: crypto.CreateAddress(crypto.PubkeyToAddress(key.PublicKey), 0)}
	d, err := Deploy(t.Context(), c, key, nil, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if d.Address != c.addr || d.Block != 8 {
		t.Fatalf("Deploy = %s in block %d, want %s in block 8", d.Address, d.Block, c.addr)
	}
}
