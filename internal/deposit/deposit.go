// Package deposit makes and checks validator deposit data as the Ethereum
// consensus spec defines it (phase0 DepositMessage / DepositData, signed over
// compute_domain(DOMAIN_DEPOSIT, genesis fork version, zero root)), and reads
// and writes the deposit_data-*.json files of staking-deposit-cli and
// ethstaker-deposit-cli, which the staking launchpad and depositors consume.
//
// The package holds no BLS implementation: signing goes through Signer and
// signature checks through a verify function, both supplied by the caller.
// A deposit made with Make should be checked with Verify before it is
// stored or published.
package deposit

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/attestantio/go-eth2-client/spec/phase0"

	"github.com/pkmanager/pkmanager/internal/store"
)

// Amounts, in gwei.
const (
	// GweiPerETH is 10^9.
	GweiPerETH = 1_000_000_000
	// DefaultAmountGwei is the 32 ETH deposit that activates a validator.
	DefaultAmountGwei = 32_000_000_000
	// MinAmountGwei is the smallest deposit the deposit contract accepts
	// (1 ETH).
	MinAmountGwei = 1 * GweiPerETH
	// MaxAmountGwei is the largest deposit Make signs: 2048 ETH, Electra's
	// MAX_EFFECTIVE_BALANCE for compounding validators. The contract takes
	// more; the cap guards against unit mistakes (wei for gwei).
	MaxAmountGwei = 2048 * GweiPerETH
)

// domainDeposit is the consensus spec's DOMAIN_DEPOSIT domain type.
var domainDeposit = phase0.DomainType{0x03, 0x00, 0x00, 0x00}

// Errors that Verify (and CLIEntry.Deposit) wrap, one per check, so callers
// can tell with errors.Is which check failed.
var (
	// ErrAmount: the amount is outside [MinAmountGwei, MaxAmountGwei].
	ErrAmount = errors.New("amount out of range")
	// ErrWithdrawalCredentials: ValidateWithdrawalCredentials rejected them.
	ErrWithdrawalCredentials = errors.New("bad withdrawal_credentials")
	// ErrNetwork: network_name and fork_version disagree.
	ErrNetwork = errors.New("network_name does not match fork_version")
	// ErrMessageRoot: deposit_message_root is not the root of
	// (pubkey, withdrawal_credentials, amount).
	ErrMessageRoot = errors.New("deposit_message_root does not match pubkey, withdrawal_credentials and amount")
	// ErrSignature: signature does not verify for pubkey over the signing
	// root of the deposit message on fork_version.
	ErrSignature = errors.New("signature does not verify")
	// ErrDataRoot: deposit_data_root is not the root of
	// (pubkey, withdrawal_credentials, amount, signature).
	ErrDataRoot = errors.New("deposit_data_root does not match pubkey, withdrawal_credentials, amount and signature")
)

// Signer signs deposit messages with a validator's BLS secret key. Sign must
// return the compressed BLS12-381 G2 signature (proof-of-possession scheme,
// DST BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_) of msg; PublicKey the
// compressed G1 public key.
type Signer interface {
	PublicKey() [48]byte
	Sign(msg []byte) [96]byte
}

// Params says what to deposit.
type Params struct {
	// Network names the network and gives the fork version to sign for.
	Network Network
	// WithdrawalCredentials: see ExecutionCredentials,
	// CompoundingCredentials and BLSCredentials.
	WithdrawalCredentials [32]byte
	// AmountGwei is the deposit; DefaultAmountGwei activates a validator.
	AmountGwei uint64
}

// Make signs a deposit of p.AmountGwei for s's key and returns the signed
// deposit data with both roots. It rejects an invalid network, withdrawal
// credentials that would lose the deposit (ValidateWithdrawalCredentials),
// and amounts outside [MinAmountGwei, MaxAmountGwei].
func Make(s Signer, p Params) (store.DepositData, error) {
	if err := p.Network.Validate(); err != nil {
		return store.DepositData{}, fmt.Errorf("deposit: %w", err)
	}
	if err := checkAmount(p.AmountGwei); err != nil {
		return store.DepositData{}, fmt.Errorf("deposit: %w", err)
	}
	if err := ValidateWithdrawalCredentials(p.WithdrawalCredentials); err != nil {
		return store.DepositData{}, fmt.Errorf("deposit: %w: %w", ErrWithdrawalCredentials, err)
	}
	pubkey := s.PublicKey()
	msgRoot, err := MessageRoot(pubkey, p.WithdrawalCredentials, p.AmountGwei)
	if err != nil {
		return store.DepositData{}, err
	}
	signingRoot, err := SigningRoot(msgRoot, p.Network.GenesisForkVersion)
	if err != nil {
		return store.DepositData{}, err
	}
	sig := s.Sign(signingRoot[:])
	dataRoot, err := DataRoot(pubkey, p.WithdrawalCredentials, p.AmountGwei, sig)
	if err != nil {
		return store.DepositData{}, err
	}
	return store.DepositData{
		WithdrawalCredentials: p.WithdrawalCredentials,
		AmountGwei:            p.AmountGwei,
		Signature:             sig,
		DepositMessageRoot:    msgRoot,
		DepositDataRoot:       dataRoot,
		ForkVersion:           p.Network.GenesisForkVersion,
		NetworkName:           p.Network.Name,
	}, nil
}

func checkAmount(gwei uint64) error {
	if gwei < MinAmountGwei || gwei > MaxAmountGwei {
		return fmt.Errorf("%w: %d gwei, want %d to %d gwei (1 to 2048 ETH)", ErrAmount, gwei, uint64(MinAmountGwei), uint64(MaxAmountGwei))
	}
	return nil
}

// DepositDomain returns compute_domain(DOMAIN_DEPOSIT, forkVersion,
// genesis_validators_root = zero): deposits are valid across forks, so they
// are bound to the genesis fork version only.
func DepositDomain(forkVersion [4]byte) [32]byte {
	fd := phase0.ForkData{CurrentVersion: forkVersion}
	root, err := fd.HashTreeRoot()
	if err != nil {
		// ForkData is a fixed-size container: hashing it cannot fail.
		panic(fmt.Sprintf("deposit: hash_tree_root(ForkData): %v", err))
	}
	var d [32]byte
	copy(d[:4], domainDeposit[:])
	copy(d[4:], root[:28])
	return d
}

// MessageRoot returns hash_tree_root(DepositMessage{pubkey,
// withdrawal_credentials, amount}): deposit_message_root.
func MessageRoot(pubkey [48]byte, wc [32]byte, amountGwei uint64) ([32]byte, error) {
	m := phase0.DepositMessage{PublicKey: pubkey, WithdrawalCredentials: wc[:], Amount: phase0.Gwei(amountGwei)}
	root, err := m.HashTreeRoot()
	if err != nil {
		return root, fmt.Errorf("deposit: hash_tree_root(DepositMessage): %w", err)
	}
	return root, nil
}

// SigningRoot returns compute_signing_root(deposit message, domain) for a
// deposit message root: hash_tree_root(SigningData{messageRoot,
// DepositDomain(forkVersion)}). This is the message a deposit signs.
func SigningRoot(messageRoot [32]byte, forkVersion [4]byte) ([32]byte, error) {
	sd := phase0.SigningData{ObjectRoot: messageRoot, Domain: DepositDomain(forkVersion)}
	root, err := sd.HashTreeRoot()
	if err != nil {
		return root, fmt.Errorf("deposit: hash_tree_root(SigningData): %w", err)
	}
	return root, nil
}

// DataRoot returns hash_tree_root(DepositData{pubkey, withdrawal_credentials,
// amount, signature}): deposit_data_root, the value the deposit contract
// checks.
func DataRoot(pubkey [48]byte, wc [32]byte, amountGwei uint64, sig [96]byte) ([32]byte, error) {
	d := phase0.DepositData{PublicKey: pubkey, WithdrawalCredentials: wc[:], Amount: phase0.Gwei(amountGwei), Signature: sig}
	root, err := d.HashTreeRoot()
	if err != nil {
		return root, fmt.Errorf("deposit: hash_tree_root(DepositData): %w", err)
	}
	return root, nil
}

// Verify checks deposit data d for pubkey: the amount range, the withdrawal
// credentials, that a public network's name goes with its fork version,
// deposit_message_root, the signature, with verify(pubkey, signing root,
// signature) (BLS proof-of-possession verification, DST
// BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_), and deposit_data_root, in
// that order. The error wraps the Err* value of the first check that failed.
func Verify(pubkey [48]byte, d store.DepositData, verify func(pub [48]byte, msg []byte, sig [96]byte) bool) error {
	if err := checkMessage(pubkey, d); err != nil {
		return err
	}
	signingRoot, err := SigningRoot(d.DepositMessageRoot, d.ForkVersion)
	if err != nil {
		return err
	}
	if !verify(pubkey, signingRoot[:], d.Signature) {
		return fmt.Errorf("deposit for 0x%x: %w for this pubkey over the deposit message on fork version 0x%x (network %q)",
			pubkey[:], ErrSignature, d.ForkVersion[:], d.NetworkName)
	}
	return checkDataRoot(pubkey, d)
}

// checkMessage runs the checks of Verify that come before the signature:
// the amount, withdrawal credentials, network name against fork version,
// and deposit_message_root.
func checkMessage(pubkey [48]byte, d store.DepositData) error {
	if err := checkAmount(d.AmountGwei); err != nil {
		return fmt.Errorf("deposit for 0x%x: %w", pubkey[:], err)
	}
	if err := ValidateWithdrawalCredentials(d.WithdrawalCredentials); err != nil {
		return fmt.Errorf("deposit for 0x%x: %w: %w", pubkey[:], ErrWithdrawalCredentials, err)
	}
	if err := (Network{Name: d.NetworkName, GenesisForkVersion: d.ForkVersion}).Validate(); err != nil {
		return fmt.Errorf("deposit for 0x%x: %w: %w", pubkey[:], ErrNetwork, err)
	}
	msgRoot, err := MessageRoot(pubkey, d.WithdrawalCredentials, d.AmountGwei)
	if err != nil {
		return err
	}
	if !bytes.Equal(msgRoot[:], d.DepositMessageRoot[:]) {
		return fmt.Errorf("deposit for 0x%x: %w (have %x, computed %x)", pubkey[:], ErrMessageRoot, d.DepositMessageRoot[:], msgRoot[:])
	}
	return nil
}

// checkDataRoot checks deposit_data_root.
func checkDataRoot(pubkey [48]byte, d store.DepositData) error {
	dataRoot, err := DataRoot(pubkey, d.WithdrawalCredentials, d.AmountGwei, d.Signature)
	if err != nil {
		return err
	}
	if !bytes.Equal(dataRoot[:], d.DepositDataRoot[:]) {
		return fmt.Errorf("deposit for 0x%x: %w (have %x, computed %x)", pubkey[:], ErrDataRoot, d.DepositDataRoot[:], dataRoot[:])
	}
	return nil
}
