package main

import (
	"fmt"
	"io"
	"time"
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
	Deposit    depositBanner
	Warnings   []string
}

func (b banner) print(w io.Writer) {
	mode := "server"
	if b.Dev {
		mode = "DEV server (not for real funds)"
	}
	fmt.Fprintf(w, "pkmanager %s (version %s)\n", mode, version)
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
	fmt.Fprintf(w, "  reuse delay:  %s\n", b.ReuseDelay)
	for _, warning := range b.Warnings {
		fmt.Fprintf(w, "  WARNING: %s\n", warning)
	}
}
