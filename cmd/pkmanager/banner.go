package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/pkmanager/pkmanager/internal/slashing"
)

// banner is what `serve` prints on start: where everything is.
type banner struct {
	Dev        bool
	DataDir    string
	Store      string
	KEK        string
	GRPC       string
	HTTP       string
	Network    string
	Keys       string
	Withdrawal string
	ReuseDelay time.Duration
	Slashing   string // slashing-protection custody: the chain, or why off
	Reuse      string // when released keys are reused
	Deposit    depositBanner
	// Warnings are logged once at start (serve); the banner counts them.
	Warnings []string
}

func (b banner) print(w io.Writer) {
	mode := "server"
	if b.Dev {
		mode = "DEV server (not for real funds)"
	}
	fmt.Fprintf(w, "pkmanager %s (version %s)\n", mode, buildVersion())
	fmt.Fprintf(w, "  data dir:     %s\n", b.DataDir)
	fmt.Fprintf(w, "  store:        %s\n", b.Store)
	fmt.Fprintf(w, "  kek:          %s\n", b.KEK)
	fmt.Fprintf(w, "  grpc:         %s (pkmanager.v1.KeyService, PrivateKeyService, grpc.health.v1)\n", b.GRPC)
	fmt.Fprintf(w, "  http:         http://%s (/assignments /api/v1 /metrics /healthz /readyz)\n", b.HTTP)
	fmt.Fprintf(w, "  assignments:  http://%s/assignments\n", b.HTTP)
	fmt.Fprintf(w, "  network:      %s\n", b.Network)
	fmt.Fprintf(w, "  new keys:     %s\n", b.Keys)
	fmt.Fprintf(w, "  withdrawal:   %s\n", b.Withdrawal)
	b.Deposit.print(w)
	if b.Reuse != "" {
		fmt.Fprintf(w, "  reuse:        %s\n", b.Reuse)
	}
	if b.Slashing != "" {
		fmt.Fprintf(w, "  slashing:     %s\n", b.Slashing)
	}
	// Warnings go to the log only (serve logs each once), not here as well.
	if n := len(b.Warnings); n > 0 {
		fmt.Fprintf(w, "  warnings:     %d, in the log\n", n)
	}
	// The last line: test harnesses wait for it.
	fmt.Fprintf(w, "  reuse delay:  %s\n", b.ReuseDelay)
}

// slashingBanner describes slashing-protection custody (server.SlashingChain).
func slashingBanner(c slashing.Chain, err error) string {
	switch {
	case errors.Is(err, slashing.ErrChainUnknown):
		return "off: no chain parameters for this network (releases with --slashing-protection are refused; requests get no slashing_protection.json)"
	case err != nil:
		return "off: " + err.Error()
	}
	return "EIP-3076 interchanges for " + c.String()
}
