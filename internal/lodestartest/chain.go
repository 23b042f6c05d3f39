package lodestartest

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// ChainOptions configures StartChain. Zero values take the defaults.
type ChainOptions struct {
	// Install is the Lodestar install directory (default: Require's).
	Install string
	// Validators is the number of interop genesis validators (default 8).
	Validators int
	// SecondsPerSlot is SECONDS_PER_SLOT (default 2; an epoch is 8 slots in
	// the minimal preset).
	SecondsPerSlot int
	// StartValidators is the inclusive range of interop indices the beacon
	// node's own validator client runs, as "FIRST..LAST" ("" runs none).
	//
	// Keep it at 3/4 of the validators or more, so that the chain justifies
	// and finalizes (2/3 of the stake must attest) and most slots have a
	// block.
	StartValidators string
	// GenesisDelay is how far ahead of the start genesis is (default 20 s).
	// The node must be up before genesis, or its validators miss the first
	// slots. StartChain restarts with twice the delay if it was late.
	GenesisDelay time.Duration
	// Params are extra --params.NAME VALUE chain config overrides.
	Params map[string]string
	// Args are extra arguments for `lodestar dev`.
	Args []string
}

// Chain is a running single-node Lodestar dev chain.
type Chain struct {
	// URL is the beacon API, http://127.0.0.1:PORT.
	URL string
	// GenesisTime is the chain's genesis time (whole seconds).
	GenesisTime time.Time
	// GenesisValidatorsRoot is 0x-prefixed lower-case hex, as the beacon API
	// and EIP-3076 write it.
	GenesisValidatorsRoot string
	// GenesisForkVersion is 0x-prefixed hex (0x01000001: Altair, minimal).
	GenesisForkVersion string
	SecondsPerSlot     int
	SlotsPerEpoch      int
	// ValidatorCount is the number of genesis validators; StartValidators the
	// range the node's own validator client runs.
	ValidatorCount  int
	StartValidators string
	// Dir is the chain's working directory; Log the beacon node's log file.
	Dir string
	Log string
	// TestnetDir holds what `lodestar dev --dumpTestnetFiles` wrote for this
	// chain's config: config.yaml, keystores/0x<pubkey>/voting-keystore.json
	// and secrets/0x<pubkey> of each interop validator (password
	// KeystorePassword; pbkdf2, c=262144).
	TestnetDir string
	// ConfigFile is TestnetDir/config.yaml (--paramsFile of validator clients).
	ConfigFile string
	// PasswordFile holds KeystorePassword (for `pkmanager import --password-file`).
	PasswordFile string

	install string
	tb      testing.TB
	bn      *proc
	vcs     atomic.Int32

	livenessGET atomic.Bool // the node has only Lodestar 1.5.1's GET liveness route
}

var rangeRe = regexp.MustCompile(`^(\d+)\.\.(\d+)$`)

// slotImportTolerance is how far, in time, a dev node's head may fall behind
// its clock while the node still calls itself synced and serves its
// validators' duties (--sync.slotImportTolerance, which
// scripts/lodestar/lodestar-install.sh backports to 1.5.1; its default is one
// epoch). A lone node has no peer to sync from, so a longer gap without
// blocks (a paused machine, a starved validator client) stopped the chain for
// good; with an hour of slots the chain makes blocks again when it resumes,
// as Lodestar's own single-node tests set it.
const slotImportTolerance = time.Hour

// errLate: the node came up too long after genesis for its validators.
var errLate = errors.New("beacon node too late for its genesis")

// StartChain starts `lodestar dev` on loopback and returns once its beacon API
// answers (before genesis, which is opts.GenesisDelay after the start) and the
// interop keystores are dumped. The node is killed at t.Cleanup; its log is
// printed if the test failed.
//
// Without a Lodestar install it skips the test (fails it under CI=true).
func StartChain(tb testing.TB, opts ChainOptions) *Chain {
	tb.Helper()
	install := opts.Install
	if install == "" {
		install = Require(tb)
	}
	if opts.Validators == 0 {
		opts.Validators = 8
	}
	if opts.SecondsPerSlot == 0 {
		opts.SecondsPerSlot = 2
	}
	if opts.GenesisDelay == 0 {
		opts.GenesisDelay = 20 * time.Second
	}
	if opts.StartValidators != "" {
		m := rangeRe.FindStringSubmatch(opts.StartValidators)
		if m == nil {
			tb.Fatalf("lodestartest: StartValidators %q is not FIRST..LAST", opts.StartValidators)
		}
		first, _ := strconv.Atoi(m[1])
		last, _ := strconv.Atoi(m[2])
		if first > last || last >= opts.Validators {
			tb.Fatalf("lodestartest: StartValidators %q outside 0..%d", opts.StartValidators, opts.Validators-1)
		}
	}
	dir := tb.TempDir()
	c := &Chain{
		ValidatorCount: opts.Validators, StartValidators: opts.StartValidators,
		Dir: dir, TestnetDir: filepath.Join(dir, "testnet"),
		PasswordFile: filepath.Join(dir, "keystore-password.txt"),
		install:      install, tb: tb,
	}
	c.ConfigFile = filepath.Join(c.TestnetDir, "config.yaml")
	if err := os.WriteFile(c.PasswordFile, []byte(KeystorePassword), 0o600); err != nil {
		tb.Fatal(err)
	}
	params := []string{"--params.SECONDS_PER_SLOT", strconv.Itoa(opts.SecondsPerSlot), "--params.ALTAIR_FORK_EPOCH", "0"}
	names := make([]string, 0, len(opts.Params))
	for k := range opts.Params {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		params = append(params, "--params."+k, opts.Params[k])
	}

	// The testnet files (config.yaml and keystores) in parallel with the node.
	dump, err := startNode(install, dir, "lodestar dev --dumpTestnetFiles", filepath.Join(dir, "dump.log"),
		append([]string{"dev", "--dumpTestnetFiles", c.TestnetDir, "--genesisValidators", strconv.Itoa(opts.Validators)}, params...)...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { dump.stop(0) })
	logOnFailure(tb, dump)

	watchClock(tb)
	ctx := tb.Context()
	delay := opts.GenesisDelay
	for attempt := 1; ; attempt++ {
		err := c.startBeacon(ctx, attempt, delay, opts, params)
		if err == nil {
			break
		}
		if attempt == 3 {
			tb.Fatalf("lodestartest: beacon node: %v", err)
		}
		tb.Logf("lodestartest: beacon node attempt %d: %v; starting again", attempt, err)
		if errors.Is(err, errLate) {
			delay *= 2
		}
	}

	select {
	case <-dump.done:
		if dump.err != nil {
			tb.Fatalf("lodestartest: lodestar dev --dumpTestnetFiles: %v (log %s)", dump.err, dump.log)
		}
	case <-time.After(3 * time.Minute):
		tb.Fatalf("lodestartest: lodestar dev --dumpTestnetFiles not done after 3 min (log %s)", dump.log)
	}
	for i := range opts.Validators {
		if _, err := os.Stat(c.KeystorePath(i)); err != nil {
			tb.Fatalf("lodestartest: no dumped keystore of interop validator %d: %v", i, err)
		}
	}
	return c
}

// startBeacon starts the beacon node and checks it answered before genesis.
func (c *Chain) startBeacon(ctx context.Context, attempt int, delay time.Duration, opts ChainOptions, params []string) error {
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	rest, p2p := ports[0], ports[1]
	c.URL = "http://127.0.0.1:" + strconv.Itoa(rest)
	genesis := time.Now().Add(delay).Truncate(time.Second)
	cwd := filepath.Join(c.Dir, fmt.Sprintf("bn-%d", attempt)) // `lodestar dev` writes genesis.ssz into its working directory
	if err := os.MkdirAll(cwd, 0o700); err != nil {
		return err
	}
	args := []string{"dev", "--genesisValidators", strconv.Itoa(opts.Validators), "--genesisTime", strconv.FormatInt(genesis.Unix(), 10)}
	args = append(args, params...)
	if opts.StartValidators != "" {
		args = append(args, "--startValidators", opts.StartValidators)
	}
	args = append(args, "--dataDir", filepath.Join(cwd, "data"),
		"--rest.address", "127.0.0.1", "--rest.port", strconv.Itoa(rest), "--beaconNodes", c.URL,
		"--listenAddress", "127.0.0.1", "--port", strconv.Itoa(p2p), "--discv5", "false", "--mdns", "false",
		"--sync.slotImportTolerance", strconv.Itoa(int(slotImportTolerance/time.Second)/opts.SecondsPerSlot))
	args = append(args, opts.Args...)
	c.Log = filepath.Join(c.Dir, fmt.Sprintf("beacon-%d.log", attempt))
	p, err := startNode(c.install, cwd, "beacon node (lodestar dev)", c.Log, args...)
	if err != nil {
		return err
	}
	c.tb.Cleanup(func() { p.stop(5 * time.Second) })
	logOnFailure(c.tb, p)
	// Its validator client needs the API by the first slots: 4 slots after
	// genesis is too late.
	late := genesis.Add(time.Duration(4*opts.SecondsPerSlot) * time.Second)
	for {
		var g struct {
			GenesisTime           string `json:"genesis_time"`
			GenesisValidatorsRoot string `json:"genesis_validators_root"`
			GenesisForkVersion    string `json:"genesis_fork_version"`
		}
		err := c.get(ctx, "/eth/v1/beacon/genesis", &g)
		if now := time.Now(); now.After(late) {
			p.stop(0)
			return fmt.Errorf("%w: %s after genesis its API had not answered (last: %v); log %s",
				errLate, now.Sub(genesis).Round(time.Second), err, c.Log)
		}
		if err == nil {
			gt, err := strconv.ParseInt(g.GenesisTime, 10, 64)
			if err != nil {
				return fmt.Errorf("genesis_time %q: %v", g.GenesisTime, err)
			}
			c.GenesisTime = time.Unix(gt, 0)
			c.GenesisValidatorsRoot = strings.ToLower(g.GenesisValidatorsRoot)
			c.GenesisForkVersion = g.GenesisForkVersion
			break
		}
		if done, perr := p.exited(); done {
			if addrInUse(c.Log) {
				return fmt.Errorf("a port was taken (EADDRINUSE): %v", perr)
			}
			return fmt.Errorf("exited before its API answered (%v); log %s:\n%s", perr, c.Log, tail(c.Log, 30))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	var spec map[string]string
	if err := c.get(ctx, "/eth/v1/config/spec", &spec); err != nil {
		return err
	}
	var err1, err2 error
	c.SecondsPerSlot, err1 = strconv.Atoi(spec["SECONDS_PER_SLOT"])
	c.SlotsPerEpoch, err2 = strconv.Atoi(spec["SLOTS_PER_EPOCH"])
	if err1 != nil || err2 != nil || c.SecondsPerSlot != opts.SecondsPerSlot || c.SlotsPerEpoch <= 0 {
		return fmt.Errorf("spec: SECONDS_PER_SLOT %q (want %d), SLOTS_PER_EPOCH %q", spec["SECONDS_PER_SLOT"], opts.SecondsPerSlot, spec["SLOTS_PER_EPOCH"])
	}
	c.bn = p
	return nil
}

// Stop stops the beacon node (SIGTERM, then SIGKILL after 5 s). It is also
// done at t.Cleanup.
func (c *Chain) Stop() { c.bn.stop(5 * time.Second) }

// KeystorePath is the dumped EIP-2335 keystore of interop validator i.
func (c *Chain) KeystorePath(i int) string {
	return filepath.Join(c.TestnetDir, "keystores", InteropPubkey(i), "voting-keystore.json")
}

// Keystore returns the keystore JSON of interop validator i (password
// KeystorePassword).
func (c *Chain) Keystore(i int) (string, error) {
	b, err := os.ReadFile(c.KeystorePath(i))
	return string(b), err
}

// InteropPubkey returns interop validator i's public key, 0x-prefixed
// lower-case hex. At genesis validator i is interop key i.
func InteropPubkey(i int) string {
	pk := InteropSecretKey(i).PublicKey()
	return "0x" + hex.EncodeToString(pk[:])
}
