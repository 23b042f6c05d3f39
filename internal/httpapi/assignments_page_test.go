package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/net/html"

	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/store"
)

func TestPagingBounds(t *testing.T) {
	for _, tt := range []struct {
		p              paging
		n              int
		lo, hi, npages int
	}{
		{paging{1, 0}, 7, 0, 7, 1}, // size 0: everything
		{paging{1, 3}, 7, 0, 3, 3},
		{paging{2, 3}, 7, 3, 6, 3},
		{paging{3, 3}, 7, 6, 7, 3},
		{paging{4, 3}, 7, 7, 7, 3}, // past the end: empty
		{paging{1, 3}, 0, 0, 0, 1},
		{paging{1, 3}, 3, 0, 3, 1},
		{paging{0, 3}, 7, 0, 3, 3},                             // page 0 reads as 1
		{paging{maxPageNumber, maxPageSize}, 5, 5, 5, 1},       // no overflow
		{paging{2, defaultPageSize}, 250, 100, 200, 3},         //
		{paging{1, 1}, 1_000_000, 0, 1, 1_000_000},             //
		{paging{999_999, 1}, 1_000_000, 999_998, 999_999, 1e6}, //
	} {
		lo, hi := tt.p.bounds(tt.n)
		if lo != tt.lo || hi != tt.hi || tt.p.pages(tt.n) != tt.npages {
			t.Errorf("%+v of %d: [%d,%d) of %d pages, want [%d,%d) of %d", tt.p, tt.n, lo, hi, tt.p.pages(tt.n), tt.lo, tt.hi, tt.npages)
		}
	}
}

func TestParseAssignQueryPaging(t *testing.T) {
	for _, tt := range []struct {
		query      string
		keys, pods paging
		refresh    int
		wantErr    string
	}{
		{query: "", keys: paging{1, 100}, pods: paging{1, 100}},
		{query: "format=json", keys: paging{1, 0}, pods: paging{1, 100}},
		{query: "format=text", keys: paging{1, 0}, pods: paging{1, 100}},
		{query: "format=json&page=2", keys: paging{2, 100}, pods: paging{1, 100}},
		{query: "format=json&per_page=5", keys: paging{1, 5}, pods: paging{1, 100}},
		{query: "per_page=25&page=3&pods_page=2", keys: paging{3, 25}, pods: paging{2, 100}},
		{query: "per_page=1000", keys: paging{1, 1000}, pods: paging{1, 1000}},
		{query: "refresh=30", keys: paging{1, 100}, pods: paging{1, 100}, refresh: 30},
		{query: "refresh=0", keys: paging{1, 100}, pods: paging{1, 100}},
		{query: "refresh=off", keys: paging{1, 100}, pods: paging{1, 100}},
		{query: "per_page=0", wantErr: "per_page"},
		{query: "per_page=10001", wantErr: "per_page"},
		{query: "per_page=x", wantErr: "per_page"},
		{query: "page=0", wantErr: "page"},
		{query: "page=-1", wantErr: "page"},
		{query: "page=1e3", wantErr: "page"},
		{query: "pods_page=0", wantErr: "pods_page"},
		{query: "refresh=1", wantErr: "refresh"},
		{query: "refresh=3601", wantErr: "refresh"},
		{query: "refresh=soon", wantErr: "refresh"},
	} {
		q, err := parseAssignQuery(httptest.NewRequest("GET", "/assignments?"+tt.query, nil))
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: error %v, want one about %s", tt.query, err, tt.wantErr)
			}
			continue
		}
		if err != nil || q.keys != tt.keys || q.pods != tt.pods || q.refresh != tt.refresh {
			t.Errorf("%q: keys %+v pods %+v refresh %d (%v), want %+v %+v %d", tt.query, q.keys, q.pods, q.refresh, err, tt.keys, tt.pods, tt.refresh)
		}
	}
}

// The JSON listing keeps its shape; paged, it carries the total and
// RFC 8288 links, and its pages together are the whole listing.
func TestAssignmentsJSONPaging(t *testing.T) {
	h := pageHandler(t, pageKeys())
	decode := func(rec *httptest.ResponseRecorder) assignmentsJSON {
		t.Helper()
		var got assignmentsJSON
		dec := json.NewDecoder(rec.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("decode: %v", err)
		}
		return got
	}
	keysOf := func(got assignmentsJSON) []string {
		var out []string
		for _, p := range got.Pods {
			for _, k := range p.Keys {
				out = append(out, p.PodName+"="+k.Pubkey)
			}
		}
		return out
	}
	all := do(t, h, "GET", "/assignments?format=json", "")
	if all.Header().Get("Link") != "" || all.Header().Get("X-Total-Count") != "" {
		t.Errorf("unpaged listing has paging headers %v", all.Header())
	}
	whole := keysOf(decode(all))
	if len(whole) != 4 {
		t.Fatalf("whole listing %v", whole)
	}
	for _, tt := range []struct {
		query     string
		want      []string
		prev      string // page number of the prev link, "" for none
		next      string
		wantTotal string
	}{
		{"&per_page=3", whole[:3], "", "2", "4"},
		{"&per_page=3&page=2", whole[3:], "1", "", "4"},
		{"&per_page=3&page=3", nil, "2", "", "4"},
		{"&page=1", whole, "", "", "4"},
		{"&per_page=1&page=2&pod=validator-10", whole[3:4], "1", "", "2"},
	} {
		rec := do(t, h, "GET", "/assignments?format=json"+tt.query, "")
		if rec.Code != 200 {
			t.Fatalf("%s: %d %s", tt.query, rec.Code, rec.Body)
		}
		got := decode(rec)
		if !slices.Equal(keysOf(got), tt.want) {
			t.Errorf("%s: keys %v, want %v", tt.query, keysOf(got), tt.want)
		}
		if got.Counts["assigned"] != 3 {
			t.Errorf("%s: counts %v", tt.query, got.Counts)
		}
		if n := rec.Header().Get("X-Total-Count"); n != tt.wantTotal {
			t.Errorf("%s: X-Total-Count %q, want %s", tt.query, n, tt.wantTotal)
		}
		links := map[string]url.Values{}
		for _, l := range rec.Header().Values("Link") {
			ref, rel, ok := strings.Cut(l, ">; rel=")
			u, err := url.Parse(strings.TrimPrefix(ref, "<"))
			if !ok || err != nil {
				t.Fatalf("%s: Link %q", tt.query, l)
			}
			links[strings.Trim(rel, `"`)] = u.Query()
		}
		for rel, page := range map[string]string{"prev": tt.prev, "next": tt.next} {
			l, ok := links[rel]
			if (page != "") != ok || (ok && (l.Get("page") != page || l.Get("format") != "json")) {
				t.Errorf("%s: %s link %v, want page %q", tt.query, rel, l, page)
			}
		}
	}
	// The text representation pages the same way.
	rec := do(t, h, "GET", "/assignments?format=text&per_page=2&page=2", "")
	if got, want := rec.Body.String(), "validator-10="+hexKey(3)+"\n"; got != want || rec.Header().Get("X-Total-Count") != "3" {
		t.Errorf("text page 2: %q (total %s), want %q", got, rec.Header().Get("X-Total-Count"), want)
	}
}

func TestAssignmentsPodSummary(t *testing.T) {
	blocked := func() map[string]string { return map[string]string{"validator-2": "pod-deleted: <gone>"} }
	var h http.Handler = NewHandler(Config{Allocator: &fakeAllocator{}, Keys: &fakeLister{keys: pageKeys()}, Logger: quietLogger(t), ReleaseBlocked: blocked})
	for _, tt := range []struct {
		query string
		want  []pageRow
	}{
		{"", []pageRow{
			{"(no pod)", "1", "0", "pending-deposit 1"},
			{"validator-1", "1", "0", "cooling-down 1"},
			{"validator-2 (release-blocked: pod-deleted)", "2", "2", "assigned 2"},
			{"validator-9", "2", "0", "available 1 · retired 1"},
			{"validator-10", "2", "1", "pending-deposit 1 · assigned 1"},
		}},
		{"?state=assigned", []pageRow{
			{"validator-2 (release-blocked: pod-deleted)", "2", "2", "assigned 2"},
			{"validator-10", "1", "1", "assigned 1"},
		}},
		{"?pod=validator-1", []pageRow{
			{"validator-1", "1", "0", "cooling-down 1"},
			{"validator-10", "2", "1", "pending-deposit 1 · assigned 1"},
		}},
		// The summary covers every matching key, not only the shown page,
		// and pages on its own.
		{"?per_page=1", []pageRow{
			{"(no pod)", "1", "0", "pending-deposit 1"},
			{"validator-1", "1", "0", "cooling-down 1"},
			{"validator-2 (release-blocked: pod-deleted)", "2", "2", "assigned 2"},
			{"validator-9", "2", "0", "available 1 · retired 1"},
			{"validator-10", "2", "1", "pending-deposit 1 · assigned 1"},
		}},
		{"?pod=nobody", nil},
	} {
		doc, _, body := getPage(t, h, tt.query)
		if got := tableRows(doc, "pods"); fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("%s: summary\n%q\nwant\n%q", tt.query, got, tt.want)
		}
		if strings.Contains(body, "<gone>") {
			t.Errorf("%s: reason not escaped", tt.query)
		}
	}
	// More pods than a page: the summary has its own pager.
	var keys []store.Key
	for i := range 120 {
		keys = append(keys, store.Key{Pubkey: pk(0xbb, i), State: store.StateAssigned, Pod: fmt.Sprintf("p-%03d", i), Since: fixtureNow})
	}
	h = pageHandler(t, keys)
	for _, tt := range []struct {
		query       string
		first, last string
		rows        int
		next        bool
	}{
		{"", "p-000", "p-099", 100, true},
		{"?pods_page=2", "p-100", "p-119", 20, false},
	} {
		doc, _, _ := getPage(t, h, tt.query)
		got := tableRows(doc, "pods")
		if len(got) != tt.rows || got[0][0] != tt.first || got[len(got)-1][0] != tt.last {
			t.Errorf("%s: %d pods %q..%q, want %d %s..%s", tt.query, len(got), got[0][0], got[len(got)-1][0], tt.rows, tt.first, tt.last)
		}
		var next string
		for _, div := range findAll(doc, "div") {
			if attr(div, "id") != "pods-pager" {
				continue
			}
			for _, a := range findAll(div, "a") {
				if attr(a, "rel") == "next" {
					next = attr(a, "href")
				}
			}
		}
		if (next != "") != tt.next {
			t.Errorf("%s: pods next link %q, want one: %v", tt.query, next, tt.next)
		}
	}
}

func TestAssignmentsNetworkHeader(t *testing.T) {
	for _, tt := range []struct {
		name string
		net  Network
		want []string // dt=dd pairs
	}{
		{"none", Network{}, []string{"Network=not configured on this server"}},
		{"chain", Network{Name: "hoodi", GenesisForkVersion: "0x10000910", ChainID: "560048",
			DepositContract: "0x00000000219ab540356cBB839Cbe05303d7705Fa", Deposits: "chain", Confirmations: 2},
			[]string{"Network=hoodi", "Genesis fork version=0x10000910", "Chain ID=560048",
				"Deposit contract=0x00000000219ab540356cBB839Cbe05303d7705Fa", "Deposits=chain (2 confirmations)"}},
		{"export", Network{Name: "devnet", GenesisForkVersion: "0x10000038", Deposits: "export"},
			[]string{"Network=devnet", "Genesis fork version=0x10000038", "Chain ID=not set", "Deposit contract=not set", "Deposits=export"}},
		{"hostile", Network{Name: `<script>alert(1)</script>`, Deposits: "off"},
			[]string{"Network=<script>alert(1)</script>", "Genesis fork version=not set", "Chain ID=not set", "Deposit contract=not set", "Deposits=off"}},
	} {
		h := NewHandler(Config{Allocator: &fakeAllocator{}, Keys: &fakeLister{keys: pageKeys()}, Logger: quietLogger(t), Network: tt.net})
		doc, _, body := getPage(t, h, "")
		var got []string
		for _, div := range findAll(doc, "div") {
			dt, dd := findAll(div, "dt"), findAll(div, "dd")
			if len(dt) == 1 && len(dd) == 1 {
				got = append(got, textOf(dt[0])+"="+textOf(dd[0]))
			}
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s: header %q, want %q", tt.name, got, tt.want)
		}
		if len(findAll(doc, "script")) != 0 || strings.Contains(body, "<script>alert") {
			t.Errorf("%s: network name not escaped", tt.name)
		}
	}
}

// blockChain answers DepositStatuses from a table (or fails).
type blockChain struct {
	blocks map[store.Pubkey]uint64 // on chain at block
	err    error
}

func (f *blockChain) DepositStatuses(_ context.Context, keys []store.Key) ([]deposit.OnChain, error) {
	if f.err != nil {
		return nil, f.err
	}
	out := make([]deposit.OnChain, len(keys))
	for i, k := range keys {
		out[i].Status = deposit.StatusNotOnChain
		if b, ok := f.blocks[k.Pubkey]; ok {
			out[i] = deposit.OnChain{Status: deposit.StatusOnChain, Block: b}
		}
	}
	return out, nil
}

func TestAssignmentsOriginAndDeposit(t *testing.T) {
	t0 := fixtureNow
	var hash [32]byte
	for i := range hash {
		hash[i] = byte(i)
	}
	hashHex := fmt.Sprintf("0x%x", hash)
	tx := func() *store.DepositTx {
		return &store.DepositTx{Nonce: 3, Hash: hash, Raw: []byte("raw signed tx 5ec2e701"), RecordedAt: t0}
	}
	keys := []store.Key{
		{Pubkey: pk(0xaa, 1), State: store.StateAssigned, Pod: "p", Origin: store.OriginDerived, DerivationIndex: 7, HasDerivationIndex: true, Since: t0},
		{Pubkey: pk(0xaa, 2), State: store.StateAvailable, Origin: store.OriginRandom, Since: t0},
		{Pubkey: pk(0xaa, 3), State: store.StateAvailable, Origin: store.OriginImported, Since: t0},
		{Pubkey: pk(0xaa, 4), State: store.StateAvailable, Origin: store.OriginImported, DerivationIndex: 12, HasDerivationIndex: true, Since: t0},
		{Pubkey: pk(0xaa, 5), State: store.StatePendingDeposit, Pod: "p", Origin: store.OriginRandom, Since: t0},                  // not sent
		{Pubkey: pk(0xaa, 6), State: store.StatePendingDeposit, Pod: "p", Origin: store.OriginRandom, Since: t0, DepositTx: tx()}, // sent, not in a block
		{Pubkey: pk(0xaa, 7), State: store.StatePendingDeposit, Pod: "p", Origin: store.OriginRandom, Since: t0, DepositTx: tx()}, // in block 99
		{Pubkey: pk(0xaa, 8), State: store.StateDepositFailed, LastPod: "p", Origin: store.OriginRandom, Since: t0, DepositTx: tx(), RetiredReason: "reverted"},
		{Pubkey: pk(0xaa, 9), State: store.StateStillSigning, LastPod: "p", Origin: store.OriginRandom, Since: t0, RetiredReason: "signed at slot 9 <after release>"},
		{Pubkey: pk(0xaa, 10), State: store.StateExiting, LastPod: "p", Origin: store.OriginRandom, Since: t0, RetiredReason: "operator asked"},
	}
	lister := &withDeposits{fakeLister: fakeLister{keys: keys}}
	for _, tt := range []struct {
		name  string
		chain DepositStatuses
		want  map[int][2]string // key -> origin cell, deposit cell
	}{
		{"no chain view", nil, map[int][2]string{
			1: {"derived m/12381/3600/7/0/0", ""},
			2: {"minted random", ""},
			3: {"imported", ""},
			4: {"imported m/12381/3600/12/0/0", ""},
			5: {"minted random", "no transaction sent yet"},
			6: {"minted random", hashHex + " block unknown sent 2025-03-14 09:26:53"},
			7: {"minted random", hashHex + " block unknown sent 2025-03-14 09:26:53"},
			8: {"minted random", hashHex + " block unknown sent 2025-03-14 09:26:53"},
		}},
		{"chain view", &blockChain{blocks: map[store.Pubkey]uint64{pk(0xaa, 7): 99}}, map[int][2]string{
			6: {"minted random", hashHex + " not in a block yet sent 2025-03-14 09:26:53"},
			7: {"minted random", hashHex + " block 99, waiting for confirmations sent 2025-03-14 09:26:53"},
			8: {"minted random", hashHex + " block unknown sent 2025-03-14 09:26:53"}, // only pending keys are looked up
		}},
		{"chain view fails", &blockChain{err: errors.New("index down")}, map[int][2]string{
			6: {"minted random", hashHex + " block unknown sent 2025-03-14 09:26:53"},
		}},
	} {
		h := NewHandler(Config{Allocator: &fakeAllocator{}, Keys: lister, Logger: quietLogger(t), Chain: tt.chain})
		_, rows, body := getPage(t, h, "?sort=pubkey")
		if len(rows) != len(keys) {
			t.Fatalf("%s: %d rows", tt.name, len(rows))
		}
		for n, want := range tt.want {
			r := rows[n-1]
			if r[1] != hexKey(n) || r[4] != want[0] || r[5] != want[1] {
				t.Errorf("%s: key %d: origin %q deposit %q, want %q %q", tt.name, n, r[4], r[5], want[0], want[1])
			}
		}
		for n, reason := range map[int]string{8: "reverted", 9: "signed at slot 9 <after release>", 10: "operator asked"} {
			if !strings.HasSuffix(rows[n-1][2], " "+reason) {
				t.Errorf("%s: key %d state %q, want its reason %q", tt.name, n, rows[n-1][2], reason)
			}
		}
		if strings.Contains(body, "<after") || strings.Contains(body, "raw signed tx") || strings.Contains(body, "<a href=\"http") {
			t.Errorf("%s: the page shows an unescaped reason, the raw transaction or a link", tt.name)
		}
	}
}

// withDeposits is a fakeLister that hands out DepositTx only when asked
// (like a store), so the test sees the page ask for them.
type withDeposits struct{ fakeLister }

func (w *withDeposits) ListKeys(ctx context.Context, opts store.ListOptions, fn func(store.Key) error) error {
	return w.fakeLister.ListKeys(ctx, opts, func(k store.Key) error {
		if !opts.WithDeposit {
			k.DepositTx = nil
		}
		return fn(k)
	})
}

func TestAssignmentsRefresh(t *testing.T) {
	h := pageHandler(t, pageKeys())
	for _, tt := range []struct {
		query, meta string
		code        int
	}{
		{"", "", 200},
		{"?refresh=off", "", 200},
		{"?refresh=30", "30", 200},
		{"?refresh=5&pod=validator-2", "5", 200},
		{"?refresh=4", "", 400},
		{"?refresh=abc", "", 400},
	} {
		rec := do(t, h, "GET", "/assignments"+tt.query, "")
		if rec.Code != tt.code {
			t.Errorf("%s: status %d, want %d", tt.query, rec.Code, tt.code)
			continue
		}
		if tt.code != 200 {
			continue
		}
		doc, _ := parsePage(t, rec.Body.String())
		meta := ""
		for _, m := range findAll(doc, "meta") {
			if attr(m, "http-equiv") == "refresh" {
				meta = attr(m, "content")
			}
		}
		if meta != tt.meta {
			t.Errorf("%s: refresh %q, want %q", tt.query, meta, tt.meta)
		}
		// The control shows the interval; links keep it; "stop" drops it.
		for _, sel := range findAll(doc, "select") {
			if attr(sel, "name") != "refresh" {
				continue
			}
			for _, o := range findAll(sel, "option") {
				if on := hasAttr(o, "selected"); on != (attr(o, "value") == cmpOrZero(tt.meta)) {
					t.Errorf("%s: option %s selected %v", tt.query, attr(o, "value"), on)
				}
			}
		}
		for _, a := range findAll(doc, "a") {
			href := attr(a, "href")
			u, _ := url.Parse(href)
			switch {
			case textOf(a) == "stop":
				if tt.meta == "" || u.Query().Has("refresh") {
					t.Errorf("%s: stop link %q", tt.query, href)
				}
			case strings.Contains(href, "sort="), attr(a, "rel") != "":
				if u.Query().Get("refresh") != strings.TrimPrefix(tt.meta, "0") {
					t.Errorf("%s: link %q does not keep the refresh", tt.query, href)
				}
			}
		}
	}
}

// hasAttr reports whether n has the attribute (e.g. a boolean one).
func hasAttr(n *html.Node, name string) bool {
	return slices.ContainsFunc(n.Attr, func(a html.Attribute) bool { return a.Key == name })
}

func cmpOrZero(s string) string {
	if s == "" {
		return "0"
	}
	return s
}

func TestAssignmentsPagerLinks(t *testing.T) {
	var keys []store.Key
	for i := range 7 {
		keys = append(keys, store.Key{Pubkey: pk(0xaa, i), State: store.StateAssigned, Pod: "validator-" + fmt.Sprint(i%2), Since: fixtureNow})
	}
	h := pageHandler(t, keys)
	for _, tt := range []struct {
		query      string
		text       string
		prev, next string // the page parameter of the links; "-" none
	}{
		{"?per_page=3&pod=val&state=assigned", "1–3 of 7", "-", "2"},
		{"?per_page=3&page=2&pod=val&state=assigned", "4–6 of 7", "", "3"},
		{"?per_page=3&page=3&pod=val&state=assigned", "7–7 of 7", "2", "-"},
		{"?per_page=3&page=9&pod=val&state=assigned", "7–7 of 7", "3", "-"},
		{"?per_page=3&pod=nobody", "none", "-", "-"},
	} {
		doc, _, _ := getPage(t, h, tt.query)
		var pagers []string
		links := map[string]string{}
		for _, nav := range findAll(doc, "nav") {
			pagers = append(pagers, textOf(nav))
			for _, a := range findAll(nav, "a") {
				u, err := url.Parse(attr(a, "href"))
				if err != nil {
					t.Fatal(err)
				}
				q := u.Query()
				if q.Get("per_page") != "3" || (q.Get("pod") != "val" && q.Get("pod") != "nobody") || (q.Get("pod") == "val" && q.Get("state") != "assigned") {
					t.Errorf("%s: %s link %q drops the query", tt.query, attr(a, "rel"), attr(a, "href"))
				}
				links[attr(a, "rel")] = q.Get("page")
			}
		}
		if len(pagers) != 2 || !strings.Contains(pagers[0], tt.text) || pagers[0] != pagers[1] {
			t.Errorf("%s: pagers %q, want %q above and below", tt.query, pagers, tt.text)
		}
		for rel, want := range map[string]string{"prev": tt.prev, "next": tt.next} {
			got, ok := links[rel]
			if want == "-" && ok || want != "-" && (!ok || got != want) {
				t.Errorf("%s: %s link page %q (%v), want %q", tt.query, rel, got, ok, want)
			}
		}
	}
}

// countingLister marks when a ListKeys walk is running, the way a store
// holds a read transaction (or connection) while it calls fn.
type countingLister struct {
	fakeLister
	inWalk atomic.Bool
	walks  atomic.Int32
}

func (c *countingLister) ListKeys(ctx context.Context, opts store.ListOptions, fn func(store.Key) error) error {
	c.inWalk.Store(true)
	c.walks.Add(1)
	defer c.inWalk.Store(false)
	return c.fakeLister.ListKeys(ctx, opts, fn)
}

// walkCheckWriter fails a write made while the lister walks.
type walkCheckWriter struct {
	*httptest.ResponseRecorder
	l      *countingLister
	during int
}

func (w *walkCheckWriter) Write(b []byte) (int, error) {
	if w.l.inWalk.Load() {
		w.during++
	}
	return w.ResponseRecorder.Write(b)
}

// No representation writes to the client while the store is being read,
// and the store is read in pages (store.ListPages), not in one walk.
func TestAssignmentsNoWriteDuringStoreRead(t *testing.T) {
	var keys []store.Key
	for i := range 2500 {
		keys = append(keys, store.Key{Pubkey: pk(0xab, i), State: store.StateAssigned, Pod: fmt.Sprintf("validator-%d", i%40), Since: fixtureNow})
	}
	for _, q := range []string{"", "?format=json", "?format=text", "?per_page=1000&page=2", "?format=json&per_page=10"} {
		l := &countingLister{fakeLister: fakeLister{keys: keys}}
		h := NewHandler(Config{Allocator: &fakeAllocator{}, Keys: l, Logger: quietLogger(t)})
		w := &walkCheckWriter{ResponseRecorder: httptest.NewRecorder(), l: l}
		h.ServeHTTP(w, httptest.NewRequest("GET", "/assignments"+q, nil))
		if w.Code != http.StatusOK || w.Body.Len() == 0 {
			t.Fatalf("%s: %d", q, w.Code)
		}
		if w.during != 0 {
			t.Errorf("%s: %d writes while the store was read", q, w.during)
		}
		if n := l.walks.Load(); n < 3 {
			t.Errorf("%s: the store was read in %d walks, want pages of %d", q, n, store.DefaultPage)
		}
	}
}
