package httpapi

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/store"
)

// depositData serves the stored deposits (optionally only keys in the
// given states) as a staking-deposit-cli deposit_data-<unix>.json download:
// by default only those a deposit tool may be fed without paying twice
// (deposit.SelectForExport), all of them with ?all=true. What it left out
// is said in the X-Pkmanager-Omitted header.
func (s *server) depositData(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	states, err := parseStates(q["state"])
	if err != nil {
		return err
	}
	all := false
	if v := q.Get("all"); v != "" {
		if all, err = strconv.ParseBool(v); err != nil {
			return fmt.Errorf("%w: all=%q is not true or false", allocator.ErrInvalidRequest, truncate(v, 16))
		}
	}
	var keys []store.Key
	err = s.cfg.Keys.ListKeys(r.Context(), store.ListOptions{States: states, WithDeposit: true}, func(k store.Key) error {
		if k.Deposit != nil {
			keys = append(keys, k)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list deposit data: %w", err)
	}
	statuses := make([]deposit.OnChain, len(keys))
	if s.cfg.Chain != nil {
		if statuses, err = s.cfg.Chain.DepositStatuses(r.Context(), keys); err != nil {
			return err
		}
	}
	cands := make([]deposit.ExportCandidate, len(keys))
	for i, k := range keys {
		cands[i] = deposit.ExportCandidate{Entry: deposit.ToCLIEntry(k.Pubkey, *k.Deposit), State: k.State, Status: statuses[i].Status}
	}
	entries, omitted, err := deposit.SelectForExport(cands, all)
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		why := "no selected key has deposit data"
		if omitted.Total() > 0 {
			why = "no deposit to export: " + omitted.String()
		}
		return fmt.Errorf("%s: %w", why, store.ErrNotFound)
	}
	b, err := deposit.MarshalCLI(entries)
	if err != nil {
		return fmt.Errorf("encode deposit data: %w", err)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Disposition", `attachment; filename="`+deposit.CLIFileName(time.Now())+`"`)
	h.Set("Content-Length", strconv.Itoa(len(b)))
	if omitted.Total() > 0 {
		h.Set("X-Pkmanager-Omitted", omitted.String())
	}
	if _, err := w.Write(b); err != nil {
		s.log.InfoContext(r.Context(), "http: write deposit data", "error", err)
	}
	return nil
}
