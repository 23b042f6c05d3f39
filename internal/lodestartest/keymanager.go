package lodestartest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ValidatorClient is a running `lodestar validator` with the standard
// keymanager API on (bearer-token authentication).
type ValidatorClient struct {
	// URL is the keymanager API, http://127.0.0.1:PORT.
	URL string
	// Token is the bearer token (TokenFile holds it:
	// <Dir>/validator-db/api-token.txt).
	Token     string
	TokenFile string
	// Dir is the client's --dataDir; Log its log file.
	Dir string
	Log string

	p *proc
}

// StartValidatorClient starts a Lodestar validator client with no keys and
// the keymanager API on loopback, connected to the chain's beacon node, and
// returns once the API answers with the token. args are extra `lodestar
// validator` arguments. It is killed at tb's cleanup; its log is printed if
// the test failed.
func (c *Chain) StartValidatorClient(tb testing.TB, args ...string) *ValidatorClient {
	tb.Helper()
	n := c.vcs.Add(1)
	ctx := tb.Context()
	for attempt := 1; ; attempt++ {
		v, err := c.startVC(tb, ctx, fmt.Sprintf("vc-%d-%d", n, attempt), args)
		if err == nil {
			return v
		}
		if attempt == 3 || !strings.Contains(err.Error(), "EADDRINUSE") {
			tb.Fatalf("lodestartest: validator client: %v", err)
		}
		tb.Logf("lodestartest: validator client attempt %d: %v; starting again", attempt, err)
	}
}

func (c *Chain) startVC(tb testing.TB, ctx context.Context, name string, extra []string) (*ValidatorClient, error) {
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	v := &ValidatorClient{
		URL: "http://127.0.0.1:" + strconv.Itoa(ports[0]),
		Dir: filepath.Join(c.Dir, name), Log: filepath.Join(c.Dir, name+".log"),
	}
	if err := os.MkdirAll(v.Dir, 0o700); err != nil {
		return nil, err
	}
	args := []string{"validator", "--preset", "minimal", "--paramsFile", c.ConfigFile, "--dataDir", v.Dir,
		"--beaconNodes", c.URL, "--keymanager", "--keymanager.address", "127.0.0.1", "--keymanager.port", strconv.Itoa(ports[0])}
	args = append(args, extra...)
	p, err := startNode(c.install, v.Dir, "validator client "+name, v.Log, args...)
	if err != nil {
		return nil, err
	}
	v.p = p
	tb.Cleanup(func() { p.stop(5 * time.Second) })
	logOnFailure(tb, p)
	deadline := time.Now().Add(2 * time.Minute)
	var last error
	for {
		if v.Token == "" {
			v.TokenFile, v.Token = findToken(v.Dir)
		}
		if v.Token != "" {
			if _, last = v.ListKeystores(ctx); last == nil {
				return v, nil
			}
		} else {
			last = errors.New("no api-token.txt yet")
		}
		if done, perr := p.exited(); done {
			if addrInUse(v.Log) {
				return nil, fmt.Errorf("EADDRINUSE (%v)", perr)
			}
			return nil, fmt.Errorf("exited before its keymanager API answered (%v); log %s:\n%s", perr, v.Log, tail(v.Log, 30))
		}
		if time.Now().After(deadline) {
			p.stop(0)
			return nil, fmt.Errorf("keymanager API %s not answering after 2 min (last: %v); log %s", v.URL, last, v.Log)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// findToken returns the keymanager token file under dir and its content.
func findToken(dir string) (string, string) {
	var path string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == "api-token.txt" {
			path = p
			return fs.SkipAll
		}
		return nil
	})
	if path == "" {
		return "", ""
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", ""
	}
	return path, strings.TrimSpace(string(b))
}

// Stop stops the client (SIGTERM, SIGKILL after 5 s). Also done at cleanup.
func (v *ValidatorClient) Stop() { v.p.stop(5 * time.Second) }

// Kill kills the client at once (SIGKILL), as a crash would.
func (v *ValidatorClient) Kill() { v.p.stop(0) }

func (v *ValidatorClient) call(ctx context.Context, method string, body, out any) error {
	return call(ctx, method, v.URL+"/eth/v1/keystores", map[string]string{"Authorization": "Bearer " + v.Token}, body, out)
}

// KeystoreInfo is one key GET /eth/v1/keystores lists.
type KeystoreInfo struct {
	ValidatingPubkey string `json:"validating_pubkey"`
	DerivationPath   string `json:"derivation_path"`
	Readonly         bool   `json:"readonly"`
}

// Status is the keymanager API's answer for one key: imported, duplicate,
// deleted, not_active, not_found or error (with Message).
type Status struct {
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
}

// ListKeystores is GET /eth/v1/keystores.
func (v *ValidatorClient) ListKeystores(ctx context.Context) ([]KeystoreInfo, error) {
	var r struct {
		Data []KeystoreInfo `json:"data"`
	}
	if err := v.call(ctx, http.MethodGet, nil, &r); err != nil {
		return nil, err
	}
	return r.Data, nil
}

// ImportKeystores is POST /eth/v1/keystores: EIP-2335 keystores (JSON
// strings), their passwords, and an EIP-3076 interchange (JSON string; ""
// sends none). It returns one status per keystore.
func (v *ValidatorClient) ImportKeystores(ctx context.Context, keystores, passwords []string, slashingProtection string) ([]Status, error) {
	if len(keystores) != len(passwords) {
		return nil, fmt.Errorf("%d keystores, %d passwords", len(keystores), len(passwords))
	}
	body := map[string]any{"keystores": keystores, "passwords": passwords}
	if slashingProtection != "" {
		body["slashing_protection"] = slashingProtection
	}
	var r struct {
		Data []Status `json:"data"`
	}
	if err := v.call(ctx, http.MethodPost, body, &r); err != nil {
		return nil, err
	}
	if len(r.Data) != len(keystores) {
		return r.Data, fmt.Errorf("import: %d statuses for %d keystores", len(r.Data), len(keystores))
	}
	return r.Data, nil
}

// DeleteKeystores is DELETE /eth/v1/keystores: the client stops signing with
// the keys and returns one status per key and the EIP-3076 interchange of
// their signing history (Lodestar sends it as a JSON string).
func (v *ValidatorClient) DeleteKeystores(ctx context.Context, pubkeys ...string) ([]Status, string, error) {
	var r struct {
		Data               []Status        `json:"data"`
		SlashingProtection json.RawMessage `json:"slashing_protection"`
	}
	if err := v.call(ctx, http.MethodDelete, map[string]any{"pubkeys": pubkeys}, &r); err != nil {
		return nil, "", err
	}
	// The standard says a string; accept an object too.
	sp := string(r.SlashingProtection)
	var s string
	if err := json.Unmarshal(r.SlashingProtection, &s); err == nil {
		sp = s
	}
	if len(r.Data) != len(pubkeys) {
		return r.Data, sp, fmt.Errorf("delete: %d statuses for %d keys", len(r.Data), len(pubkeys))
	}
	return r.Data, sp, nil
}

// RemoveKeystores deletes keys so that the client really stops signing with
// them: DELETE /eth/v1/keystores, then GET, and DELETE again while GET still
// lists any of them (at most 5 times). It returns the first DELETE's
// statuses, the last DELETE's interchange and how many DELETEs it took.
//
// Lodestar 1.5.1 needs this: for a key whose validator index it knows (any
// active key), DELETE answers "deleted" and returns the history, but its
// ValidatorStore.removeSigner short-circuits (`indicesService.removeForKey(pk)
// || validators.delete(pk)`), so the key stays loaded, GET still lists it, its
// index is found again and it goes on signing. The second DELETE, before the
// index is found again, removes it.
func (v *ValidatorClient) RemoveKeystores(ctx context.Context, pubkeys ...string) ([]Status, string, int, error) {
	var first []Status
	var interchange string
	for n := 1; ; n++ {
		st, sp, err := v.DeleteKeystores(ctx, pubkeys...)
		if err != nil {
			return first, interchange, n, err
		}
		if n == 1 {
			first = st
		}
		interchange = sp
		list, err := v.ListKeystores(ctx)
		if err != nil {
			return first, interchange, n, err
		}
		var left []string
		for _, k := range list {
			for _, pk := range pubkeys {
				if strings.EqualFold(k.ValidatingPubkey, pk) {
					left = append(left, pk)
				}
			}
		}
		if len(left) == 0 {
			return first, interchange, n, nil
		}
		if n == 5 {
			return first, interchange, n, fmt.Errorf("after %d DELETEs the client still lists %v", n, left)
		}
	}
}

// Interchange is an EIP-3076 slashing-protection interchange.
type Interchange struct {
	Metadata struct {
		InterchangeFormatVersion string `json:"interchange_format_version"`
		GenesisValidatorsRoot    string `json:"genesis_validators_root"`
	} `json:"metadata"`
	Data []InterchangeKey `json:"data"`
}

// InterchangeKey is the history of one key.
type InterchangeKey struct {
	Pubkey             string              `json:"pubkey"`
	SignedBlocks       []SignedBlock       `json:"signed_blocks"`
	SignedAttestations []SignedAttestation `json:"signed_attestations"`
}

// SignedBlock is a block signed at Slot.
type SignedBlock struct {
	Slot        Uint   `json:"slot"`
	SigningRoot string `json:"signing_root,omitempty"`
}

// SignedAttestation is an attestation signed with these epochs.
type SignedAttestation struct {
	SourceEpoch Uint   `json:"source_epoch"`
	TargetEpoch Uint   `json:"target_epoch"`
	SigningRoot string `json:"signing_root,omitempty"`
}

// EmptyInterchange is an interchange (format 5) with no history, for a chain.
func EmptyInterchange(genesisValidatorsRoot string) string {
	ic := Interchange{Data: []InterchangeKey{}}
	ic.Metadata.InterchangeFormatVersion = "5"
	ic.Metadata.GenesisValidatorsRoot = genesisValidatorsRoot
	b, _ := json.Marshal(ic)
	return string(b)
}

// ParseInterchange decodes an interchange.
func ParseInterchange(s string) (*Interchange, error) {
	var ic Interchange
	if err := json.Unmarshal([]byte(s), &ic); err != nil {
		return nil, fmt.Errorf("interchange: %w", err)
	}
	return &ic, nil
}

// Key returns the history of a key (0x hex, any case), or nil.
func (ic *Interchange) Key(pubkey string) *InterchangeKey {
	for i := range ic.Data {
		if strings.EqualFold(ic.Data[i].Pubkey, pubkey) {
			return &ic.Data[i]
		}
	}
	return nil
}

// MaxTargetEpoch returns the highest attestation target epoch (false: none).
func (k *InterchangeKey) MaxTargetEpoch() (uint64, bool) {
	var m uint64
	for _, a := range k.SignedAttestations {
		m = max(m, uint64(a.TargetEpoch))
	}
	return m, len(k.SignedAttestations) > 0
}
