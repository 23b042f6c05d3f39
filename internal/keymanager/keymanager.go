// Package keymanager is a client of the standard keymanager API of Ethereum
// validator clients (https://ethereum.github.io/keymanager-APIs/): it lists,
// imports and deletes a client's local keystores (/eth/v1/keystores), with
// the bearer token the client writes to a file.
//
// Errors name the API's base URL, the method and the path, the HTTP status
// and the client's own message (truncated); never the token, a keystore or
// a password.
package keymanager

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/pkmanager/pkmanager/internal/redact"
	"github.com/pkmanager/pkmanager/internal/store"
)

// The statuses of the keymanager API, one per key of an import or delete.
const (
	StatusImported  = "imported"
	StatusDuplicate = "duplicate"
	StatusDeleted   = "deleted"
	StatusNotActive = "not_active" // deleted before, history kept and returned
	StatusNotFound  = "not_found"
	StatusError     = "error"
)

// DefaultTimeout bounds one call when Options.Timeout is 0. An import
// decrypts every keystore in the validator client, which takes seconds per
// standard scrypt keystore.
const DefaultTimeout = 2 * time.Minute

const path = "/eth/v1/keystores"

// maxAnswer bounds an answer read (a DELETE returns the keys' whole
// signing history).
const maxAnswer = 64 << 20

// Options configure a Client.
type Options struct {
	// TokenFile holds the API's bearer token. It is read again for every
	// call: clients write it at start and may rewrite it.
	TokenFile string
	// CAFile holds the PEM CA certificate of an https API's certificate
	// (default: the system roots).
	CAFile string
	// Timeout of one call (default DefaultTimeout).
	Timeout time.Duration
}

// Client talks to one validator client's keymanager API. It is safe for
// concurrent use.
type Client struct {
	base      string // scheme://host[:port], without a path
	tokenFile string
	hc        *http.Client
}

// New returns a client of the keymanager API at rawURL (http or https,
// scheme://host:port without a path).
func New(rawURL string, opts Options) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("keymanager API URL %s: want http://host:port or https://host:port", redact.URL(rawURL))
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("keymanager API URL %s: want only scheme, host and port", redact.URL(rawURL))
	}
	if opts.TokenFile == "" {
		return nil, errors.New("keymanager API: no token file (the validator client writes its bearer token to one)")
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if opts.CAFile != "" {
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("keymanager CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("keymanager CA file %s: no PEM certificate in it", opts.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &Client{
		base:      u.Scheme + "://" + u.Host,
		tokenFile: opts.TokenFile,
		hc:        &http.Client{Timeout: opts.Timeout, Transport: tr},
	}, nil
}

// URL is the API's base URL.
func (c *Client) URL() string { return c.base }

// Key is one key the client lists.
type Key struct {
	Pubkey store.Pubkey
	// Readonly keys cannot be deleted through the API (the client loaded
	// them from its own configuration).
	Readonly bool
}

// Status is the API's answer for one key.
type Status struct {
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
}

// List is GET /eth/v1/keystores: the keys the client signs with.
func (c *Client) List(ctx context.Context) ([]Key, error) {
	var r struct {
		Data []struct {
			Pubkey   string `json:"validating_pubkey"`
			Readonly bool   `json:"readonly"`
		} `json:"data"`
	}
	if err := c.call(ctx, http.MethodGet, nil, &r); err != nil {
		return nil, err
	}
	out := make([]Key, 0, len(r.Data))
	for i, d := range r.Data {
		pk, err := store.ParsePubkey(d.Pubkey)
		if err != nil || !strings.HasPrefix(d.Pubkey, "0x") {
			return nil, fmt.Errorf("keymanager API %s GET %s: data[%d].validating_pubkey is not a 0x-prefixed 48-byte key", c.base, path, i)
		}
		out = append(out, Key{Pubkey: pk, Readonly: d.Readonly})
	}
	return out, nil
}

// Import is POST /eth/v1/keystores: EIP-2335 keystores (JSON documents),
// one password each, and an EIP-3076 interchange for them (nil: none). It
// returns one status per keystore, in order.
func (c *Client) Import(ctx context.Context, keystores [][]byte, passwords []string, slashingProtection []byte) ([]Status, error) {
	if len(keystores) != len(passwords) {
		return nil, fmt.Errorf("keymanager import: %d keystores, %d passwords", len(keystores), len(passwords))
	}
	body := struct {
		Keystores          []string `json:"keystores"`
		Passwords          []string `json:"passwords"`
		SlashingProtection string   `json:"slashing_protection,omitempty"`
	}{Keystores: make([]string, len(keystores)), Passwords: passwords, SlashingProtection: string(slashingProtection)}
	for i, k := range keystores {
		body.Keystores[i] = string(k)
	}
	var r struct {
		Data []Status `json:"data"`
	}
	if err := c.call(ctx, http.MethodPost, body, &r); err != nil {
		return nil, err
	}
	if len(r.Data) != len(keystores) {
		return nil, fmt.Errorf("keymanager API %s POST %s: %d statuses for %d keystores", c.base, path, len(r.Data), len(keystores))
	}
	return r.Data, nil
}

// Delete is DELETE /eth/v1/keystores: the client stops signing with the
// keys and returns one status per key, in order, and the EIP-3076
// interchange of their signing history (nil when it sent none). The
// standard sends the interchange as a JSON string; an object is accepted
// too.
func (c *Client) Delete(ctx context.Context, pubkeys []store.Pubkey) ([]Status, []byte, error) {
	ks := make([]string, len(pubkeys))
	for i, pk := range pubkeys {
		ks[i] = pk.String()
	}
	var r struct {
		Data               []Status        `json:"data"`
		SlashingProtection json.RawMessage `json:"slashing_protection"`
	}
	if err := c.call(ctx, http.MethodDelete, map[string][]string{"pubkeys": ks}, &r); err != nil {
		return nil, nil, err
	}
	if len(r.Data) != len(pubkeys) {
		return nil, nil, fmt.Errorf("keymanager API %s DELETE %s: %d statuses for %d keys", c.base, path, len(r.Data), len(pubkeys))
	}
	var sp []byte
	switch raw := bytes.TrimSpace(r.SlashingProtection); {
	case len(raw) == 0 || string(raw) == "null":
	case raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, nil, fmt.Errorf("keymanager API %s DELETE %s: slashing_protection: %w", c.base, path, err)
		}
		if s != "" {
			sp = []byte(s)
		}
	default:
		sp = raw
	}
	return r.Data, sp, nil
}

// call sends one request with the token and decodes the JSON answer.
func (c *Client) call(ctx context.Context, method string, body, out any) error {
	what := fmt.Sprintf("keymanager API %s %s %s", c.base, method, path)
	tok, err := readToken(c.tokenFile)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its text repeats the URL
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("%s: reading the answer: %w", what, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: HTTP %d: %s", what, resp.StatusCode, apiMessage(b))
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s: the answer is not the API's JSON: %w", what, err)
	}
	return nil
}

// apiMessage is the "message" of an error answer, else its start, on one
// line and at most 200 bytes.
func apiMessage(b []byte) string {
	var e struct {
		Message string `json:"message"`
	}
	s := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &e) == nil && e.Message != "" {
		s = e.Message
	}
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	if s == "" {
		s = "(no message)"
	}
	return s
}

// readToken reads the bearer token; its errors never quote the file.
func readToken(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("token file %s is empty (has the validator client written it yet?)", file)
	}
	redact.Secret(tok)
	return tok, nil
}
