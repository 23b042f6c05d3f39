package depositor

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/pkmanager/pkmanager/internal/depositcontract"
	"github.com/pkmanager/pkmanager/internal/store"
)

// item is one pending-deposit key the sender works on.
type item struct {
	key         store.Key          // Pubkey, Pod, Deposit, DepositTx as last read or written
	tx          *types.Transaction // the recorded transaction; nil: nothing sent (yet)
	broadcastAt time.Time          // zero: not broadcast by this process yet
	receipt     *types.Receipt     // set once the transaction is seen mined
}

func (it *item) recordedAt() time.Time {
	if it.key.DepositTx != nil {
		return it.key.DepositTx.RecordedAt
	}
	return time.Time{}
}

// sender is the state of one Run.
type sender struct {
	d       *Depositor
	chainID *big.Int
	signer  types.Signer
	items   map[store.Pubkey]*item
	// used holds the nonces of transactions this process signed or found
	// recorded and that may still be mined; a new transaction never takes
	// one of them.
	used       map[uint64]common.Hash
	rescan     bool
	lastRescan time.Time
	lastHead   uint64
}

// Run is the sender loop: it sends the deposits of pending-deposit keys,
// confirms or fails them, and recovers the deposits a previous process left
// unfinished. It returns nil when ctx ends, or an error when the chain is not
// the configured one. Only one Run may be active per funder account (see the
// package documentation); a second concurrent Run of this Depositor fails.
func (d *Depositor) Run(ctx context.Context) error {
	if !d.running.CompareAndSwap(false, true) {
		return errors.New("depositor: the sender is already running")
	}
	defer d.running.Store(false)
	ctx = store.WithActor(ctx, Actor)
	log := d.cfg.Logger
	var chainID *big.Int
	backoff := d.cfg.PollInterval
	for {
		id, count, err := d.Check(ctx)
		if err == nil {
			chainID = id
			log.Info("deposit sender running", slog.String("funder", d.funder.Hex()),
				slog.String("contract", d.cfg.Contract.Hex()), slog.String("chain_id", id.String()),
				slog.Uint64("contract_deposits", count), slog.Uint64("confirmations", d.cfg.Confirmations))
			break
		}
		if errors.Is(err, ErrWrongChain) || errors.Is(err, ErrNoContract) {
			log.Error("deposit sender cannot run", slog.Any("error", err))
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		log.Warn("deposit sender waits for the execution node", slog.Any("error", err), slog.Duration("retry_in", backoff))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
	s := &sender{
		d: d, chainID: chainID, signer: types.LatestSignerForChainID(chainID),
		items: make(map[store.Pubkey]*item), used: make(map[uint64]common.Hash), rescan: true,
	}
	var bg sync.WaitGroup
	defer bg.Wait()
	bg.Go(func() { d.keepIndex(ctx) })
	t := time.NewTicker(d.cfg.PollInterval)
	defer t.Stop()
	var lastErr string
	var lastErrAt time.Time
	for {
		if err := s.step(ctx); err != nil && ctx.Err() == nil {
			if msg := err.Error(); msg != lastErr || time.Since(lastErrAt) > 30*time.Second {
				log.Warn("deposit sender: will retry", slog.Any("error", err))
				lastErr, lastErrAt = msg, time.Now()
			}
		} else if err == nil {
			lastErr = ""
		}
		select {
		case <-ctx.Done():
			return nil
		case <-d.wake:
			s.rescan = true
		case <-t.C:
		}
	}
}

// step does one round: read new work, track transactions in flight, send
// new deposits.
func (s *sender) step(ctx context.Context) error {
	d := s.d
	now := d.cfg.Now()
	if s.rescan || now.Sub(s.lastRescan) >= d.cfg.RescanInterval {
		if err := s.load(ctx); err != nil {
			return err
		}
		s.rescan, s.lastRescan = false, now
	}
	defer s.publish()
	if len(s.items) == 0 && len(s.used) == 0 {
		d.setBlocked(nil)
		return nil
	}
	head, err := d.cfg.Chain.BlockNumber(ctx)
	if err != nil {
		return fmt.Errorf("read the block number: %w", err)
	}
	mined, err := d.cfg.Chain.NonceAt(ctx, d.funder, nil)
	if err != nil {
		return fmt.Errorf("read the funder's nonce: %w", err)
	}
	for n := range s.used {
		if n < mined {
			delete(s.used, n)
		}
	}
	if head != s.lastHead {
		s.lastHead = head
		if bal, err := d.cfg.Chain.BalanceAt(ctx, d.funder, nil); err == nil {
			d.cfg.Metrics.FunderBalance.Set(weiFloat(bal))
		}
	}
	if err := s.track(ctx, head, mined); err != nil {
		return err
	}
	return s.sendNew(ctx, mined)
}

// publish updates the pending gauge and the cost of unmined transactions.
func (s *sender) publish() {
	cost := new(big.Int)
	for _, it := range s.items {
		if it.tx != nil && it.receipt == nil {
			cost.Add(cost, it.tx.Cost())
		}
	}
	s.d.mu.Lock()
	s.d.inflightWei = cost
	s.d.mu.Unlock()
	s.d.cfg.Metrics.Pending.Set(float64(len(s.items)))
}

// load reads the pending-deposit keys from the store.
func (s *sender) load(ctx context.Context) error {
	var keys []store.Key
	err := s.d.cfg.Store.ListKeys(ctx, store.ListOptions{States: []store.State{store.StatePendingDeposit}, WithDeposit: true},
		func(k store.Key) error {
			keys = append(keys, k)
			return nil
		})
	if err != nil {
		return fmt.Errorf("list pending deposits: %w", err)
	}
	seen := make(map[store.Pubkey]bool, len(keys))
	for _, k := range keys {
		seen[k.Pubkey] = true
		it := s.items[k.Pubkey]
		if it != nil && sameTx(it.key.DepositTx, k.DepositTx) {
			it.key = k
			continue
		}
		it = &item{key: k}
		if k.DepositTx != nil && len(k.DepositTx.Raw) > 0 {
			tx := new(types.Transaction)
			if err := tx.UnmarshalBinary(k.DepositTx.Raw); err != nil {
				// Not sent by this code; it cannot be rebroadcast. Its nonce
				// is unknown, so only the log search can settle it: leave
				// the key for an operator.
				s.d.cfg.Logger.Error("deposit transaction record cannot be decoded; the key stays pending-deposit",
					slog.String("pubkey", k.Pubkey.String()), slog.Any("error", err))
				continue
			}
			it.tx = tx
			s.used[tx.Nonce()] = tx.Hash()
		}
		s.items[k.Pubkey] = it
	}
	for pk := range s.items {
		if !seen[pk] {
			delete(s.items, pk) // settled elsewhere or retired; its nonce stays in used
		}
	}
	return nil
}

func sameTx(a, b *store.DepositTx) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Hash == b.Hash
}

// track settles transactions in flight: mined ones are confirmed or failed,
// unknown ones rebroadcast, and those whose nonce another transaction used
// are checked on chain.
func (s *sender) track(ctx context.Context, head, mined uint64) error {
	d := s.d
	var fetch []*item
	for _, it := range s.items {
		if it.tx != nil && it.receipt == nil && it.tx.Nonce() < mined {
			fetch = append(fetch, it)
		}
	}
	receipts := make([]*types.Receipt, len(fetch))
	if err := parallel(ctx, len(fetch), 16, func(i int) error {
		r, err := d.cfg.Chain.TransactionReceipt(ctx, fetch[i].tx.Hash())
		if err != nil {
			if depositcontract.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("receipt of deposit transaction %s: %w", fetch[i].tx.Hash(), err)
		}
		receipts[i] = r
		return nil
	}); err != nil {
		return err
	}
	var conflicts []*item
	for i, it := range fetch {
		if receipts[i] != nil {
			it.receipt = receipts[i]
		} else {
			conflicts = append(conflicts, it)
		}
	}

	n := d.cfg.Confirmations
	var ready []settlement
	defer func() { s.confirmAll(ctx, ready) }()
	for _, it := range s.sorted() {
		if it.receipt == nil {
			continue
		}
		block := it.receipt.BlockNumber.Uint64()
		if blocksToGo(block, head, n) > 0 {
			continue // not deep enough yet
		}
		if n > 1 {
			// Check that the receipt is still canonical.
			r, err := d.cfg.Chain.TransactionReceipt(ctx, it.tx.Hash())
			if err != nil && !depositcontract.IsNotFound(err) {
				return fmt.Errorf("receipt of deposit transaction %s: %w", it.tx.Hash(), err)
			}
			if r == nil || r.BlockNumber.Uint64() != block {
				it.receipt = r // reorganized: wait again
				continue
			}
		}
		if it.receipt.Status == types.ReceiptStatusSuccessful {
			ready = append(ready, settlement{it, block, ""})
		} else {
			s.fail(ctx, it, fmt.Sprintf("deposit transaction %s reverted in block %d (gas used %d)", it.tx.Hash(), block, it.receipt.GasUsed))
		}
	}

	now := d.cfg.Now()
	for _, it := range s.sorted() {
		if it.tx == nil || it.receipt != nil || it.tx.Nonce() < mined {
			continue
		}
		if !it.broadcastAt.IsZero() && now.Sub(it.broadcastAt) < d.cfg.RebroadcastAfter {
			continue
		}
		_, _, err := d.cfg.Chain.TransactionByHash(ctx, it.tx.Hash())
		if err == nil {
			it.broadcastAt = now // the node has it
			continue
		}
		if !depositcontract.IsNotFound(err) {
			return fmt.Errorf("look up deposit transaction %s: %w", it.tx.Hash(), err)
		}
		err = d.cfg.Chain.SendTransaction(ctx, it.tx)
		it.broadcastAt = now
		attrs := []slog.Attr{slog.String("pubkey", it.key.Pubkey.String()), slog.String("tx", it.tx.Hash().Hex()), slog.Uint64("nonce", it.tx.Nonce())}
		if err != nil && !alreadyKnown(err) {
			d.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "rebroadcast of a recorded deposit transaction failed", append(attrs, slog.Any("error", err))...)
			continue
		}
		d.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "recorded deposit transaction unknown to the node: sent the same signed transaction again", attrs...)
	}
	if len(conflicts) > 0 {
		return s.resolveConflicts(ctx, head, conflicts)
	}
	return nil
}

// resolveConflicts handles transactions whose nonce was used by another
// transaction. Once that is Confirmations deep, the recorded transaction can
// never be mined: the contract's logs decide whether the key's deposit exists
// (confirm) or not (sign again with a new nonce).
func (s *sender) resolveConflicts(ctx context.Context, head uint64, conflicts []*item) error {
	d := s.d
	n := d.cfg.Confirmations
	if head+1 < n {
		return nil
	}
	safe := head + 1 - n
	safeNonce, err := d.cfg.Chain.NonceAt(ctx, d.funder, new(big.Int).SetUint64(safe))
	if err != nil {
		return fmt.Errorf("read the funder's nonce at block %d: %w", safe, err)
	}
	var check []*item
	for _, it := range conflicts {
		if it.tx.Nonce() >= safeNonce {
			continue
		}
		// The receipt may have appeared since (a race with the nonce read).
		if r, err := d.cfg.Chain.TransactionReceipt(ctx, it.tx.Hash()); err == nil && r != nil {
			it.receipt = r
			continue
		}
		check = append(check, it)
	}
	if len(check) == 0 {
		return nil
	}
	pubkeys := make([]store.Pubkey, len(check))
	for i, it := range check {
		pubkeys[i] = it.key.Pubkey
	}
	found, err := d.FindDeposits(ctx, pubkeys)
	if err != nil {
		return err
	}
	for _, it := range check {
		e, ok := found[it.key.Pubkey]
		if !ok {
			d.cfg.Logger.Warn("the nonce of a recorded deposit transaction was used by another transaction and the key's deposit is not on chain: signing it again with a new nonce",
				slog.String("pubkey", it.key.Pubkey.String()), slog.String("tx", it.tx.Hash().Hex()), slog.Uint64("nonce", it.tx.Nonce()),
				slog.Uint64("checked_to_block", head))
			it.tx, it.receipt, it.broadcastAt = nil, nil, time.Time{}
			continue
		}
		if err := s.settleFound(ctx, it, e); err != nil {
			return err
		}
	}
	return nil
}

// settleFound settles a key whose deposit the chain already has (see the
// package documentation, "The chain is the truth"): confirmed when it is
// this key's deposit, failed when it is not or may belong to another
// installation.
func (s *sender) settleFound(ctx context.Context, it *item, e depositcontract.Event) error {
	if reason := ForeignDeposit(it.key.Deposit, e); reason != "" {
		s.fail(ctx, it, reason)
		return nil
	}
	if it.key.Origin == store.OriginDerived && (it.tx == nil || it.tx.Hash() != e.TxHash) {
		s.fail(ctx, it, fmt.Sprintf("this derived key's deposit is on chain (tx %s, block %d) but no transaction of this store made it: "+
			"another installation on the same mnemonic may hold the key, so it is kept out of circulation "+
			"(if the deposit is yours, run `pkmanager keys recover --pubkey %s`)", e.TxHash.Hex(), e.Block, it.key.Pubkey))
		return nil
	}
	s.confirm(ctx, it, e.Block, e.TxHash.Hex())
	return nil
}

// foreignDeposit says why a DepositEvent is not the deposit dd describes
// (other withdrawal credentials or amount), or "" when it is.
func ForeignDeposit(dd *store.DepositData, e depositcontract.Event) string {
	if dd == nil || (e.WithdrawalCredentials == dd.WithdrawalCredentials && e.AmountGwei == dd.AmountGwei) {
		return ""
	}
	return fmt.Sprintf("another deposit for this key is on chain (tx %s, block %d) with withdrawal credentials 0x%x and %d gwei, not ours (0x%x, %d gwei)",
		e.TxHash.Hex(), e.Block, e.WithdrawalCredentials[:], e.AmountGwei, dd.WithdrawalCredentials[:], dd.AmountGwei)
}

// sendNew sends the deposits of keys that have no transaction yet, in one
// batch, as named steps: leave out what the chain already has, fees, funds,
// simulate, sign, record, broadcast. Every transaction is recorded in the
// store before any is broadcast: one that left the process is always known
// to the next (see the package documentation), so no deposit is paid twice.
func (s *sender) sendNew(ctx context.Context, mined uint64) error {
	todo, err := s.unsent(ctx)
	if err != nil || len(todo) == 0 {
		return err
	}
	f, err := s.fees(ctx, len(todo))
	if err != nil || f == nil {
		return err
	}
	w, err := s.wallet(ctx)
	if err != nil {
		return err
	}
	deps := s.deposits(todo)
	if !s.affordable(deps, f, w) {
		return nil
	}
	tSim := time.Now()
	if deps, err = s.simulate(ctx, deps); err != nil || len(deps) == 0 {
		return err
	}
	if !s.affordable(deps, f, w) {
		return nil
	}
	s.d.setBlocked(nil)
	s.d.gasHint.Store(maxGas(deps))
	txs, err := s.sign(deps, f, mined)
	if err != nil {
		return err
	}
	tRec := time.Now()
	recorded, recErr := s.record(ctx, deps, txs)
	tSend := time.Now()
	sent := s.broadcast(ctx, recorded)
	if len(recorded) > 0 {
		s.d.cfg.Logger.Info("deposits sent", slog.Int("deposits", sent), slog.Int("recorded", len(recorded)),
			slog.Uint64("first_nonce", recorded[0].tx.Nonce()), slog.String("max_fee_gwei", gweiString(f.cap)),
			slog.String("priority_fee_gwei", gweiString(f.tip)), slog.Duration("simulate", tRec.Sub(tSim)),
			slog.Duration("record", tSend.Sub(tRec)), slog.Duration("broadcast", time.Since(tSend)))
	}
	return recErr
}

// unsent returns the keys that have no transaction yet and whose deposit
// the chain does not have: the chain is the truth, a key whose deposit it
// already has is settled, not deposited again (see the package
// documentation). A key without deposit data fails.
func (s *sender) unsent(ctx context.Context) ([]*item, error) {
	d := s.d
	var todo []*item
	for _, it := range s.sorted() {
		if it.tx != nil {
			continue
		}
		if it.key.Deposit == nil {
			s.fail(ctx, it, "the key has no deposit data, so the server cannot deposit it")
			continue
		}
		todo = append(todo, it)
	}
	if len(todo) == 0 {
		d.setBlocked(nil)
		return nil, nil
	}
	pubkeys := make([]store.Pubkey, len(todo))
	for i, it := range todo {
		pubkeys[i] = it.key.Pubkey
	}
	found, err := d.FindDeposits(ctx, pubkeys)
	if err != nil {
		d.setBlocked(fmt.Errorf("%d deposits wait: %w", len(todo), err))
		return nil, err
	}
	if len(found) == 0 {
		return todo, nil
	}
	rest := todo[:0]
	for _, it := range todo {
		e, ok := found[it.key.Pubkey]
		if !ok {
			rest = append(rest, it)
			continue
		}
		d.cfg.Metrics.FoundOnChain.Inc()
		d.cfg.Logger.Warn("the chain already has this key's deposit although the store recorded none (a restored or rebuilt store, or another installation): not depositing it again",
			slog.String("pubkey", it.key.Pubkey.String()), slog.String("tx", e.TxHash.Hex()), slog.Uint64("block", e.Block))
		if err := s.settleFound(ctx, it, e); err != nil {
			return nil, err
		}
	}
	return rest, nil
}

// fee is what a batch's transactions offer per gas.
type fee struct {
	tip, cap *big.Int // max priority fee and max fee per gas
}

// fees are twice the latest base fee plus the suggested tip, within the
// configured caps; nil (n deposits wait, setBlocked) while the base fee is
// not below the max fee per gas.
func (s *sender) fees(ctx context.Context, n int) (*fee, error) {
	d := s.d
	header, err := d.cfg.Chain.HeaderByNumber(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("read the latest block: %w", err)
	}
	base := header.BaseFee
	if base == nil {
		base = new(big.Int)
	}
	if base.Cmp(d.cfg.MaxFeePerGas) >= 0 {
		d.setBlocked(fmt.Errorf("%w: base fee %s gwei is not below the max fee per gas %s gwei; %d deposits wait",
			ErrFeeCap, gweiString(base), gweiString(d.cfg.MaxFeePerGas), n))
		return nil, nil
	}
	tip, err := d.cfg.Chain.SuggestGasTipCap(ctx)
	if err != nil {
		return nil, fmt.Errorf("suggest a priority fee: %w", err)
	}
	tip = minBig(tip, d.cfg.MaxPriorityFeePerGas)
	feeCap := minBig(new(big.Int).Add(new(big.Int).Mul(base, big.NewInt(2)), tip), d.cfg.MaxFeePerGas)
	return &fee{tip: minBig(tip, feeCap), cap: feeCap}, nil
}

// wallet is the funder's balance and what its sent, unmined transactions
// may still cost of it.
type wallet struct {
	balance, committed *big.Int
}

func (s *sender) wallet(ctx context.Context) (wallet, error) {
	d := s.d
	balance, err := d.cfg.Chain.BalanceAt(ctx, d.funder, nil)
	if err != nil {
		return wallet{}, fmt.Errorf("read the funder balance: %w", err)
	}
	d.cfg.Metrics.FunderBalance.Set(weiFloat(balance))
	committed := new(big.Int)
	for _, it := range s.items {
		if it.tx != nil && it.receipt == nil {
			committed.Add(committed, it.tx.Cost())
		}
	}
	return wallet{balance: balance, committed: committed}, nil
}

// deposit is one deposit of a batch: its key, value, contract call and gas
// limit.
type deposit struct {
	it    *item
	value *big.Int
	data  []byte
	gas   uint64
}

// deposits are the contract calls of todo, with the last batch's gas as
// their guess until simulate knows better.
func (s *sender) deposits(todo []*item) []deposit {
	hint := s.d.gasHint.Load()
	deps := make([]deposit, len(todo))
	for i, it := range todo {
		dd := it.key.Deposit
		deps[i] = deposit{
			it:    it,
			value: depositcontract.GweiToWei(dd.AmountGwei),
			data:  depositcontract.PackDeposit(it.key.Pubkey, dd.WithdrawalCredentials, dd.Signature, dd.DepositDataRoot),
			gas:   hint,
		}
	}
	return deps
}

// affordable reports whether the funder's balance, less what its unmined
// transactions may still cost, covers deps at the max fee; else the deposits
// wait (setBlocked says why).
func (s *sender) affordable(deps []deposit, f *fee, w wallet) bool {
	need := new(big.Int)
	for _, dp := range deps {
		need.Add(need, dp.value).Add(need, new(big.Int).Mul(new(big.Int).SetUint64(dp.gas), f.cap))
	}
	if new(big.Int).Sub(w.balance, w.committed).Cmp(need) < 0 {
		s.d.setBlocked(s.d.fundsError(len(deps), need, w.balance, w.committed))
		return false
	}
	return true
}

// simulate estimates every deposit's gas: a deposit the contract rejects
// fails its key before any gas is spent, the rest are returned with their
// gas limits.
func (s *sender) simulate(ctx context.Context, deps []deposit) ([]deposit, error) {
	d := s.d
	reverted := make([]string, len(deps))
	if err := parallel(ctx, len(deps), 8, func(i int) error {
		g, err := d.cfg.Chain.EstimateGas(ctx, ethereum.CallMsg{From: d.funder, To: &d.cfg.Contract, Value: deps[i].value, Data: deps[i].data})
		if err != nil {
			if isRevert(err) {
				reverted[i] = err.Error()
				return nil
			}
			return fmt.Errorf("simulate the deposit of %s: %w", deps[i].it.key.Pubkey, err)
		}
		deps[i].gas = max(g+g/4, DepositGasLimit)
		return nil
	}); err != nil {
		return nil, err
	}
	var batch []deposit
	for i, dp := range deps {
		if reverted[i] != "" {
			s.fail(ctx, dp.it, "the deposit contract rejects this deposit (found by simulation; nothing was sent): "+reverted[i])
			continue
		}
		batch = append(batch, dp)
	}
	return batch, nil
}

func maxGas(deps []deposit) uint64 {
	m := uint64(0)
	for _, dp := range deps {
		m = max(m, dp.gas)
	}
	return m
}

// sign signs the batch's transactions with the next nonces from mined that
// no transaction of this process may still take (s.used).
func (s *sender) sign(deps []deposit, f *fee, mined uint64) ([]*types.Transaction, error) {
	d := s.d
	txs := make([]*types.Transaction, len(deps))
	next := mined
	for i, dp := range deps {
		for {
			if _, taken := s.used[next]; !taken {
				break
			}
			next++
		}
		tx, err := types.SignNewTx(d.cfg.FunderKey, s.signer, &types.DynamicFeeTx{
			ChainID: s.chainID, Nonce: next, GasTipCap: f.tip, GasFeeCap: f.cap, Gas: dp.gas,
			To: &d.cfg.Contract, Value: dp.value, Data: dp.data,
		})
		if err != nil {
			return nil, fmt.Errorf("sign a deposit transaction: %w", err)
		}
		txs[i] = tx
		s.used[next] = tx.Hash()
		next++
	}
	return txs, nil
}

// record writes every transaction to the store and returns the keys whose
// transaction is recorded: only those may be broadcast. A key retired
// meanwhile is dropped; the first other failure is returned with them.
func (s *sender) record(ctx context.Context, deps []deposit, txs []*types.Transaction) ([]*item, error) {
	d := s.d
	now := d.cfg.Now()
	recErr := make([]error, len(deps))
	_ = parallel(ctx, len(deps), 32, func(i int) error {
		raw, err := txs[i].MarshalBinary()
		if err != nil {
			recErr[i] = err
			return nil
		}
		recErr[i] = d.cfg.Store.SetDepositTx(ctx, deps[i].it.key.Pubkey, store.DepositTx{
			Nonce: txs[i].Nonce(), Hash: txs[i].Hash(), Raw: raw,
		}, now)
		return nil
	})
	var recorded []*item
	var firstErr error
	for i, dp := range deps {
		it := dp.it
		if err := recErr[i]; err != nil {
			delete(s.used, txs[i].Nonce()) // never left the process
			if errors.Is(err, store.ErrWrongState) || errors.Is(err, store.ErrNotFound) {
				delete(s.items, it.key.Pubkey) // retired meanwhile
				continue
			}
			if firstErr == nil {
				firstErr = fmt.Errorf("record the deposit transaction of %s: %w", it.key.Pubkey, err)
			}
			continue
		}
		it.tx = txs[i]
		it.key.DepositTx = &store.DepositTx{Nonce: txs[i].Nonce(), Hash: txs[i].Hash(), RecordedAt: now}
		recorded = append(recorded, it)
	}
	if d.hooks.afterRecord != nil {
		d.hooks.afterRecord(len(recorded))
	}
	return recorded, firstErr
}

// broadcast sends the recorded transactions in nonce order and returns how
// many the node took; one it did not is sent again later (it is recorded).
func (s *sender) broadcast(ctx context.Context, recorded []*item) int {
	d := s.d
	slices.SortFunc(recorded, func(a, b *item) int { return cmp.Compare(a.tx.Nonce(), b.tx.Nonce()) })
	sent := 0
	for _, it := range recorded {
		err := d.cfg.Chain.SendTransaction(ctx, it.tx)
		it.broadcastAt = d.cfg.Now()
		if err != nil && !alreadyKnown(err) {
			d.cfg.Logger.Warn("broadcast of a deposit transaction failed; it is recorded and will be checked and sent again",
				slog.String("pubkey", it.key.Pubkey.String()), slog.String("tx", it.tx.Hash().Hex()), slog.Any("error", err))
			continue
		}
		sent++
	}
	// Every recorded transaction is the key's deposit from now on (one the
	// node did not take is sent again), so each is in the trail.
	_ = parallel(ctx, len(recorded), 32, func(i int) error {
		it := recorded[i]
		store.RecordAudit(ctx, d.cfg.Store, d.cfg.Logger, store.AuditEvent{
			Time: it.broadcastAt, Action: store.AuditDepositSent, Pod: it.key.Pod, PodUID: it.key.PodUID,
			Pubkeys: []store.Pubkey{it.key.Pubkey},
			Reason:  fmt.Sprintf("deposit transaction %s (nonce %d) sent", it.tx.Hash().Hex(), it.tx.Nonce()),
		})
		return nil
	})
	d.cfg.Metrics.Sent.Add(float64(sent))
	if d.hooks.afterBroadcast != nil {
		d.hooks.afterBroadcast(sent)
	}
	return sent
}

// settlement is a deposit found on chain, to confirm.
type settlement struct {
	it      *item
	block   uint64
	foundTx string // the transaction that carried it, when not ours
}

func (s *sender) confirm(ctx context.Context, it *item, block uint64, foundTx string) {
	s.confirmAll(ctx, []settlement{{it, block, foundTx}})
}

// confirmAll records confirmed deposits, the store calls in parallel (they
// share commits).
func (s *sender) confirmAll(ctx context.Context, list []settlement) {
	if len(list) == 0 {
		return
	}
	d := s.d
	now := d.cfg.Now()
	keys := make([]store.Key, len(list))
	errs := make([]error, len(list))
	events := make([]*store.AuditEvent, len(list))
	_ = parallel(ctx, len(list), 32, func(i int) error {
		c := list[i]
		keys[i], errs[i] = d.cfg.Store.ConfirmDeposit(ctx, c.it.key.Pubkey, c.block, now)
		if errs[i] == nil {
			k := keys[i]
			reason := fmt.Sprintf("deposit in block %d", c.block)
			switch {
			case c.foundTx != "":
				reason += " (transaction " + c.foundTx + ")"
			case c.it.tx != nil:
				reason += " (transaction " + c.it.tx.Hash().Hex() + ")"
			}
			if k.Pod != "" {
				reason += "; assigned to pod " + k.Pod
			} else {
				reason += "; " + string(k.State)
			}
			events[i] = &store.AuditEvent{
				Time: now, Action: store.AuditDepositConfirmed, Pod: k.Pod, PodUID: k.PodUID,
				Pubkeys: []store.Pubkey{k.Pubkey}, Reason: reason,
			}
		}
		return nil
	})
	// The trail after the waiters are woken: the confirmations stand.
	defer func() {
		_ = parallel(ctx, len(events), 32, func(i int) error {
			if e := events[i]; e != nil {
				store.RecordAudit(ctx, d.cfg.Store, d.cfg.Logger, *e)
			}
			return nil
		})
	}()
	for i, c := range list {
		it, k, err := c.it, keys[i], errs[i]
		if err != nil {
			if errors.Is(err, store.ErrWrongState) || errors.Is(err, store.ErrNotFound) {
				delete(s.items, it.key.Pubkey)
				d.cfg.Logger.Warn("deposit confirmed on chain but the key is no longer pending-deposit",
					slog.String("pubkey", it.key.Pubkey.String()), slog.Uint64("block", c.block), slog.Any("error", err))
				continue
			}
			d.cfg.Logger.Warn("record a confirmed deposit", slog.String("pubkey", it.key.Pubkey.String()), slog.Any("error", err))
			continue // retried next round
		}
		delete(s.items, it.key.Pubkey)
		d.cfg.Metrics.Confirmed.Inc()
		if t := it.recordedAt(); !t.IsZero() {
			d.cfg.Metrics.ConfirmationSeconds.Observe(now.Sub(t).Seconds())
		}
		attrs := []slog.Attr{slog.String("pubkey", k.Pubkey.String()), slog.Uint64("block", c.block), slog.String("state", string(k.State))}
		if k.Pod != "" {
			attrs = append(attrs, slog.String("pod", k.Pod))
		}
		if c.foundTx != "" {
			attrs = append(attrs, slog.String("found_in_tx", c.foundTx))
		} else if it.tx != nil {
			attrs = append(attrs, slog.String("tx", it.tx.Hash().Hex()))
		}
		d.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "deposit confirmed", attrs...)
	}
	d.signal()
}

func (s *sender) fail(ctx context.Context, it *item, reason string) {
	d := s.d
	if len(reason) > 900 {
		reason = reason[:900] + "..."
	}
	err := d.cfg.Store.FailDeposit(ctx, it.key.Pubkey, reason, d.cfg.Now())
	if err != nil && !errors.Is(err, store.ErrWrongState) && !errors.Is(err, store.ErrNotFound) {
		d.cfg.Logger.Warn("record a failed deposit", slog.String("pubkey", it.key.Pubkey.String()), slog.Any("error", err))
		return // retried next round
	}
	delete(s.items, it.key.Pubkey)
	if err == nil {
		d.cfg.Metrics.Failed.Inc()
		d.cfg.Logger.Error("deposit failed: the key is in state deposit-failed and is never handed out",
			slog.String("pubkey", it.key.Pubkey.String()), slog.String("pod", it.key.Pod), slog.String("reason", reason))
	}
	d.signal()
}

// keepIndex keeps the deposit index up to date while the sender runs.
func (d *Depositor) keepIndex(ctx context.Context) {
	ix, err := d.Index(ctx)
	if err != nil {
		d.cfg.Logger.Warn("deposit index", slog.Any("error", err))
		return
	}
	ix.Keep(ctx, d.cfg.IndexInterval)
}

// sorted returns the items in pubkey order (deterministic batches).
func (s *sender) sorted() []*item {
	out := make([]*item, 0, len(s.items))
	for _, it := range s.items {
		out = append(out, it)
	}
	slices.SortFunc(out, func(a, b *item) int { return bytes.Compare(a.key.Pubkey[:], b.key.Pubkey[:]) })
	return out
}

// isRevert reports whether a simulation error is the contract rejecting the
// call (as opposed to the node being unreachable or the funder poor).
func isRevert(err error) bool {
	return strings.Contains(err.Error(), "execution reverted")
}

// alreadyKnown: the node already has the transaction (a rebroadcast).
func alreadyKnown(err error) bool {
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "already known") || strings.Contains(msg, "known transaction")
}

func minBig(a, b *big.Int) *big.Int {
	if a.Cmp(b) <= 0 {
		return new(big.Int).Set(a)
	}
	return new(big.Int).Set(b)
}

func gweiString(w *big.Int) string {
	f := new(big.Float).SetPrec(128).SetInt(w)
	f.Quo(f, big.NewFloat(1e9))
	return strings.TrimRight(strings.TrimRight(f.Text('f', 9), "0"), ".")
}

// parallel runs fn(0..n-1) on up to workers goroutines and returns the first
// error.
func parallel(ctx context.Context, n, workers int, fn func(i int) error) error {
	if n == 0 {
		return nil
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		next     int
	)
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if next >= n || firstErr != nil {
					mu.Unlock()
					return
				}
				i := next
				next++
				mu.Unlock()
				if err := ctx.Err(); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}
