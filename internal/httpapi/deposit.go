package httpapi

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/store"
)

// depositData serves every stored deposit (optionally only keys in the
// given states) as a staking-deposit-cli deposit_data-<unix>.json download.
func (s *server) depositData(w http.ResponseWriter, r *http.Request) error {
	states, err := parseStates(r.URL.Query()["state"])
	if err != nil {
		return err
	}
	var entries []deposit.CLIEntry
	err = s.cfg.Keys.ListKeys(r.Context(), store.ListOptions{States: states, WithDeposit: true}, func(k store.Key) error {
		if k.Deposit != nil {
			entries = append(entries, deposit.ToCLIEntry(k.Pubkey, *k.Deposit))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list deposit data: %w", err)
	}
	if len(entries) == 0 {
		return fmt.Errorf("no selected key has deposit data: %w", store.ErrNotFound)
	}
	b, err := deposit.MarshalCLI(entries)
	if err != nil {
		return fmt.Errorf("encode deposit data: %w", err)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Disposition", `attachment; filename="`+deposit.CLIFileName(time.Now())+`"`)
	h.Set("Content-Length", strconv.Itoa(len(b)))
	if _, err := w.Write(b); err != nil {
		s.log.InfoContext(r.Context(), "http: write deposit data", "error", err)
	}
	return nil
}
