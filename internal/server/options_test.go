package server

import (
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/depositor"
	"github.com/pkmanager/pkmanager/internal/kube/auth"
	"github.com/pkmanager/pkmanager/internal/kube/watcher"
	"github.com/pkmanager/pkmanager/internal/reusegate"
)

// flags is an Options.Given of the named flags.
func flags(names ...string) func(string) bool {
	return func(f string) bool {
		for _, n := range names {
			if n == f {
				return true
			}
		}
		return false
	}
}

func TestSetDefaults(t *testing.T) {
	prod := Options{}
	prod.SetDefaults(false)
	k := prod.Kube
	if prod.GRPCAddr != ":8000" || prod.HTTPAddr != ":8080" || prod.LegacyGRPC || prod.ReuseDelay != allocator.DefaultReuseDelay ||
		prod.MaxKeysPerRequest != allocator.DefaultMaxKeysPerRequest || prod.Beacon.QuietEpochs != reusegate.DefaultQuietEpochs ||
		prod.ShutdownTimeout != 30*time.Second {
		t.Errorf("defaults outside dev mode: %+v", prod)
	}
	if !k.Watch || k.Auth != AuthToken || k.PodSelector != "pkmanager.io/validator=true" || k.TokenAudience != auth.DefaultAudience ||
		k.Resync != watcher.DefaultResync || k.NodeGracePeriod != watcher.DefaultNodeGracePeriod || k.LeaseName != "pkmanager" ||
		k.UIDConflict != allocator.UIDConflictWait || k.LeaderElect {
		t.Errorf("Kubernetes defaults outside dev mode: %+v", k)
	}
	if err := prod.Validate(); err != nil {
		t.Errorf("the defaults do not validate: %v", err)
	}

	dev := Options{Dev: true}
	dev.SetDefaults(true)
	if dev.GRPCAddr != "127.0.0.1:8000" || dev.HTTPAddr != "127.0.0.1:8080" || !dev.LegacyGRPC || dev.Kube.Watch || dev.Kube.Auth != AuthNone {
		t.Errorf("dev-mode defaults: %+v", dev)
	}
	if err := dev.Validate(); err != nil {
		t.Errorf("the dev defaults do not validate: %v", err)
	}

	// What the caller set stays, zero or not; the rest is the mode's.
	for name, c := range map[string]struct {
		o     Options
		dev   bool
		check func(Options) bool
	}{
		"given values are kept": {Options{GRPCAddr: "10.0.0.1:1", ReuseDelay: time.Second, Kube: KubeOptions{Auth: AuthToken, LeaseName: "l"}}, true,
			func(o Options) bool {
				return o.GRPCAddr == "10.0.0.1:1" && o.ReuseDelay == time.Second && o.Kube.Auth == AuthToken && o.Kube.LeaseName == "l"
			}},
		"--watch=false given":       {Options{Given: flags("watch")}, false, func(o Options) bool { return !o.Kube.Watch && o.Kube.Auth == AuthToken }},
		"--legacy-grpc=false --dev": {Options{Given: flags("legacy-grpc")}, true, func(o Options) bool { return !o.LegacyGRPC && o.Kube.Auth == AuthNone }},
		"--reuse-delay 0s given":    {Options{Given: flags("reuse-delay")}, false, func(o Options) bool { return o.ReuseDelay == 0 }},
		"--pod-selector '' given":   {Options{Given: flags("pod-selector")}, false, func(o Options) bool { return o.Kube.PodSelector == "" }},
		"--auth '' given":           {Options{Given: flags("auth", "grpc-addr")}, false, func(o Options) bool { return o.Kube.Auth == AuthToken && o.GRPCAddr == ":8000" }},
		"admin service accounts trimmed": {Options{Kube: KubeOptions{AdminServiceAccounts: []string{" ns/a ", "", "ns/b"}}}, false,
			func(o Options) bool { return strings.Join(o.Kube.AdminServiceAccounts, ",") == "ns/a,ns/b" }},
	} {
		o := c.o
		o.SetDefaults(c.dev)
		if !c.check(o) {
			t.Errorf("%s: %+v", name, o)
		}
	}
}

func TestValidate(t *testing.T) {
	loop := Options{GRPCAddr: "127.0.0.1:0", HTTPAddr: "localhost:0"}
	wide := Options{GRPCAddr: "0.0.0.0:9000", HTTPAddr: "127.0.0.1:0"}
	with := func(o Options, f func(*Options)) Options { f(&o); return o }
	for name, c := range map[string]struct {
		o    Options
		want string // "" = accepted
	}{
		"defaults on loopback":          {loop, ""},
		"token anywhere":                {with(wide, func(o *Options) { o.Kube.Auth = AuthToken }), ""},
		"none off loopback":             {wide, "--auth none on 0.0.0.0:9000, which is not a loopback address"},
		"none off loopback, dev hint":   {with(wide, func(o *Options) { o.Dev = true }), "--insecure-listen-any serves there anyway"},
		"dev insecure-listen-any":       {with(wide, func(o *Options) { o.Dev, o.InsecureListenAny = true, true }), ""},
		"insecure-listen-any, no dev":   {with(wide, func(o *Options) { o.InsecureListenAny = true }), "--insecure-listen-any is for --dev with --auth none only"},
		"insecure-listen-any and token": {with(loop, func(o *Options) { o.Dev, o.InsecureListenAny, o.Kube.Auth = true, true, AuthToken }), "--insecure-listen-any is for --dev"},
		"bad auth mode":                 {with(loop, func(o *Options) { o.Kube.Auth = "basic" }), `--auth "basic": use token or none`},
		"bad uid policy":                {with(loop, func(o *Options) { o.Kube.UIDConflict = "steal" }), `--uid-conflict: uid conflict policy "steal": use wait or fail`},
		"uid policy wait":               {with(loop, func(o *Options) { o.Kube.UIDConflict = allocator.UIDConflictWait }), ""},
		"negative reuse delay":          {with(loop, func(o *Options) { o.ReuseDelay = -time.Second }), "--reuse-delay must not be negative"},
		"max keys 0 not given":          {loop, ""},
		"max keys 0 given":              {with(loop, func(o *Options) { o.Given = flags("max-keys-per-request") }), "--max-keys-per-request must be at least 1"},
		"max keys negative":             {with(loop, func(o *Options) { o.MaxKeysPerRequest = -1 }), "--max-keys-per-request must be at least 1"},
		"quiet epochs 0 given":          {with(loop, func(o *Options) { o.Given = flags("quiet-epochs") }), "--quiet-epochs must be at least 1"},
		"shutdown timeout 0 given":      {with(loop, func(o *Options) { o.Given = flags("shutdown-timeout") }), "--shutdown-timeout must be positive"},
		"shutdown timeout negative":     {with(loop, func(o *Options) { o.ShutdownTimeout = -1 }), "--shutdown-timeout must be positive"},
		"negative spare pool":           {with(loop, func(o *Options) { o.SparePool = -1 }), "--spare-pool must not be negative"},
		"bad admin service account": {with(loop, func(o *Options) { o.Kube.AdminServiceAccounts = []string{"admin"} }),
			`--admin-service-account: admin service account "admin": want namespace/name`},
		"tls cert without key": {with(loop, func(o *Options) { o.TLS.CertFile = "c.pem" }), "--tls-cert and --tls-key go together"},
		"two errors at once": {with(wide, func(o *Options) { o.ReuseDelay, o.Kube.Auth = -1, "basic" }),
			"--auth \"basic\": use token or none\n--reuse-delay must not be negative"},
	} {
		err := c.o.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want an error saying %q", name, err, c.want)
		}
	}
}

// The deposit options' defaults follow the mode and the network, and
// Validate refuses what does not fit together, naming the flag (what serve
// checked in its deposit flags before); --require-active too.
func TestDepositOptions(t *testing.T) {
	mainnet, err := deposit.LookupNetwork("mainnet")
	if err != nil {
		t.Fatal(err)
	}
	devnet := deposit.Network{Name: "devnet", GenesisForkVersion: [4]byte{0x10, 0, 0, 0x38}}
	key, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	other := common.HexToAddress("0x5FbDB2315678afecb367f032d93F642f64180aa3")
	rpc := "http://127.0.0.1:8545"
	for name, c := range map[string]struct {
		dev     bool
		network deposit.Network
		d       DepositOptions
		given   []string
		beacon  BeaconOptions
		want    string // "" valid
		check   func(DepositOptions) bool
	}{
		"export by default": {network: mainnet, want: "", check: func(d DepositOptions) bool { return d.Mode == DepositsExport && d.DevChain == nil }},
		"chain with --eth1-rpc, the public network's contract and chain ID": {network: mainnet, d: DepositOptions{RPCURL: rpc, FunderKey: key},
			check: func(d DepositOptions) bool {
				return d.Mode == DepositsChain && d.Contract == common.HexToAddress("0x00000000219ab540356cBB839Cbe05303d7705Fa") &&
					d.ChainID.Int64() == 1 && d.Confirmations == PublicConfirmations
			}},
		"dev: the embedded chain, one confirmation": {dev: true, network: devnet,
			check: func(d DepositOptions) bool {
				return d.Mode == DepositsChain && d.DevChain != nil && d.DevChain.RPCAddr == DefaultDevRPCAddr && d.Confirmations == 1 && d.RefuseChainIDs[1] == "mainnet"
			}},
		"dev: --dev-rpc-addr none":            {dev: true, network: devnet, d: DepositOptions{DevRPCAddr: DevRPCNone}, check: func(d DepositOptions) bool { return d.DevChain.RPCAddr == "" }},
		"devnet: one confirmation":            {network: devnet, d: DepositOptions{RPCURL: rpc, Contract: other, FunderKey: key}, check: func(d DepositOptions) bool { return d.Confirmations == 1 }},
		"bad mode":                            {network: devnet, d: DepositOptions{Mode: "later"}, want: "--deposits: "},
		"dev on a public chain ID":            {dev: true, network: devnet, d: DepositOptions{ChainID: big.NewInt(17000)}, want: "--chain-id 17000 is holesky's chain ID"},
		"off with an execution node":          {network: devnet, d: DepositOptions{Mode: DepositsOff, RPCURL: rpc}, want: "not off"},
		"export with a funder key":            {network: devnet, d: DepositOptions{Mode: DepositsExport, FunderKey: key}, want: "--funder-key-file is for --deposits chain"},
		"export with an execution node":       {network: devnet, d: DepositOptions{Mode: DepositsExport, RPCURL: rpc, Contract: other}},
		"export: contract without node":       {network: devnet, d: DepositOptions{Mode: DepositsExport, Contract: other}, want: "--deposits export needs --eth1-rpc"},
		"--eth1-rpc without scheme not shown": {network: devnet, d: DepositOptions{Mode: DepositsExport, RPCURL: "mainnet.example.io/v3/NoSchemeKey123", Contract: other}, want: "--eth1-rpc: want a URL"},
		"devnet without contract":             {network: devnet, d: DepositOptions{RPCURL: rpc, FunderKey: key}, want: "needs --deposit-contract"},
		"public network, another contract":    {network: mainnet, d: DepositOptions{RPCURL: rpc, Contract: other, FunderKey: key}, want: "is not mainnet's deposit contract"},
		"--chain-id contradicts --network":    {network: mainnet, d: DepositOptions{RPCURL: rpc, ChainID: big.NewInt(5), FunderKey: key}, want: "--chain-id 5 contradicts --network mainnet (chain ID 1)"},
		"chain without funder key":            {network: devnet, d: DepositOptions{RPCURL: rpc, Contract: other}, want: "--deposits chain needs --funder-key-file"},
		"priority fee above max fee": {network: devnet, d: DepositOptions{RPCURL: rpc, Contract: other, FunderKey: key, MaxFeePerGas: depositor.Gwei(3), MaxPriorityFeePerGas: depositor.Gwei(5)},
			want: "--max-priority-fee-gwei 5 is above --max-fee-gwei 3"},
		"max fee 0": {network: devnet, d: DepositOptions{RPCURL: rpc, Contract: other, FunderKey: key, MaxFeePerGas: depositor.Gwei(0), MaxPriorityFeePerGas: depositor.Gwei(0)},
			want: "--max-fee-gwei must be at least 1"},
		"dev chain with a contract":   {dev: true, network: devnet, d: DepositOptions{Contract: other}, want: "need --eth1-rpc"},
		"dev chain, block time 0":     {dev: true, network: devnet, given: []string{"dev-block-time"}, want: "--dev-block-time must be positive"},
		"--require-active, no beacon": {network: devnet, beacon: BeaconOptions{RequireActive: true}, want: "--require-active needs --beacon-url"},
		"--require-active, exported":  {network: devnet, beacon: BeaconOptions{RequireActive: true, URLs: []string{"http://b"}}, want: "--require-active needs --deposits chain or off"},
		"--require-active, chain": {network: devnet, beacon: BeaconOptions{RequireActive: true, URLs: []string{"http://b"}},
			d: DepositOptions{RPCURL: rpc, Contract: other, FunderKey: key}},
		"--require-active, off": {network: devnet, beacon: BeaconOptions{RequireActive: true, URLs: []string{"http://b"}}, d: DepositOptions{Mode: DepositsOff}},
	} {
		o := Options{Dev: c.dev, Deposits: c.d, Beacon: c.beacon}
		o.Mint.Network = c.network
		if c.given != nil {
			o.Given = flags(c.given...)
		}
		o.SetDefaults(c.dev)
		err := o.Validate()
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: Validate = %v, want %q", name, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "NoSchemeKey123") {
			t.Errorf("%s: the error shows the URL: %v", name, err)
		}
		if c.check != nil && !c.check(o.Deposits) {
			t.Errorf("%s: defaults %+v", name, o.Deposits)
		}
	}
}
