// Command keyholder is the validator container of the real-cluster tests
// (test/node): a stand-in for a validator client that does what matters here
// and nothing else. It decrypts every keystore `pkmanager request` wrote
// (lighthouse or keystores layout), checks that each secret key belongs to its
// public key, and reports, with timestamps, which public keys it has loaded for
// as long as it runs: a JSON line per event in REPORT_DIR/<container id>.jsonl
// (a hostPath directory the test reads):
//
//	{"event":"loading", ...}   at start: the public keys named by the keystores it was given, before decryption
//	                           (from here on the container holds them)
//	{"event":"loaded", ...}    once, after every keystore is decrypted and checked
//	{"event":"holding", ...}   every 250 ms while it runs (also during a stop delay)
//	{"event":"stopped", ...}   on SIGTERM/SIGINT, after STOP_DELAY, right before exit
//
// Each line carries the pod name and UID (downward API env POD_NAME, POD_UID),
// the container ID (from /proc/self/cgroup) and the wall time. STOP_DELAY (a Go
// duration) keeps the keys loaded that long after SIGTERM, like a validator
// client finishing its duties, so the tests can tell whether anyone else is
// given the keys while the container may still sign.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/pkmanager/pkmanager/internal/keys"
	"github.com/pkmanager/pkmanager/internal/keystore"
)

// Record is one line of a report.
type Record struct {
	Event     string    `json:"event"`
	Time      time.Time `json:"time"`
	Pod       string    `json:"pod"`
	PodUID    string    `json:"pod_uid"`
	Container string    `json:"container"`
	Pubkeys   []string  `json:"pubkeys"`
	Error     string    `json:"error,omitempty"`
}

var cidRe = regexp.MustCompile(`[0-9a-f]{64}`)

// containerID is the container's ID as the runtime names it: the last 64-hex
// component of the cgroup paths (cgroupfs driver: /kubepods/.../pod<uid>/<id>).
func containerID() string {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if m := cidRe.FindAllString(l, -1); len(m) > 0 {
			return m[len(m)-1]
		}
	}
	return ""
}

// entry is one keystore and its password file.
type entry struct{ keystore, password string }

// find lists the keystores under dir and the public keys they name (0x-prefixed
// lower-case hex, sorted), without decrypting anything.
func find(dir string) ([]entry, []string, error) {
	var entries []entry
	// lighthouse: validators/0x<pk>/voting-keystore.json + secrets/0x<pk>
	vals, _ := filepath.Glob(filepath.Join(dir, "validators", "0x*", "voting-keystore.json"))
	for _, ks := range vals {
		entries = append(entries, entry{ks, filepath.Join(dir, "secrets", filepath.Base(filepath.Dir(ks)))})
	}
	// keystores: keystores/<name>.json + secrets/<name>.txt
	kss, _ := filepath.Glob(filepath.Join(dir, "keystores", "*.json"))
	for _, ks := range kss {
		entries = append(entries, entry{ks, filepath.Join(dir, "secrets", strings.TrimSuffix(filepath.Base(ks), ".json")+".txt")})
	}
	if len(entries) == 0 {
		return nil, nil, fmt.Errorf("no keystores in %s", dir)
	}
	var named []string
	for _, e := range entries {
		data, err := os.ReadFile(e.keystore)
		if err != nil {
			return nil, nil, err
		}
		ks, err := keystore.Parse(data)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", e.keystore, err)
		}
		pub, ok := ks.Pubkey()
		if !ok {
			return nil, nil, fmt.Errorf("%s: no public key", e.keystore)
		}
		named = append(named, fmt.Sprintf("%#x", pub))
	}
	sort.Strings(named)
	return entries, named, nil
}

// load decrypts every keystore and returns the public keys of the secret keys
// (checked against the keystores'), 0x-prefixed lower-case hex, sorted.
func load(entries []entry) ([]string, error) {
	var out []string
	for _, e := range entries {
		data, err := os.ReadFile(e.keystore)
		if err != nil {
			return nil, err
		}
		pw, err := os.ReadFile(e.password)
		if err != nil {
			return nil, err
		}
		ks, err := keystore.Parse(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.keystore, err)
		}
		secret, err := ks.Decrypt(strings.TrimRight(string(pw), "\r\n"))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.keystore, err)
		}
		sk, err := keys.SecretKeyFromBytes(secret)
		clear(secret)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.keystore, err)
		}
		pub := sk.PublicKey()
		sk.Zero()
		if want, ok := ks.Pubkey(); ok && want != pub {
			return nil, fmt.Errorf("%s: the secret key does not belong to the keystore's public key", e.keystore)
		}
		out = append(out, fmt.Sprintf("%#x", pub))
	}
	sort.Strings(out)
	return out, nil
}

func main() {
	dir := envOr("KEYS_DIR", "/keys")
	reports := envOr("REPORT_DIR", "/reports")
	stopDelay, err := time.ParseDuration(envOr("STOP_DELAY", "0s"))
	if err != nil {
		fail("STOP_DELAY: %v", err)
	}
	rec := Record{Pod: os.Getenv("POD_NAME"), PodUID: os.Getenv("POD_UID"), Container: containerID()}
	if rec.Container == "" {
		fail("no container ID in /proc/self/cgroup")
	}
	f, err := os.OpenFile(filepath.Join(reports, rec.Container+".jsonl"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fail("report: %v", err)
	}
	write := func(event string, pubkeys []string, e error) {
		r := rec
		r.Event, r.Time, r.Pubkeys = event, time.Now().UTC(), pubkeys
		if e != nil {
			r.Error = e.Error()
		}
		b, _ := json.Marshal(r)
		if _, err := f.Write(append(b, '\n')); err != nil {
			fail("report: %v", err)
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	entries, named, err := find(dir)
	if err != nil {
		write("error", nil, err)
		fail("%v", err)
	}
	write("loading", named, nil)
	pubkeys, err := load(entries)
	if err != nil {
		write("error", named, err)
		fail("%v", err)
	}
	write("loaded", pubkeys, nil)
	fmt.Printf("loaded %d keys: %s\n", len(pubkeys), strings.Join(pubkeys, " "))
	tick := time.NewTicker(250 * time.Millisecond)
	var stopAt <-chan time.Time
	for {
		select {
		case s := <-sig:
			if stopAt == nil {
				fmt.Printf("got %v: stopping in %s\n", s, stopDelay)
				stopAt = time.After(stopDelay)
			}
		case <-stopAt:
			write("stopped", pubkeys, nil)
			fmt.Println("stopped")
			os.Exit(0)
		case <-tick.C:
			write("holding", pubkeys, nil)
		}
	}
}

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

func fail(format string, args ...any) {
	err := fmt.Errorf(format, args...)
	fmt.Fprintln(os.Stderr, "keyholder:", err)
	if errors.Is(err, os.ErrPermission) {
		os.Exit(3)
	}
	os.Exit(1)
}
