package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/store"
)

// Paging, the per-pod summary, auto-refresh and the chain view of
// /assignments.

// Page sizes of /assignments (?per_page=).
const (
	defaultPageSize = 100
	maxPageSize     = 10000
	maxPageNumber   = 1 << 30
)

// Auto-refresh intervals (?refresh=, seconds): off, or minRefresh to
// maxRefresh.
const (
	minRefresh = 5
	maxRefresh = 3600
)

// refreshChoices are the intervals the page's control offers.
var refreshChoices = []int{10, 30, 60, 300}

// pageSizeChoices are the page sizes the page's control offers.
var pageSizeChoices = []int{25, 100, 500, 1000}

// paging is one page of a listing: number (from 1) and size; size 0 is
// the whole listing on one page.
type paging struct{ page, size int }

// bounds returns the page's rows [lo, hi) of n rows; past the last page
// it is empty.
func (p paging) bounds(n int) (lo, hi int) {
	if p.size <= 0 {
		return 0, n
	}
	lo = min((max(p.page, 1)-1)*p.size, n)
	return lo, min(lo+p.size, n)
}

// pages returns the number of pages of n rows (at least 1).
func (p paging) pages(n int) int {
	if p.size <= 0 || n == 0 {
		return 1
	}
	return (n + p.size - 1) / p.size
}

// parsePaging reads page, per_page, pods_page and refresh. The HTML page
// is paged by default; JSON and text only when page or per_page is given.
func (q *assignQuery) parsePaging(v url.Values) error {
	size := 0
	if q.format == formatHTML || v.Has("page") {
		size = defaultPageSize
	}
	if s := v.Get("per_page"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxPageSize {
			return invalidf("per_page %q: want 1 to %d", truncate(s, 40), maxPageSize)
		}
		size = n
	}
	page, err := pageNumber(v, "page")
	if err != nil {
		return err
	}
	podPage, err := pageNumber(v, "pods_page")
	if err != nil {
		return err
	}
	q.keys = paging{page: page, size: size}
	q.pods = paging{page: podPage, size: max(size, defaultPageSize)}
	switch s := v.Get("refresh"); s {
	case "", "0", "off":
	default:
		n, err := strconv.Atoi(s)
		if err != nil || n < minRefresh || n > maxRefresh {
			return invalidf("refresh %q: want off or %d to %d seconds", truncate(s, 40), minRefresh, maxRefresh)
		}
		q.refresh = n
	}
	return nil
}

// pageNumber reads a page number parameter (default 1).
func pageNumber(v url.Values, name string) (int, error) {
	s := v.Get(name)
	if s == "" {
		return 1, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxPageNumber {
		return 0, invalidf("%s %q: want a page number from 1", name, truncate(s, 40))
	}
	return n, nil
}

// setPagingHeaders tells JSON and text clients of a paged listing how
// many keys match and where the neighbouring pages are (RFC 8288 Link,
// relative to the request).
func setPagingHeaders(h http.Header, r *http.Request, q *assignQuery, total int) {
	if q.keys.size <= 0 {
		return
	}
	h.Set("X-Total-Count", strconv.Itoa(total))
	link := func(page int, rel string) {
		v := r.URL.Query()
		v.Set("page", strconv.Itoa(page))
		v.Set("per_page", strconv.Itoa(q.keys.size))
		h.Add("Link", "<?"+v.Encode()+`>; rel="`+rel+`"`)
	}
	if q.keys.page > 1 {
		link(min(q.keys.page-1, q.keys.pages(total)), "prev")
	}
	if q.keys.page < q.keys.pages(total) {
		link(q.keys.page+1, "next")
	}
}

// podSummary is one pod of the per-pod summary: how many of the matching
// keys are listed under it, by state (store.States order).
type podSummary struct {
	pod     int32
	keys    int
	byState []int
}

// summarizePods returns the page p of the per-pod summary of the rows, pods
// in natural name order, and the number of pods in all.
func summarizePods(data *assignData, p paging) ([]podSummary, int) {
	per := make([]podSummary, len(data.pods))
	for i := range data.rows {
		row := &data.rows[i]
		ps := &per[row.pod]
		if ps.byState == nil {
			ps.pod, ps.byState = row.pod, make([]int, len(store.States))
		}
		ps.keys++
		if j := slices.Index(store.States, row.state); j >= 0 {
			ps.byState[j]++
		}
	}
	per = slices.DeleteFunc(per, func(ps podSummary) bool { return ps.keys == 0 })
	slices.SortFunc(per, func(a, b podSummary) int { return naturalCompare(data.pods[a.pod].name, data.pods[b.pod].name) })
	lo, hi := p.bounds(len(per))
	return per[lo:hi], len(per)
}

// addChainBlocks looks up, for the shown pending-deposit keys whose
// deposit this server sent, whether the chain holds the deposit yet (the
// block it is in while the key waits for its confirmations). Without a
// view of the chain, or when the lookup fails, the rows say nothing about
// the chain; the page is served anyway.
func (s *server) addChainBlocks(ctx context.Context, data *assignData) {
	if s.cfg.Chain == nil {
		return
	}
	var keys []store.Key
	var rows []*assignRow
	for i := range data.rows {
		row := &data.rows[i]
		if row.state == store.StatePendingDeposit && row.deposit != nil && !row.deposit.chainKnown {
			keys = append(keys, store.Key{Pubkey: row.pubkey, DepositTx: &store.DepositTx{Hash: row.deposit.hash}})
			rows = append(rows, row)
		}
	}
	if len(keys) == 0 {
		return
	}
	got, err := s.cfg.Chain.DepositStatuses(ctx, keys)
	if err != nil || len(got) != len(keys) {
		s.log.DebugContext(ctx, "http: assignments: deposit blocks unknown", slog.Any("error", err))
		return
	}
	for i, oc := range got {
		switch oc.Status {
		case deposit.StatusOnChain:
			rows[i].deposit.block, rows[i].deposit.chainKnown = oc.Block, true
		case deposit.StatusNotOnChain:
			rows[i].deposit.chainKnown = true
		}
	}
}

// Network describes the chain the server's keys are for, for the header
// of /assignments. Empty fields are shown as not set.
type Network struct {
	// Name is the deposit network (--network) and GenesisForkVersion its
	// fork version, as 0x-prefixed hex.
	Name               string
	GenesisForkVersion string
	// ChainID and DepositContract are the execution chain's, when the
	// server has or expects one.
	ChainID         string
	DepositContract string
	// Deposits is the deposit mode (chain, export, off) and Confirmations
	// the blocks a deposit needs in chain mode.
	Deposits      string
	Confirmations uint64
}

// appendDerivationPath appends the EIP-2334 signing key path of index i.
func appendDerivationPath(b []byte, i uint32) []byte {
	b = append(b, "m/12381/3600/"...)
	b = strconv.AppendUint(b, uint64(i), 10)
	return append(b, "/0/0"...)
}
