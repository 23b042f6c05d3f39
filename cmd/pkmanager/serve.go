package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/keys"
	"github.com/pkmanager/pkmanager/internal/mint"
	"github.com/pkmanager/pkmanager/internal/redact"
	"github.com/pkmanager/pkmanager/internal/seal"
	"github.com/pkmanager/pkmanager/internal/server"
)

// Dev-mode defaults. The dev withdrawal address is the well-known burn
// address: deposits made from dev data can never be withdrawn to anyone.
const (
	devWithdrawalAddress = "0x000000000000000000000000000000000000dEaD"
	devNetworkName       = "devnet"
	devForkVersion       = "0x10000038"
	kekFileName          = "kek.hex"
)

// serveFlags is serve's state: the server options its flags bind to
// (defaults and checks: server.Options.SetDefaults and Validate), and the
// inputs that become options only once read or resolved (files, names).
type serveFlags struct {
	opts              server.Options
	devGenesis        string
	dataDir           string
	kekFile           string
	mnemonicFile      string
	passphraseFile    string
	withdrawalAddress string
	withdrawalType    string
	network           string
	forkVersion       string
	funderKeyFile     string
}

func newServeCommand(g *globalFlags) *cobra.Command {
	f := &serveFlags{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the key manager server (gRPC + HTTP)",
		Long: `Run the key manager server.

With --dev everything has a local default: loopback addresses, a data directory
under $XDG_DATA_HOME (or ~/.local/share)/pkmanager-dev, a generated key-encryption
key, random keys with a fixed dev withdrawal address, and the devnet fork version.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := g.logger()
			if err != nil {
				return err
			}
			opts, banner, err := f.options(cmd)
			if err != nil {
				return err
			}
			opts.Logger = logger
			srv, err := server.New(cmd.Context(), opts)
			if err != nil {
				return err
			}
			fillDepositBanner(&banner, srv.DepositInfo(), opts.Deposits.RPCURL)
			banner.GRPC = srv.GRPCAddr().String()
			banner.HTTP = srv.HTTPAddr().String()
			banner.Slashing = slashingBanner(srv.SlashingChain())
			// Each warning once, in the log, before the banner that counts them.
			for _, w := range banner.Warnings {
				logger.Warn(w)
			}
			// srv.Serve logs "serving" once the watcher and depositor have
			// started: the last start-up line, which log readers (and the
			// tests) wait for.
			banner.print(cmd.OutOrStdout())
			return srv.Serve(cmd.Context())
		},
	}
	fl := cmd.Flags()
	o := &f.opts
	// d holds the defaults the flags show: those outside dev mode.
	var d server.Options
	d.SetDefaults(false)
	fl.BoolVar(&o.Dev, "dev", false, "development mode: local defaults for everything (see above); never for real funds")
	fl.StringVar(&f.devGenesis, "dev-genesis-time", "", "dev mode: genesis (RFC 3339 or Unix seconds) of the dev chain's slashing-protection clock (12 s slots, 32-slot epochs), "+
		"fixed in the store when it has none yet (default: the store's first start)")
	fl.StringVar(&f.dataDir, "data-dir", "", "directory for the store and, in dev mode, the key-encryption key (default $XDG_DATA_HOME/pkmanager, or pkmanager-dev with --dev; created 0700)")
	fl.StringVar(&o.StoreURL, "store", "", "store location: bolt:///path/file.db (default: "+server.DefaultStoreFile+" in --data-dir), or postgres://user@host:5432/db for several replicas (password in PGPASSWORD, ~/.pgpass or the URL)")
	fl.StringVar(&f.kekFile, "kek-file", "", "file holding the key-encryption key: 64 hex characters (32 random bytes). PKM_KEK may hold the key itself instead. Dev mode generates one in the data dir")
	fl.StringVar(&o.GRPCAddr, "grpc-addr", "", "gRPC listen address (default "+server.DevGRPCAddr+" with --dev, "+d.GRPCAddr+" otherwise)")
	fl.StringVar(&o.HTTPAddr, "http-addr", "", "HTTP listen address for /assignments, /api/v1, /metrics, /healthz, /readyz (default "+server.DevHTTPAddr+" with --dev, "+d.HTTPAddr+" otherwise)")
	fl.DurationVar(&o.ReuseDelay, "reuse-delay", d.ReuseDelay, "how long released keys cool down before another pod may get them (0s allowed)")
	fl.StringSliceVar(&o.Beacon.URLs, "beacon-url", nil, "beacon node (standard beacon API) of the network keys are minted for, repeatable or comma-separated: a released key is reused only after it has shown the key quiet (not signing) for --quiet-epochs, and a recycled key is checked once more right before it is handed out. Without it, reuse rests on --reuse-delay alone")
	fl.IntVar(&o.Beacon.QuietEpochs, "quiet-epochs", d.Beacon.QuietEpochs, "with --beacon-url: full epochs a released key must be seen quiet before it is reused")
	fl.IntVar(&o.MaxKeysPerRequest, "max-keys-per-request", d.MaxKeysPerRequest, "largest number of keys one request may ask for")
	fl.BoolVar(&o.Beacon.RequireActive, "require-active", false, "with --beacon-url: hand out only keys whose validators the beacon node reports active (active_ongoing), recycled keys too; a request the active keys cannot cover waits for activation, bounded by its deadline (with --deposits chain, keys minted for it first wait for their deposits); with --spare-pool the spare keys are the ones that activate ahead of requests")
	fl.IntVar(&o.SparePool, "spare-pool", 0, "with --deposits chain: keep this many minted, deposited keys that no pod holds ready (refilled in the background by the owner replica, within the funder's balance and fee caps), so requests need not wait for deposits; 0: none")
	fl.StringVar(&f.mnemonicFile, "mnemonic-file", "", "BIP-39 mnemonic file: derive new keys per EIP-2334 (m/12381/3600/i/0/0) instead of random ones")
	registerPassphraseFlag(fl, &f.passphraseFile)
	fl.BoolVar(&o.RandomKeys, "random-keys", false, "mint random keys into a store that derives its keys from a mnemonic (refused without it when --mnemonic-file is left out: random keys cannot be rebuilt from the mnemonic)")
	fl.StringVar(&f.withdrawalAddress, "withdrawal-address", "", "execution address for withdrawal credentials of new keys (required for random keys outside dev mode)")
	fl.StringVar(&f.withdrawalType, "withdrawal-type", "", "withdrawal credentials of new keys: execution (0x01), compounding (0x02, needs --withdrawal-address) or bls (0x00, needs --mnemonic-file); default execution when --withdrawal-address is given, else bls")
	fl.StringVar(&f.network, "network", "", "network of the deposit data: mainnet, sepolia, holesky, hoodi, or a devnet name together with --fork-version (required outside dev mode)")
	fl.StringVar(&f.forkVersion, "fork-version", "", "genesis fork version for a custom devnet, e.g. 0x10000038")
	fl.Uint64Var(&o.Mint.AmountGwei, "deposit-amount-gwei", deposit.DefaultAmountGwei, "deposit amount of new keys in gwei")
	fl.BoolVar(&o.LegacyGRPC, "legacy-grpc", false, "serve Prysm's cluster-pk-manager gRPC service (prysm.internal.cluster and ethereum.cluster PrivateKeyService); it accepts callers without a token (default: on with --dev, off otherwise)")
	fl.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", d.ShutdownTimeout, "how long SIGTERM waits for in-flight requests")
	registerDepositFlags(fl, &o.Deposits, &f.funderKeyFile)
	registerKubeFlags(fl, o, d)
	return cmd
}

// options resolves flags into server options, or a clear error: the
// mode's defaults and the checks are server.Options's; what is read from
// files or resolved from names is done here.
func (f *serveFlags) options(cmd *cobra.Command) (server.Options, banner, error) {
	o := &f.opts
	o.Given = cmd.Flags().Changed
	b := banner{Dev: o.Dev}
	// The network and the funder's key first: the deposit defaults and
	// checks depend on them.
	var err error
	if o.Mint.Network, err = f.mintNetwork(&b); err != nil {
		return server.Options{}, b, err
	}
	if err := loadFunderKey(&o.Deposits, f.funderKeyFile, &b); err != nil {
		return server.Options{}, b, err
	}
	o.SetDefaults(o.Dev)
	if err := o.Validate(); err != nil {
		return server.Options{}, b, err
	}
	if f.dataDir == "" {
		d, err := defaultDataDir(o.Dev)
		if err != nil {
			return server.Options{}, b, err
		}
		f.dataDir = d
	}
	dataDir, err := filepath.Abs(f.dataDir)
	if err != nil {
		return server.Options{}, b, fmt.Errorf("--data-dir: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return server.Options{}, b, fmt.Errorf("create data dir: %w", err)
	}
	b.DataDir = dataDir
	if o.Deposits.DevChain != nil {
		o.Deposits.DevChain.DataDir = filepath.Join(dataDir, "devchain")
	}
	if o.StoreURL == "" {
		o.StoreURL = server.DefaultStoreURL(dataDir)
	}
	b.Store = redact.URL(o.StoreURL)

	if o.KEK, b.KEK, err = f.loadKEK(dataDir, &b); err != nil {
		return server.Options{}, b, err
	}
	if o.Mint, err = f.mintConfig(&b); err != nil {
		return server.Options{}, b, err
	}
	if o.DevGenesisTime, err = parseDevGenesis(f.devGenesis, o.Dev); err != nil {
		return server.Options{}, b, err
	}
	b.ReuseDelay = o.ReuseDelay
	b.Reuse = "after --reuse-delay on the store's word alone (no --beacon-url: nothing checks that a released key stopped signing)"
	if len(o.Beacon.URLs) > 0 {
		b.Reuse = fmt.Sprintf("after --reuse-delay and %d quiet epochs seen by %s", o.Beacon.QuietEpochs, strings.Join(redactAll(o.Beacon.URLs), ", "))
	}
	b.Warnings = append(b.Warnings, kubeWarnings(*o)...)
	return *o, b, nil
}

func (f *serveFlags) loadKEK(dataDir string, b *banner) (*seal.KEK, string, error) {
	if v, ok := os.LookupEnv("PKM_KEK"); ok && f.kekFile == "" {
		kek, err := seal.ParseKEK(v)
		if err != nil {
			return nil, "", fmt.Errorf("PKM_KEK: %w", err)
		}
		return kek, "PKM_KEK (id " + kek.ID() + ")", nil
	}
	if f.kekFile == "" {
		if !f.opts.Dev {
			return nil, "", errors.New("no key-encryption key: give --kek-file FILE (64 hex characters; e.g. head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > FILE; chmod 600 FILE) or set PKM_KEK")
		}
		path := filepath.Join(dataDir, kekFileName)
		kek, created, warning, err := seal.LoadOrGenerateKEKFile(path)
		if err != nil {
			return nil, "", err
		}
		if warning != "" {
			b.Warnings = append(b.Warnings, warning)
		}
		if created {
			b.Warnings = append(b.Warnings, "generated a key-encryption key in "+path+" (dev mode only: keep it next to the store and never use dev data for real funds)")
		}
		return kek, path + " (id " + kek.ID() + ")", nil
	}
	kek, warning, err := seal.LoadKEKFile(f.kekFile)
	if err != nil {
		return nil, "", err
	}
	if warning != "" {
		b.Warnings = append(b.Warnings, warning)
	}
	return kek, f.kekFile + " (id " + kek.ID() + ")", nil
}

// mintNetwork resolves --network and --fork-version: what deposit data is
// made for. A server that never mints needs none; slashing-protection
// custody then takes the chain from --beacon-url, or says at a release or
// request that it has none.
func (f *serveFlags) mintNetwork(b *banner) (deposit.Network, error) {
	if f.opts.Deposits.Mode == server.DepositsOff && f.network == "" && f.forkVersion == "" && !f.opts.Dev {
		b.Network = "none (--deposits off: no deposit data is made; slashing-protection history needs --network or --beacon-url)"
		if len(f.opts.Beacon.URLs) > 0 {
			b.Network = "none (--deposits off: no deposit data is made; the chain is the beacon node's)"
		}
		return deposit.Network{}, nil
	}
	network, err := resolveNetwork(f.network, f.forkVersion, f.opts.Dev)
	if err != nil {
		return deposit.Network{}, err
	}
	b.Network = fmt.Sprintf("%s (genesis fork version %#x)", network.Name, network.GenesisForkVersion)
	return network, nil
}

func (f *serveFlags) mintConfig(b *banner) (mint.Config, error) {
	mc := mint.Config{AmountGwei: f.opts.Mint.AmountGwei, Network: f.opts.Mint.Network}

	// Key source.
	if f.passphraseFile != "" && f.mnemonicFile == "" {
		return mc, errors.New("--mnemonic-passphrase-file needs --mnemonic-file")
	}
	if f.mnemonicFile != "" && f.opts.RandomKeys {
		return mc, errors.New("--random-keys and --mnemonic-file exclude each other")
	}
	if f.mnemonicFile != "" {
		seed, err := mnemonicSeed(f.mnemonicFile, f.passphraseFile)
		if err != nil {
			return mc, err
		}
		d, err := keys.NewDeriver(seed)
		if err != nil {
			return mc, fmt.Errorf("--mnemonic-file: %w", err)
		}
		mc.Deriver = d
		b.Keys = "derived from the mnemonic in " + f.mnemonicFile + " (EIP-2334 m/12381/3600/i/0/0)"
	} else {
		b.Keys = "random"
	}

	// Withdrawal credentials: none for a server that never mints.
	if f.opts.Deposits.Mode == server.DepositsOff && f.withdrawalAddress == "" && f.withdrawalType == "" {
		b.Withdrawal = "none (--deposits off: no key is minted)"
		if f.mnemonicFile == "" {
			b.Keys = "none minted (--deposits off): imported and released keys only"
		}
		return mc, nil
	}
	addr := f.withdrawalAddress
	if addr == "" && f.opts.Dev && f.mnemonicFile == "" {
		addr = devWithdrawalAddress
		b.Warnings = append(b.Warnings, "dev mode: withdrawal credentials point to the dev address "+devWithdrawalAddress+" (a burn address)")
	}
	kind := mint.WithdrawalKind(f.withdrawalType)
	if kind == "" {
		kind = mint.WithdrawalExecution
		if addr == "" {
			kind = mint.WithdrawalBLS
		}
	}
	switch kind {
	case mint.WithdrawalExecution, mint.WithdrawalCompounding:
		if addr == "" {
			return mc, fmt.Errorf("--withdrawal-type %s needs --withdrawal-address", kind)
		}
		a, err := deposit.ParseExecutionAddress(addr)
		if err != nil {
			return mc, fmt.Errorf("--withdrawal-address: %w", err)
		}
		mc.WithdrawalAddress = a
		b.Withdrawal = fmt.Sprintf("%s to %s", kind, addr)
	case mint.WithdrawalBLS:
		if f.mnemonicFile == "" {
			return mc, errors.New("random keys need --withdrawal-address: a key must never be its own withdrawal key, and BLS (0x00) withdrawal credentials need --mnemonic-file to derive the withdrawal key (m/12381/3600/i/0)")
		}
		if addr != "" {
			return mc, errors.New("--withdrawal-type bls does not use --withdrawal-address")
		}
		b.Withdrawal = "bls (0x00; withdrawal key m/12381/3600/i/0 of the mnemonic)"
	default:
		return mc, fmt.Errorf("--withdrawal-type %q: use execution, compounding or bls", f.withdrawalType)
	}
	mc.Withdrawal = kind
	return mc, nil
}

// parseDevGenesis reads --dev-genesis-time: RFC 3339 or Unix seconds.
func parseDevGenesis(v string, dev bool) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if !dev {
		return time.Time{}, errors.New("--dev-genesis-time is for --dev only: on a public network the chain's genesis is known")
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	sec, err := strconv.ParseInt(v, 10, 64)
	if err != nil || sec <= 0 {
		return time.Time{}, fmt.Errorf("--dev-genesis-time %q: want an RFC 3339 time (2026-01-02T15:04:05Z) or Unix seconds", v)
	}
	return time.Unix(sec, 0), nil
}

// resolveNetwork finds the network of --network and --fork-version. Dev mode
// refuses a public network's name or genesis fork version: its defaults
// (generated key-encryption key, burn withdrawal address, no
// authentication) are for devnets only.
func resolveNetwork(name, forkVersion string, dev bool) (deposit.Network, error) {
	n, err := lookupNetwork(name, forkVersion, dev)
	if err != nil || !dev {
		return n, err
	}
	for _, pub := range deposit.NetworkNames() {
		known, err := deposit.LookupNetwork(pub)
		if err != nil {
			return deposit.Network{}, err
		}
		if strings.EqualFold(n.Name, known.Name) || n.GenesisForkVersion == known.GenesisForkVersion {
			return deposit.Network{}, fmt.Errorf("--dev is for devnets only, and %s (genesis fork version %#x) is a public network: dev mode generates its key-encryption key, "+
				"serves without authentication and sends withdrawals to a burn address. Run without --dev", known.Name, known.GenesisForkVersion)
		}
	}
	return n, nil
}

func lookupNetwork(name, forkVersion string, dev bool) (deposit.Network, error) {
	if forkVersion != "" {
		v, err := deposit.ParseForkVersion(forkVersion)
		if err != nil {
			return deposit.Network{}, fmt.Errorf("--fork-version: %w", err)
		}
		if name == "" {
			name = devNetworkName
		}
		if known, err := deposit.LookupNetwork(name); err == nil && known.GenesisForkVersion != v {
			return deposit.Network{}, fmt.Errorf("--fork-version %s contradicts --network %s (genesis fork version %#x)", forkVersion, name, known.GenesisForkVersion)
		}
		return deposit.Network{Name: name, GenesisForkVersion: v}, nil
	}
	if name == "" {
		if !dev {
			return deposit.Network{}, fmt.Errorf("no network: give --network (%s) or --fork-version for a devnet", strings.Join(deposit.NetworkNames(), ", "))
		}
		v, err := deposit.ParseForkVersion(devForkVersion)
		if err != nil {
			return deposit.Network{}, err
		}
		return deposit.Network{Name: devNetworkName, GenesisForkVersion: v}, nil
	}
	n, err := deposit.LookupNetwork(name)
	if err != nil {
		return deposit.Network{}, fmt.Errorf("--network: %w (for a devnet also give --fork-version)", err)
	}
	return n, nil
}

func defaultDataDir(dev bool) (string, error) {
	base := os.Getenv("XDG_DATA_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("no --data-dir and no home directory: %w", err)
		}
		base = filepath.Join(home, ".local", "share")
	}
	return filepath.Join(base, pick(dev, "pkmanager-dev", "pkmanager")), nil
}

func pick[T any](cond bool, a, b T) T {
	if cond {
		return a
	}
	return b
}

// redactAll is redact.URL of each of urls.
func redactAll(urls []string) []string {
	out := make([]string, len(urls))
	for i, u := range urls {
		out[i] = redact.URL(u)
	}
	return out
}
