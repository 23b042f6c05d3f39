// Package mint makes new validator keys: a BLS key (random, or derived from
// the server's mnemonic per EIP-2334), its signed deposit data, and its secret
// sealed under the key-encryption key. Keys are made on all cores.
package mint

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/keys"
	"github.com/pkmanager/pkmanager/internal/store"
)

// WithdrawalKind selects the withdrawal credentials of new keys.
type WithdrawalKind string

// Withdrawal credential kinds.
const (
	// WithdrawalExecution: 0x01 credentials to Config.WithdrawalAddress.
	WithdrawalExecution WithdrawalKind = "execution"
	// WithdrawalCompounding: 0x02 (EIP-7251) credentials to Config.WithdrawalAddress.
	WithdrawalCompounding WithdrawalKind = "compounding"
	// WithdrawalBLS: 0x00 credentials of the withdrawal key m/12381/3600/i/0
	// (derived keys only; a key is never its own withdrawal key).
	WithdrawalBLS WithdrawalKind = "bls"
)

// Sealer encrypts a secret for the key record of pubkey (a *seal.KEK).
type Sealer interface {
	Seal(secret, pubkey []byte) ([]byte, error)
}

// IndexReserver hands out derivation indices that are never reused (the store).
type IndexReserver interface {
	ReserveIndices(ctx context.Context, count int) (uint32, error)
}

// ChainChecker says which public keys already have a deposit on chain (the
// server's deposit index).
type ChainChecker interface {
	// DepositsOnChain describes ("tx 0x..., block N") the deposit of each of
	// pubkeys that has one; ok is false when the server cannot see the
	// chain (then nothing is known).
	DepositsOnChain(ctx context.Context, pubkeys []store.Pubkey) (found map[store.Pubkey]string, ok bool, err error)
}

// Auditor records decisions in the audit trail (the store).
type Auditor interface {
	AppendAudit(ctx context.Context, e store.AuditEvent) error
}

// AuditDerivationSkipped is the audit action of a derivation index whose key
// already had a deposit on chain.
const AuditDerivationSkipped = "derivation-skipped"

// maxSkipped bounds the derivation indices one Mint skips: more means the
// mnemonic is another installation's, which an operator must sort out.
const maxSkipped = 1000

// Config configures a Minter.
type Config struct {
	Sealer            Sealer
	Network           deposit.Network
	AmountGwei        uint64 // 0 means deposit.DefaultAmountGwei
	Withdrawal        WithdrawalKind
	WithdrawalAddress [20]byte
	// Deriver derives keys from the server's mnemonic; nil means random keys.
	Deriver *keys.Deriver
	// Indices reserves derivation indices; required with Deriver.
	Indices IndexReserver
	// OnChain, with Deriver, checks derived keys against the chain: an index
	// whose key already has a deposit (another installation on the same
	// mnemonic, a lost or older store) is skipped, logged (Logger) and
	// recorded (Audit), and the key is not used. Nil: no check.
	OnChain ChainChecker
	Audit   Auditor
	Logger  *slog.Logger
	// Workers is the number of keys made in parallel; 0 means GOMAXPROCS.
	Workers int
}

// Minter makes keys. It is safe for concurrent use.
type Minter struct {
	cfg Config
}

// New checks cfg and returns a Minter.
func New(cfg Config) (*Minter, error) {
	if cfg.Sealer == nil {
		return nil, errors.New("mint: no sealer")
	}
	if cfg.AmountGwei == 0 {
		cfg.AmountGwei = deposit.DefaultAmountGwei
	}
	if err := cfg.Network.Validate(); err != nil {
		return nil, fmt.Errorf("mint: %w", err)
	}
	switch cfg.Withdrawal {
	case WithdrawalExecution, WithdrawalCompounding:
		if cfg.WithdrawalAddress == ([20]byte{}) {
			return nil, fmt.Errorf("mint: %s withdrawal credentials need a withdrawal address", cfg.Withdrawal)
		}
	case WithdrawalBLS:
		if cfg.Deriver == nil {
			return nil, errors.New("mint: BLS withdrawal credentials need a mnemonic (random keys would have to be their own withdrawal key)")
		}
	default:
		return nil, fmt.Errorf("mint: unknown withdrawal kind %q", cfg.Withdrawal)
	}
	if cfg.Deriver != nil && cfg.Indices == nil {
		return nil, errors.New("mint: derived keys need an index reserver")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.AmountGwei < deposit.MinAmountGwei || cfg.AmountGwei > deposit.MaxAmountGwei {
		return nil, fmt.Errorf("mint: deposit amount %d gwei outside %d to %d gwei (1 to 2048 ETH)",
			cfg.AmountGwei, uint64(deposit.MinAmountGwei), uint64(deposit.MaxAmountGwei))
	}
	return &Minter{cfg: cfg}, nil
}

// Derived reports whether new keys come from a mnemonic.
func (m *Minter) Derived() bool { return m.cfg.Deriver != nil }

// Mint makes n keys. Nothing is stored: the caller adds the keys to the store.
// With a mnemonic, n derivation indices are reserved first, so an index is
// never used twice even if minting fails half-way; with Config.OnChain,
// indices whose keys already have a deposit on chain are skipped (and more
// reserved) until n keys are free of one.
func (m *Minter) Mint(ctx context.Context, n int) ([]store.NewKey, error) {
	if n < 1 {
		return nil, fmt.Errorf("mint: %d keys requested", n)
	}
	if m.cfg.Deriver == nil || m.cfg.OnChain == nil {
		return m.mint(ctx, n)
	}
	var out []store.NewKey
	skipped := 0
	for len(out) < n {
		batch, err := m.mint(ctx, n-len(out))
		if err != nil {
			return nil, err
		}
		pks := make([]store.Pubkey, len(batch))
		for i := range batch {
			pks[i] = batch[i].Pubkey
		}
		found, ok, err := m.cfg.OnChain.DepositsOnChain(ctx, pks)
		if err != nil {
			return nil, fmt.Errorf("check the chain for deposits of derived keys: %w", err)
		}
		if !ok {
			return append(out, batch...), nil
		}
		for _, k := range batch {
			where, dup := found[k.Pubkey]
			if !dup {
				out = append(out, k)
				continue
			}
			skipped++
			m.skipped(ctx, k, where)
		}
		if skipped > maxSkipped {
			return nil, fmt.Errorf("mint: more than %d derivation indices in a row already have deposits on chain: "+
				"this mnemonic is in use by another installation; give this server a mnemonic of its own", maxSkipped)
		}
	}
	return out, nil
}

// skipped says that derivation index k.DerivationIndex is skipped.
func (m *Minter) skipped(ctx context.Context, k store.NewKey, where string) {
	reason := fmt.Sprintf("derivation index %d (%s): its key already has a deposit on chain (%s); another store or installation "+
		"uses this mnemonic, or this store lost its records: the index is skipped and the key is not used", k.DerivationIndex, keys.SigningPath(k.DerivationIndex), where)
	m.cfg.Logger.WarnContext(ctx, "derivation index skipped: its key already has a deposit on chain",
		slog.Uint64("index", uint64(k.DerivationIndex)), slog.String("pubkey", k.Pubkey.String()), slog.String("deposit", where))
	if m.cfg.Audit == nil {
		return
	}
	if err := m.cfg.Audit.AppendAudit(ctx, store.AuditEvent{Time: time.Now(), Action: AuditDerivationSkipped, Pubkeys: []store.Pubkey{k.Pubkey}, Reason: reason}); err != nil {
		m.cfg.Logger.WarnContext(ctx, "audit: derivation index skipped", slog.Any("error", err))
	}
}

// mint makes n keys, reserving n derivation indices first with a mnemonic.
func (m *Minter) mint(ctx context.Context, n int) ([]store.NewKey, error) {
	var base uint32
	if m.cfg.Deriver != nil {
		var err error
		if base, err = m.cfg.Indices.ReserveIndices(ctx, n); err != nil {
			return nil, fmt.Errorf("reserve %d derivation indices: %w", n, err)
		}
	}
	out := make([]store.NewKey, n)
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
		failed   atomic.Bool
	)
	workers := min(m.cfg.Workers, n)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || failed.Load() {
					return
				}
				if err := ctx.Err(); err != nil {
					errOnce.Do(func() { firstErr = err })
					failed.Store(true)
					return
				}
				k, err := m.one(base, i)
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					failed.Store(true)
					return
				}
				out[i] = k
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	return out, nil
}

// one makes key number i of a batch whose first derivation index is base.
func (m *Minter) one(base uint32, i int) (store.NewKey, error) {
	var (
		sk  *keys.SecretKey
		nk  store.NewKey
		err error
	)
	var wk *keys.SecretKey // the BLS withdrawal key, derived with sk
	if m.cfg.Deriver != nil {
		idx := base + uint32(i)
		if m.cfg.Withdrawal == WithdrawalBLS {
			sk, wk, err = m.cfg.Deriver.ValidatorKeys(idx)
			defer wk.Zero()
		} else {
			sk, err = m.cfg.Deriver.SigningKey(idx)
		}
		if err != nil {
			return nk, fmt.Errorf("derive key %d: %w", idx, err)
		}
		nk.Origin, nk.DerivationIndex, nk.HasDerivationIndex = store.OriginDerived, idx, true
	} else {
		if sk, err = keys.GenerateRandom(); err != nil {
			return nk, fmt.Errorf("generate key: %w", err)
		}
		nk.Origin = store.OriginRandom
	}
	defer sk.Zero()
	pub := sk.PublicKey()
	nk.Pubkey = pub

	wc := m.credentials(wk)
	dd, err := deposit.Make(sk, m.params(wc))
	if err != nil {
		return nk, fmt.Errorf("deposit data of %s: %w", store.Pubkey(pub), err)
	}
	nk.Deposit = &dd
	secret := sk.Bytes()
	nk.SealedSecret, err = m.cfg.Sealer.Seal(secret, pub[:])
	clear(secret)
	if err != nil {
		return nk, fmt.Errorf("seal key %s: %w", store.Pubkey(pub), err)
	}
	return nk, nil
}

// credentials are the withdrawal credentials of a new key; wk is its BLS
// withdrawal key (derived keys with WithdrawalBLS only).
func (m *Minter) credentials(wk *keys.SecretKey) [32]byte {
	switch m.cfg.Withdrawal {
	case WithdrawalExecution:
		return deposit.ExecutionCredentials(m.cfg.WithdrawalAddress)
	case WithdrawalCompounding:
		return deposit.CompoundingCredentials(m.cfg.WithdrawalAddress)
	default: // WithdrawalBLS, checked in New: keys are derived
		return deposit.BLSCredentials(wk.PublicKey())
	}
}

func (m *Minter) params(wc [32]byte) deposit.Params {
	return deposit.Params{Network: m.cfg.Network, WithdrawalCredentials: wc, AmountGwei: m.cfg.AmountGwei}
}
