package integration

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/keys"
	"github.com/pkmanager/pkmanager/internal/keystore"
	"github.com/pkmanager/pkmanager/internal/store/postgres/pgtest"
	"github.com/pkmanager/pkmanager/test/testbin"
)

// readmeCommand is one shell command of a ```sh block of README.md: its
// lines joined at the trailing backslashes, comments dropped.
type readmeCommand struct {
	line int    // of the README, where the command starts
	text string // as a shell would read it
}

// readmeCommands returns the commands of every ```sh block of README.md,
// by block (the line of the block's fence).
func readmeCommands(t *testing.T) (blocks []int, byBlock map[int][]readmeCommand) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	comment := regexp.MustCompile(`(^|\s)#.*$`)
	byBlock = map[int][]readmeCommand{}
	block, in := 0, false
	var cur *readmeCommand
	for i, line := range strings.Split(string(b), "\n") {
		switch {
		case !in && strings.HasPrefix(line, "```sh"):
			block, in = i+1, true
			blocks = append(blocks, block)
			continue
		case in && strings.HasPrefix(line, "```"):
			in = false
			continue
		case !in:
			continue
		}
		line = strings.TrimSpace(comment.ReplaceAllString(line, ""))
		if line == "" {
			continue
		}
		cont := strings.HasSuffix(line, "\\")
		line = strings.TrimSpace(strings.TrimSuffix(line, "\\"))
		if cur == nil {
			byBlock[block] = append(byBlock[block], readmeCommand{line: i + 1, text: line})
			cur = &byBlock[block][len(byBlock[block])-1]
		} else {
			cur.text += " " + line
		}
		if !cont {
			cur = nil
		}
	}
	if len(blocks) < 10 {
		t.Fatalf("README.md: only %d ```sh blocks", len(blocks))
	}
	return blocks, byBlock
}

// readmeNotRun are the README commands TestREADMECommands does not run, by
// prefix, with why and which test covers them instead. Everything else in
// a ```sh block is run: a new command fails the test until it runs or is
// listed here.
var readmeNotRun = []struct{ prefix, why string }{
	// A prefix may list alternatives, separated by " | ".
	{"bash scripts/test.sh", "the whole test suite, this test included (CI runs it: .ci/run)"},
	{"./pkmanager serve --data-dir /var/lib/pkmanager --kek-file kek.hex --network hoodi",
		"a public network (hoodi), with the pod watcher on (a cluster): no test uses a public network; serve in a cluster (deploy/overlays, devnet settings) is test/node TestValidatorKeysOnRealCluster, outside one the devnet example's serve runs here"},
	{"./pkmanager serve --store 'postgres://pkmanager@db.example",
		"in a cluster (pod watcher on) against a PostgreSQL elsewhere, flags elided: test/node TestHAOverlayOnRealCluster (3 replicas on PostgreSQL in a cluster)"},
	{"kubectl  | helm install ", "needs a cluster: test/node TestValidatorKeysOnRealCluster, TestHAOverlayOnRealCluster, TestLodestarValidatorOnRealCluster (deploy/overlays and deploy/examples on a real kubelet), TestHelmChartOnRealCluster (the Helm chart) and test/k8s TestDeployManifests"},
	{"lighthouse account validator slashing-protection export",
		"needs a Lighthouse validator client: this test writes the EIP-3076 file the export would; test/lodestar TestOnLodestar hands a real validator client's history over (the interchange Lodestar's keymanager API returns, by pkmanager sync)"},
	{"./pkmanager sync ", "needs a validator client's keymanager API: test/lodestar TestOnLodestar runs `pkmanager sync` beside Lodestar's validator client"},
}

func notRun(c readmeCommand) (string, bool) {
	for _, n := range readmeNotRun {
		if matchesNotRun(c, n.prefix) {
			return n.why, true
		}
	}
	return "", false
}

func matchesNotRun(c readmeCommand, prefixes string) bool {
	for _, p := range strings.Split(prefixes, " | ") {
		if strings.HasPrefix(c.text, p) {
			return true
		}
	}
	return false
}

// readmeRunner runs README commands in a working directory, as an
// operator would after `go build -o pkmanager ./cmd/pkmanager`, against
// servers on free loopback ports: 127.0.0.1:8000 and 127.0.0.1:8080 are
// the running server's gRPC and HTTP addresses, 127.0.0.1:8545 its dev
// chain's JSON-RPC; /var/lib/pkmanager is a directory of the test; `open
// URL` (a desktop's browser) is a GET of URL that must succeed.
type readmeRunner struct {
	t     *testing.T
	dir   string
	bin   string // ./pkmanager in dir
	built string // where the README's go build writes the binary, once for all runners
	srv   *server
	rpc   string            // the dev chain's JSON-RPC address
	subst map[string]string // further placeholders: 0x... by context, postgres URLs
	ran   map[int]bool      // README lines run
}

var (
	devRPCLine    = regexp.MustCompile(`dev chain JSON-RPC http://(\S+)`)
	devFunderLine = regexp.MustCompile(`dev funder key (0x[0-9a-f]{64})`)
)

func (r *readmeRunner) expand(text string) string {
	text = strings.ReplaceAll(text, "go run ./cmd/pkmanager ", "./pkmanager ")
	text = strings.ReplaceAll(text, "/var/lib/pkmanager", filepath.Join(r.dir, "var-lib-pkmanager"))
	for from, to := range r.subst {
		text = strings.ReplaceAll(text, from, to)
	}
	if r.srv != nil {
		text = strings.ReplaceAll(text, "127.0.0.1:8000", r.srv.grpcAddr)
		text = strings.ReplaceAll(text, "127.0.0.1:8080", r.srv.httpAddr)
	}
	if r.rpc != "" {
		text = strings.ReplaceAll(text, "127.0.0.1:8545", r.rpc)
	}
	return text
}

// run runs c (a serve command starts a server that the next commands
// use) and returns its output.
func (r *readmeRunner) run(c readmeCommand) string {
	t := r.t
	t.Helper()
	if _, ok := notRun(c); ok {
		t.Fatalf("README line %d is listed as not run: %s", c.line, c.text)
	}
	r.ran[c.line] = true
	text := r.expand(c.text)
	if strings.HasPrefix(text, "./pkmanager serve ") {
		r.serve(c, text)
		return r.srv.banner
	}
	if strings.HasPrefix(text, "go build ") {
		// Where the README runs it: the repository's root, writing the
		// binary for the working directory (once: later runners link it).
		if _, err := os.Stat(r.built); err == nil {
			if err := os.Symlink(r.built, r.bin); err != nil {
				t.Fatal(err)
			}
			return ""
		}
		text = strings.Replace(text, "-o pkmanager", "-o "+r.built, 1)
		defer func() {
			if err := os.Symlink(r.built, r.bin); err != nil {
				t.Fatal(err)
			}
		}()
	}
	if url, ok := strings.CutPrefix(text, "open "); ok {
		text = "curl -fsS -o /dev/null " + url
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", text)
	cmd.Dir = r.dir
	if strings.HasPrefix(text, "go build ") {
		cmd.Dir = filepath.Join("..", "..")
	}
	// Keystores at low KDF cost, as --insecure-kdf would: standard scrypt
	// for the README's keys would take minutes of CPU.
	cmd.Env = testbin.Env("PKM_INSECURE_KDF=true")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("README line %d: %s\nran: %s\n%v\n%s", c.line, c.text, text, err, out)
	}
	return string(out)
}

// serve starts the serve command text on free loopback ports (and, in dev
// mode, a fresh data directory unless it names one), stopping the server
// before.
func (r *readmeRunner) serve(c readmeCommand, text string) {
	t := r.t
	if r.srv != nil {
		r.srv.stop()
		r.srv = nil
	}
	args := strings.Fields(strings.TrimPrefix(text, "./pkmanager "))
	dataDir := ""
	for i, a := range args {
		switch {
		case a == "127.0.0.1:8000" || a == "127.0.0.1:8080":
			args[i] = "127.0.0.1:0"
		case a == "--data-dir" && i+1 < len(args):
			dataDir = args[i+1]
		}
	}
	if dataDir == "" {
		dataDir = filepath.Join(r.dir, "data-"+strings.TrimPrefix(filepath.Base(t.TempDir()), "0"))
		args = append(args, "--data-dir", dataDir)
	}
	if !strings.Contains(text, "--grpc-addr") {
		args = append(args, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	}
	if strings.Contains(text, "--dev") && !strings.Contains(text, "--dev-rpc-addr") {
		args = append(args, "--dev-rpc-addr", "127.0.0.1:0")
	}
	args = append(args, "--log-format", "json")
	r.srv = startServe(t, r.bin, dataDir, r.dir, args...)
	if m := devRPCLine.FindStringSubmatch(r.srv.banner); m != nil {
		r.rpc = m[1]
	}
	t.Logf("README line %d: serving (grpc %s, http %s)", c.line, r.srv.grpcAddr, r.srv.httpAddr)
}

// TestREADMECommands runs every command of the README's ```sh blocks,
// except those readmeNotRun lists (a cluster, a public network, another
// client), against real servers on the embedded dev chain, and checks the
// results the README shows.
func TestREADMECommands(t *testing.T) {
	blocks, byBlock := readmeCommands(t)
	var all []readmeCommand
	for _, b := range blocks {
		all = append(all, byBlock[b]...)
	}
	// Every exclusion names commands the README has.
	for _, n := range readmeNotRun {
		found := false
		for _, c := range all {
			found = found || matchesNotRun(c, n.prefix)
		}
		if !found {
			t.Errorf("readmeNotRun lists %q, which no README command starts with", n.prefix)
		}
	}
	// find returns the block with a command that starts with prefix.
	find := func(prefix string) []readmeCommand {
		t.Helper()
		for _, b := range blocks {
			for _, c := range byBlock[b] {
				if strings.HasPrefix(c.text, prefix) {
					return byBlock[b]
				}
			}
		}
		t.Fatalf("README: no ```sh block with a command starting with %q", prefix)
		return nil
	}
	ran := map[int]bool{}
	built := filepath.Join(t.TempDir(), "pkmanager")
	newRunner := func(t *testing.T) *readmeRunner {
		dir := t.TempDir()
		return &readmeRunner{t: t, dir: dir, bin: filepath.Join(dir, "pkmanager"), built: built, subst: map[string]string{}, ran: ran}
	}
	const withdrawal = "0x00000000000000000000000000000000000000aa"

	t.Run("quickstart", func(t *testing.T) {
		r := newRunner(t)
		// Try it: build, serve --dev.
		for _, c := range find("go build -o pkmanager") {
			r.run(c)
		}
		// Keys, assignments, release, deposit data.
		outs := map[int]string{}
		for _, c := range find("./pkmanager keys list") {
			outs[c.line] = r.run(c)
		}
		joined := ""
		for _, o := range outs {
			joined += o
		}
		for _, want := range []string{
			"pod validator-0 holds 4 keys (recycled 0, minted 4): 4 keystores written, 0 kept, 0 keystores removed, in ./keys;",
			"pod validator-0 holds 4 keys (recycled 0, minted 0): 0 keystores written, 4 kept",
			"pod validator-2 holds 5 keys (recycled 4, minted 1)",
			"validator-1=0x",
		} {
			if !strings.Contains(joined, want) {
				t.Errorf("the quickstart's output lacks %q:\n%s", want, joined)
			}
		}
		// On-chain deposits: the embedded chain's contract and events.
		for _, c := range find("./pkmanager deposit-contract events") {
			if out := r.run(c); strings.HasPrefix(c.text, "curl") && !strings.Contains(out, "pkmanager_deposits") {
				t.Errorf("metrics: %s", out)
			}
		}
		// Import into the running server: keystores of other keys under one
		// password, and the server's own (reported as stored).
		writeKeystores(t, filepath.Join(r.dir, "validator_keys"), filepath.Join(r.dir, "pw.txt"), 2)
		for _, c := range find("./pkmanager import --server") {
			if strings.Contains(c.text, "--server") {
				r.run(c)
			}
		}
	})

	t.Run("slashing protection", func(t *testing.T) {
		// Pod A (validator-0, 4 keys from the quickstart's first request)
		// gives its history back with its keys (the file a client's export
		// writes), pod B (validator-1) gets it.
		r := newRunner(t)
		for _, c := range find("go build -o pkmanager") {
			r.run(c)
		}
		r.run(find("./pkmanager keys list")[0])
		writeInterchange(t, r, "validator-0", "a.json")
		for _, c := range find("lighthouse account validator slashing-protection export") {
			if _, ok := notRun(c); ok {
				continue
			}
			out := r.run(c)
			if strings.Contains(c.text, "release") && !strings.Contains(out, "released 4 keys of pod validator-0; reusable from ") ||
				strings.Contains(c.text, "release") && !strings.Contains(out, "slashing-protection history of 4 keys recorded") {
				t.Errorf("release with history: %s", out)
			}
			if strings.Contains(c.text, "request") && !strings.Contains(out, "4 keystores written, 0 kept, 0 keystores removed, in ./keys-b;") ||
				strings.Contains(c.text, "request") && !strings.Contains(out, "slashing-protection history of 4 keys in ") {
				t.Errorf("request after it: %s", out)
			}
		}
	})

	t.Run("stopped store import", func(t *testing.T) {
		r := newRunner(t)
		r.run(find("go build -o pkmanager")[0])
		r.run(find("head -c 32 /dev/urandom")[0]) // kek.hex
		r.run(find("./pkmanager mnemonic new")[0])
		stoppedStore(t, r)
		for _, c := range find("./pkmanager import --server") {
			if strings.Contains(c.text, "--data-dir") {
				if out := r.run(c); !strings.Contains(out, "100") {
					t.Errorf("import from a mnemonic: %s", out)
				}
			}
		}
	})

	t.Run("mnemonic", func(t *testing.T) {
		r := newRunner(t)
		r.run(find("go build -o pkmanager")[0])
		r.subst["--withdrawal-address 0x..."] = "--withdrawal-address " + withdrawal
		for _, c := range find("./pkmanager mnemonic new") {
			out := r.run(c)
			if strings.Contains(c.text, "serve") && !strings.Contains(out, "derived from the mnemonic in mnemonic.txt") {
				t.Errorf("README line %d: banner:\n%s", c.line, out)
			}
		}
	})

	t.Run("devnet", func(t *testing.T) {
		// The devnet example against the embedded dev chain of a dev
		// server: its funder deploys a contract of the example's own.
		r := newRunner(t)
		r.run(find("go build -o pkmanager")[0])
		dev := startServe(t, r.bin, filepath.Join(r.dir, "dev"), r.dir, "serve", "--dev", "--data-dir", filepath.Join(r.dir, "dev"),
			"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--dev-rpc-addr", "127.0.0.1:0", "--log-format", "json")
		m, f := devRPCLine.FindStringSubmatch(dev.banner), devFunderLine.FindStringSubmatch(dev.banner)
		if m == nil || f == nil {
			t.Fatalf("dev banner without JSON-RPC or funder key:\n%s", dev.banner)
		}
		r.rpc = m[1]
		os.WriteFile(filepath.Join(r.dir, "funder.hex"), []byte(f[1]), 0o600)
		r.run(find("head -c 32 /dev/urandom")[0]) // kek.hex
		cs := find("./pkmanager deposit-contract deploy")
		out := r.run(cs[0])
		addr := regexp.MustCompile(`0x[0-9a-fA-F]{40}`).FindString(out)
		if addr == "" {
			t.Fatalf("deploy printed no address: %s", out)
		}
		r.subst["--withdrawal-address 0x..."] = "--withdrawal-address " + withdrawal
		r.subst["--deposit-contract 0x..."] = "--deposit-contract " + addr
		r.run(cs[1])
		out = mustRun(t, "request", "--server", r.srv.grpcAddr, "--pod-name", "validator-0", "--keys", "1", "--insecure-kdf", "--out", filepath.Join(r.dir, "keys"))
		if !strings.Contains(out, "pod validator-0 holds 1 key (recycled 0, minted 1)") {
			t.Errorf("request against the devnet example's server: %s", out)
		}
	})

	t.Run("backup", func(t *testing.T) {
		if !pgtest.Enabled() {
			t.Skip("restore and migrate-store go to PostgreSQL: set PKM_TEST_POSTGRES (scripts/test.sh and CI do)")
		}
		r := newRunner(t)
		r.run(find("go build -o pkmanager")[0])
		r.run(find("head -c 32 /dev/urandom")[0]) // kek.hex
		stoppedStore(t, r)
		cs := find("./pkmanager backup")
		// restore and migrate-store each into an empty schema.
		r.subst["postgres://pkmanager@db/pkmanager"] = "'" + pgtest.NewSchema(t) + "'"
		r.run(cs[0])
		r.run(cs[1])
		r.subst["postgres://pkmanager@db/pkmanager"] = "'" + pgtest.NewSchema(t) + "'"
		r.run(cs[2])
	})

	t.Run("other", func(t *testing.T) {
		r := newRunner(t)
		r.run(find("go build -o pkmanager")[0])
		// Try it's first block: serve --dev starts (it is stopped at once).
		for _, c := range find("go run ./cmd/pkmanager serve --dev") {
			if _, ok := notRun(c); !ok {
				r.run(c)
			}
		}
		r.run(find("export PGPASSWORD")[0])
	})

	if t.Failed() {
		return
	}
	for _, c := range all {
		why, excluded := notRun(c)
		switch {
		case excluded && ran[c.line]:
			t.Errorf("README line %d ran but is listed as not run", c.line)
		case excluded:
			t.Logf("not run: README line %d (%s): %s", c.line, c.text, why)
		case !ran[c.line]:
			t.Errorf("README line %d is neither run by TestREADMECommands nor listed in readmeNotRun: %s", c.line, c.text)
		}
	}
}

// stoppedStore leaves in the README's /var/lib/pkmanager the store of a
// stopped server that ran with the README's kek.hex and handed out 2 keys.
func stoppedStore(t *testing.T, r *readmeRunner) {
	t.Helper()
	data := filepath.Join(r.dir, "var-lib-pkmanager")
	srv := startServe(t, r.bin, data, r.dir, "serve", "--dev", "--data-dir", data, "--kek-file", "kek.hex",
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--dev-rpc-addr", "127.0.0.1:0", "--log-format", "json")
	mustRun(t, "request", "--server", srv.grpcAddr, "--pod-name", "validator-0", "--keys", "2", "--insecure-kdf", "--out", filepath.Join(r.dir, "keys"))
	srv.stop()
}

// writeKeystores writes n keystores of new random keys into dir, all under
// the password it writes to pwFile (as staking-deposit-cli leaves them).
func writeKeystores(t *testing.T, dir, pwFile string, n int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	const password = "readme example password"
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for range n {
		sk, err := keys.GenerateRandom()
		if err != nil {
			t.Fatal(err)
		}
		secret := sk.Bytes()
		ks, err := keystore.Encrypt(secret, password, sk.PublicKey(), "", keystore.Options{Insecure: true})
		if err != nil {
			t.Fatal(err)
		}
		data, err := ks.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		pk := sk.PublicKey()
		if err := os.WriteFile(filepath.Join(dir, "keystore-0x"+hex.EncodeToString(pk[:])+".json"), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// writeInterchange writes the EIP-3076 history a validator client of pod
// would export for the keys it holds: one signed block each, on the chain
// the server's banner names.
func writeInterchange(t *testing.T, r *readmeRunner, pod, path string) {
	t.Helper()
	root := regexp.MustCompile(`genesis validators root (0x[0-9a-f]{64})`).FindStringSubmatch(r.srv.banner)
	if root == nil {
		t.Fatalf("banner without genesis validators root:\n%s", r.srv.banner)
	}
	type block struct {
		Slot string `json:"slot"`
	}
	type entry struct {
		Pubkey       string  `json:"pubkey"`
		SignedBlocks []block `json:"signed_blocks"`
		Attestations []any   `json:"signed_attestations"`
	}
	var data []entry
	for _, pk := range r.srv.assignments(t)[pod] {
		data = append(data, entry{Pubkey: pk, SignedBlocks: []block{{Slot: "1"}}, Attestations: []any{}})
	}
	b, err := json.Marshal(map[string]any{
		"metadata": map[string]string{"interchange_format_version": "5", "genesis_validators_root": root[1]},
		"data":     data,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r.dir, path), b, 0o600); err != nil {
		t.Fatal(err)
	}
}
