package httpapi

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/hex"
	"fmt"
	"html/template"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

// The HTML representation of /assignments.

// pageData feeds the HTML templates around the table rows.
type pageData struct {
	Generated string
	// Refresh is the auto-refresh interval in seconds (0: off).
	Refresh     int
	RefreshOff  string // the page's address without auto-refresh
	Network     []netItem
	Counts      []stateCount
	Total       int
	Pod         string
	States      []stateOption
	Sort        string
	Order       string
	Columns     []column
	PerPage     []sizeOption
	RefreshOpts []sizeOption
	// Statuses are the validator status filter's options (nil without
	// validator statuses).
	Statuses  []stateOption
	TextHref  string
	JSONHref  string
	ResetHref string
	FirstHref string // this listing's first page
	Rows      int
	Keys      pager
	Summary   []summaryRow
	PodPager  pager
}

type stateCount struct {
	State string
	N     int
	Href  string // the page filtered to the state
}

type stateOption struct {
	Value   string
	Checked bool
}

type sizeOption struct {
	Value    int
	Label    string
	Selected bool
}

type column struct {
	Label    string
	Href     string
	Arrow    string
	AriaSort string
}

// netItem is one fact of the network header.
type netItem struct {
	Label, Value string
	Mono         bool
}

// pager is the navigation of one paged listing.
type pager struct {
	From, To, Total int
	Page, Pages     int
	PrevHref        string
	NextHref        string
}

// summaryRow is one pod of the per-pod summary.
type summaryRow struct {
	Pod      string
	Href     string // the page filtered to the pod
	Blocked  string // release-blocked reason
	Rule     string // its rule
	Keys     int
	Assigned int
	States   []stateCount // the states with keys, in lifecycle order
}

// pageLinks builds the page's links from its query.
type pageLinks struct {
	q    *assignQuery
	base url.Values // the filters
}

func newPageLinks(q *assignQuery) pageLinks {
	base := url.Values{}
	if q.rawPod != "" {
		base.Set("pod", q.rawPod)
	}
	for _, st := range q.states {
		base.Add("state", string(st))
	}
	for _, st := range q.statuses {
		base.Add("status", st)
	}
	return pageLinks{q: q, base: base}
}

// href returns the page with the filters, the sort, the page size and the
// refresh interval, then edit's changes; "" values are removed.
func (l pageLinks) href(edit ...string) string {
	v := cloneValues(l.base)
	if l.q.sort != sortPod {
		v.Set("sort", l.q.sort)
	}
	if l.q.desc {
		v.Set("order", "desc")
	}
	if l.q.keys.size != defaultPageSize {
		v.Set("per_page", strconv.Itoa(l.q.keys.size))
	}
	if l.q.refresh > 0 {
		v.Set("refresh", strconv.Itoa(l.q.refresh))
	}
	for i := 0; i+1 < len(edit); i += 2 {
		if edit[i+1] == "" {
			v.Del(edit[i])
		} else {
			v.Set(edit[i], edit[i+1])
		}
	}
	if len(v) == 0 {
		return "assignments" // relative, like the root's redirect
	}
	return "?" + v.Encode()
}

// pageNav returns the navigation of page p of total rows; param names the
// page number parameter, keep is the other listing's page to keep.
func pageNav(l pageLinks, p paging, total int, param, keepParam string, keep int) pager {
	lo, hi := p.bounds(total)
	nav := pager{From: lo + 1, To: hi, Total: total, Page: p.page, Pages: p.pages(total)}
	if hi == lo {
		nav.From = lo
	}
	keepVal := ""
	if keep > 1 {
		keepVal = strconv.Itoa(keep)
	}
	if p.page > 1 {
		prev := min(p.page-1, nav.Pages)
		prevVal := ""
		if prev > 1 {
			prevVal = strconv.Itoa(prev)
		}
		nav.PrevHref = l.href(param, prevVal, keepParam, keepVal)
	}
	if p.page < nav.Pages {
		nav.NextHref = l.href(param, strconv.Itoa(p.page+1), keepParam, keepVal)
	}
	return nav
}

// networkItems is the network header's facts.
func networkItems(n Network) []netItem {
	if n == (Network{}) {
		return []netItem{{Label: "Network", Value: "not configured on this server"}}
	}
	notSet := func(s string) string { return cmp.Or(s, "not set") }
	deposits := notSet(n.Deposits)
	if n.Deposits == "chain" && n.Confirmations > 0 {
		deposits += " (" + strconv.FormatUint(n.Confirmations, 10) + " confirmation"
		if n.Confirmations != 1 {
			deposits += "s"
		}
		deposits += ")"
	}
	return []netItem{
		{Label: "Network", Value: notSet(n.Name)},
		{Label: "Genesis fork version", Value: notSet(n.GenesisForkVersion), Mono: n.GenesisForkVersion != ""},
		{Label: "Chain ID", Value: notSet(n.ChainID), Mono: n.ChainID != ""},
		{Label: "Deposit contract", Value: notSet(n.DepositContract), Mono: n.DepositContract != ""},
		{Label: "Deposits", Value: deposits},
	}
}

// writeAssignmentsHTML writes the HTML page: html/template for the parts
// around the table, appendHTML for the rows.
func writeAssignmentsHTML(bw *bufio.Writer, q *assignQuery, data *assignData, network Network, now time.Time) error {
	links := newPageLinks(q)
	pd := pageData{
		Generated: now.UTC().Format("2006-01-02 15:04:05 UTC"),
		Refresh:   q.refresh,
		Network:   networkItems(network),
		Pod:       q.rawPod,
		Sort:      q.sort,
		Order:     "asc",
		Rows:      len(data.rows),
		ResetHref: "/assignments",
	}
	if q.refresh > 0 {
		pd.RefreshOff = links.href("refresh", "", "page", pageParam(q.keys.page), "pods_page", pageParam(q.pods.page))
	}
	if q.desc {
		pd.Order = "desc"
	}
	for _, st := range store.States {
		pd.Counts = append(pd.Counts, stateCount{State: string(st), N: data.counts[st], Href: "?" + url.Values{"state": {string(st)}}.Encode()})
		pd.Total += data.counts[st]
		pd.States = append(pd.States, stateOption{Value: string(st), Checked: slices.Contains(q.states, st)})
	}
	for _, n := range pageSizeChoices {
		pd.PerPage = append(pd.PerPage, sizeOption{Value: n, Label: strconv.Itoa(n), Selected: n == q.keys.size})
	}
	if !slices.Contains(pageSizeChoices, q.keys.size) {
		pd.PerPage = append(pd.PerPage, sizeOption{Value: q.keys.size, Label: strconv.Itoa(q.keys.size), Selected: true})
	}
	pd.RefreshOpts = append(pd.RefreshOpts, sizeOption{Value: 0, Label: "off", Selected: q.refresh == 0})
	for _, n := range refreshChoices {
		pd.RefreshOpts = append(pd.RefreshOpts, sizeOption{Value: n, Label: strconv.Itoa(n) + " s", Selected: n == q.refresh})
	}
	if q.refresh > 0 && !slices.Contains(refreshChoices, q.refresh) {
		pd.RefreshOpts = append(pd.RefreshOpts, sizeOption{Value: q.refresh, Label: strconv.Itoa(q.refresh) + " s", Selected: true})
	}
	if data.withStatus {
		for _, st := range append(slices.Clone(store.ValidatorStatuses), statusUnknown) {
			pd.Statuses = append(pd.Statuses, stateOption{Value: st, Checked: slices.Contains(q.statuses, st)})
		}
	}
	for _, c := range []struct{ key, label string }{
		{sortPod, "Pod"}, {sortPubkey, "Public key"}, {sortState, "State"}, {sortSince, "Since (UTC)"},
	} {
		// A new sort starts at the first page, ascending unless it is
		// the current one's toggle.
		order := ""
		col := column{Label: c.label}
		if q.sort == c.key {
			if q.desc {
				col.Arrow, col.AriaSort = " ▼", "descending"
			} else {
				col.Arrow, col.AriaSort = " ▲", "ascending"
				order = "desc"
			}
		}
		sortVal := c.key
		col.Href = links.href("sort", sortVal, "order", order, "page", "")
		pd.Columns = append(pd.Columns, col)
	}
	pd.Columns = append(pd.Columns, column{Label: "Origin"}, column{Label: "Deposit"})
	if data.withStatus {
		pd.Columns = append(pd.Columns, column{Label: "Validator (beacon node)"})
	}
	// The text and JSON links give the whole listing, without paging.
	formatHref := func(f string) string {
		return links.href("format", f, "per_page", "", "refresh", "")
	}
	pd.TextHref, pd.JSONHref = formatHref("text"), formatHref("json")
	pd.FirstHref = links.href("page", "", "pods_page", pageParam(q.pods.page))
	pd.Keys = pageNav(links, q.keys, data.total, "page", "pods_page", q.pods.page)
	pd.PodPager = pageNav(links, q.pods, data.podTotal, "pods_page", "page", q.keys.page)
	for _, ps := range data.summary {
		p := data.pods[ps.pod]
		sr := summaryRow{Pod: p.name, Keys: ps.keys, Blocked: p.blocked}
		if p.name != noPod {
			sr.Href = "?" + url.Values{"pod": {p.name}}.Encode()
		}
		sr.Rule, _, _ = strings.Cut(p.blocked, ": ")
		for j, n := range ps.byState {
			if n > 0 {
				sr.States = append(sr.States, stateCount{State: string(store.States[j]), N: n})
			}
			if store.States[j] == store.StateAssigned {
				sr.Assigned = n
			}
		}
		pd.Summary = append(pd.Summary, sr)
	}

	if err := pageTemplate.ExecuteTemplate(bw, "head", pd); err != nil {
		return fmt.Errorf("render page head: %w", err)
	}
	// Each pod name is escaped once, not once per key.
	cells := make([][]byte, len(data.pods))
	for i, p := range data.pods {
		cells[i] = appendBlocked(appendHTML(nil, p.name), p.blocked)
	}
	for i := range data.rows {
		if err := writeRowHTML(bw, &data.rows[i], cells[data.rows[i].pod], data.withStatus); err != nil {
			return err
		}
	}
	if err := pageTemplate.ExecuteTemplate(bw, "foot", pd); err != nil {
		return fmt.Errorf("render page foot: %w", err)
	}
	return nil
}

// pageParam is a page number as a query value ("" for the first page).
func pageParam(n int) string {
	if n <= 1 {
		return ""
	}
	return strconv.Itoa(n)
}

// writeRowHTML writes one table row; pod is the escaped pod name.
func writeRowHTML(bw *bufio.Writer, row *assignRow, pod []byte, withStatus bool) error {
	b := bw.AvailableBuffer()
	class := "other"
	if row.state.Valid() {
		class = string(row.state) // a fixed identifier, safe in an attribute
	}
	b = append(b, `<tr class="`...)
	b = append(b, class...)
	b = append(b, `"><td class="pod">`...)
	b = append(b, pod...)
	if !bytes.Equal(pod, []byte(noPod)) {
		switch row.state {
		case store.StateAssigned:
		case store.StatePendingDeposit, store.StateDepositFailed:
			b = append(b, ` <small>(intended)</small>`...)
		default:
			b = append(b, ` <small>(last holder)</small>`...)
		}
	}
	b = append(b, `</td><td class="pk">`...)
	var hexBuf [2 + 2*store.PubkeyLength]byte
	b = appendHexCode(b, appendPubkey(hexBuf[:0], &row.pubkey))
	b = append(b, `</td><td class="state">`...)
	b = appendHTML(b, string(row.state))
	if row.state == store.StateCoolingDown && !row.until.IsZero() {
		b = append(b, ` <small>until `...)
		b = appendTimestamp(b, row.until)
		b = append(b, `</small>`...)
	}
	if row.reason != "" {
		b = append(b, ` <small class="reason">`...)
		b = appendHTML(b, row.reason)
		b = append(b, `</small>`...)
	}
	b = append(b, `</td><td class="since">`...)
	if !row.since.IsZero() {
		b = appendTimestamp(b, row.since)
	}
	b = append(b, `</td><td class="origin">`...)
	b = appendOrigin(b, row)
	b = append(b, `</td><td class="deposit">`...)
	b = appendDeposit(b, row)
	if withStatus {
		b = appendStatusCell(b, row)
	}
	b = append(b, "</td></tr>\n"...)
	_, err := bw.Write(b)
	return err
}

// appendHexCode appends a 0x-hex value (a public key, a transaction hash)
// that never wraps: its head shortened with an ellipsis when narrow, its
// last 8 digits always shown, the whole value in the title and in the
// text (copying the cell copies all of it). h is hex: nothing to escape.
func appendHexCode(b, h []byte) []byte {
	cut := max(len(h)-8, 0)
	b = append(b, `<code class="hex" title="`...)
	b = append(b, h...)
	b = append(b, `"><span class="h">`...)
	b = append(b, h[:cut]...)
	b = append(b, `</span><span class="t">`...)
	b = append(b, h[cut:]...)
	return append(b, `</span></code>`...)
}

// appendOrigin appends where the key came from and its derivation path.
func appendOrigin(b []byte, row *assignRow) []byte {
	switch row.origin {
	case store.OriginRandom:
		b = append(b, `minted <small>random</small>`...)
	case store.OriginDerived:
		b = append(b, `derived`...)
	case store.OriginImported:
		b = append(b, `imported`...)
	default:
		b = appendHTML(b, string(row.origin))
	}
	if row.hasPath {
		b = append(b, ` <small class="path">`...)
		b = appendDerivationPath(b, row.path)
		b = append(b, `</small>`...)
	}
	return b
}

// appendDeposit appends the deposit of a pending-deposit or
// deposit-failed key: its transaction's hash (plain text, no link), when
// it was sent and the block holding it.
func appendDeposit(b []byte, row *assignRow) []byte {
	d := row.deposit
	if d == nil {
		if row.state == store.StatePendingDeposit {
			b = append(b, `<small>no transaction sent yet</small>`...)
		}
		return b
	}
	var h [2 + 64]byte
	copy(h[:], "0x")
	hex.Encode(h[2:], d.hash[:])
	b = appendHexCode(b, h[:])
	switch {
	case d.block > 0:
		b = append(b, ` <small class="block">block `...)
		b = strconv.AppendUint(b, d.block, 10)
		if row.state == store.StatePendingDeposit {
			b = append(b, `, waiting for confirmations`...)
		}
		b = append(b, `</small>`...)
	case d.chainKnown:
		b = append(b, ` <small class="block">not in a block yet</small>`...)
	default:
		b = append(b, ` <small class="block">block unknown</small>`...)
	}
	if !d.sent.IsZero() {
		b = append(b, ` <small>sent `...)
		b = appendTimestamp(b, d.sent)
		b = append(b, `</small>`...)
	}
	return b
}

func cloneValues(v url.Values) url.Values {
	out := make(url.Values, len(v)+2)
	for k, vs := range v {
		out[k] = slices.Clone(vs)
	}
	return out
}

// pageTemplate renders the parts of the page around the rows: "head" (up
// to the opening tbody) and "foot".
var pageTemplate = template.Must(template.New("page").Parse(pageHTML))

const pageHTML = `{{define "pager"}}<nav class="pager" aria-label="pages">
{{if .Total}}<span class="range">{{.From}}–{{.To}} of {{.Total}}</span> · page {{.Page}} of {{.Pages}}{{else}}<span class="range">none</span>{{end}}
{{if .PrevHref}}<a rel="prev" class="prev" href="{{.PrevHref}}">← Previous</a>{{else}}<span class="off">← Previous</span>{{end}}
{{if .NextHref}}<a rel="next" class="next" href="{{.NextHref}}">Next →</a>{{else}}<span class="off">Next →</span>{{end}}
</nav>
{{end}}{{define "head"}}<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{{if .Refresh}}<meta http-equiv="refresh" content="{{.Refresh}}">
{{end}}<title>pkmanager: key assignments</title>
<style>
:root{color-scheme:light dark;font-family:system-ui,-apple-system,"Segoe UI",sans-serif}
body{margin:0 auto;max-width:96rem;padding:1rem 1.5rem 3rem;line-height:1.45}
h1{font-size:1.5rem;margin:.5rem 0 .2rem}
h2{font-size:1.1rem;margin:1.2rem 0 .4rem}
.meta{color:#777;margin:0}
dl.network{display:flex;flex-wrap:wrap;gap:.3rem 1.6rem;margin:.4rem 0}
dl.network div{display:flex;gap:.4rem}
dl.network dt{color:#777}
dl.network dd{margin:0;font-weight:600}
dl.network dd.mono,code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85rem}
ul.counts{display:flex;flex-wrap:wrap;gap:.6rem;list-style:none;padding:0;margin:0}
ul.counts li{border:1px solid #8886;border-radius:.5rem;padding:.35rem .9rem;min-width:7rem}
ul.counts a{color:inherit;text-decoration:none}
ul.counts b{display:block;font-size:1.35rem}
form{display:flex;flex-wrap:wrap;gap:.4rem 1.2rem;align-items:center;margin:.6rem 0 1rem}
fieldset{border:0;padding:0;margin:0;display:flex;flex-wrap:wrap;gap:.2rem .8rem}
input[type=search]{padding:.25rem .4rem;min-width:14rem}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #8884;vertical-align:top}
thead th{position:sticky;top:0;background:Canvas;border-bottom:2px solid #8888}
th a{color:inherit;text-decoration:none}
th a:hover{text-decoration:underline}
code.hex{white-space:nowrap}
code.hex .h{display:inline-block;vertical-align:bottom;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;max-width:14ch}
@media (min-width:120rem){td.pk code.hex .h{max-width:none}}
td.pod,td.since,td.pk,td.origin,td.deposit{white-space:nowrap}
table.keys td.pod small,td.origin small.path,td.deposit small{display:block}
table.keys td.pod{max-width:14rem}
table.keys td.pod small{white-space:normal}
td.state{min-width:8rem;max-width:18rem}
tr.pending-deposit td.pod,tr.cooling-down,tr.available,tr.retired{color:#888}
tr.deposit-failed td.state,tr.still-signing td.state{color:#c22}
td.vs-bad{color:#c22;font-weight:600}
small{color:#888}
nav.pager{display:flex;flex-wrap:wrap;gap:.4rem 1rem;align-items:baseline;margin:.5rem 0}
nav.pager .off{color:#8888}
</style>
</head>
<body>
<main>
<h1>Key assignments</h1>
<p class="meta">Which pod holds which validator public key. Generated {{.Generated}}.{{if .Refresh}} <span class="refresh">Refreshes every {{.Refresh}} s (<a href="{{.RefreshOff}}">stop</a>).</span>{{end}} Also as <a href="{{.TextHref}}">text</a> or <a href="{{.JSONHref}}">JSON</a>.</p>
<section id="network">
<h2>Network</h2>
<dl class="network">
{{range .Network}}<div><dt>{{.Label}}</dt><dd{{if .Mono}} class="mono"{{end}}>{{.Value}}</dd></div>
{{end}}</dl>
</section>
<section id="states">
<h2>Keys by state</h2>
<ul class="counts">
{{range .Counts}}<li class="{{.State}}"><a href="{{.Href}}"><b>{{.N}}</b>{{.State}}</a></li>
{{end}}<li class="total"><b>{{.Total}}</b>total</li>
</ul>
</section>
<form method="get" action="/assignments">
<label>Pod contains <input type="search" name="pod" value="{{.Pod}}"></label>
<fieldset><legend hidden>States</legend>
{{range .States}}<label><input type="checkbox" name="state" value="{{.Value}}"{{if .Checked}} checked{{end}}> {{.Value}}</label>
{{end}}</fieldset>
{{with .Statuses}}<label>Validator <select name="status"><option value="">any status</option>
{{range .}}<option value="{{.Value}}"{{if .Checked}} selected{{end}}>{{.Value}}</option>
{{end}}</select></label>
{{end}}<label>Per page <select name="per_page">
{{range .PerPage}}<option value="{{.Value}}"{{if .Selected}} selected{{end}}>{{.Label}}</option>
{{end}}</select></label>
<label>Auto-refresh <select name="refresh">
{{range .RefreshOpts}}<option value="{{.Value}}"{{if .Selected}} selected{{end}}>{{.Label}}</option>
{{end}}</select></label>
<input type="hidden" name="sort" value="{{.Sort}}"><input type="hidden" name="order" value="{{.Order}}">
<button type="submit">Filter</button> <a href="{{.ResetHref}}">Reset</a>
</form>
<section id="pods">
<h2>Pods</h2>
<p class="meta">The matching keys by the pod they are listed under: its holder, the pod a pending-deposit key is intended for, or the last holder.</p>
<div class="scroll"><table class="pods">
<thead><tr><th>Pod</th><th>Keys</th><th>Assigned</th><th>States</th></tr></thead>
<tbody>
{{range .Summary}}<tr><td class="pod">{{if .Href}}<a href="{{.Href}}">{{.Pod}}</a>{{else}}{{.Pod}}{{end}}{{if .Blocked}} <small class="release-blocked" style="color:#c60" title="{{.Blocked}}">(release-blocked: {{.Rule}})</small>{{end}}</td><td class="keys">{{.Keys}}</td><td class="assigned">{{.Assigned}}</td><td class="states">{{range $i, $s := .States}}{{if $i}} · {{end}}<span class="{{$s.State}}">{{$s.State}} {{$s.N}}</span>{{end}}</td></tr>
{{end}}</tbody>
</table></div>
{{if gt .PodPager.Pages 1}}<div id="pods-pager">{{template "pager" .PodPager}}</div>
{{end}}</section>
<section id="keys">
<h2>Keys</h2>
<p class="meta">Pending-deposit keys show the pod they are intended for and their deposit transaction; cooling-down and other released keys their last holder.</p>
<div id="keys-pager-top">{{template "pager" .Keys}}</div>
<div class="scroll"><table class="keys">
<thead><tr>{{range .Columns}}<th{{with .AriaSort}} aria-sort="{{.}}"{{end}}>{{if .Href}}<a href="{{.Href}}">{{.Label}}{{.Arrow}}</a>{{else}}{{.Label}}{{end}}</th>{{end}}</tr></thead>
<tbody>
{{end}}{{define "foot"}}</tbody>
</table></div>
{{if not .Rows}}<p class="empty">No keys match{{if gt .Keys.Page 1}} on this page (<a href="{{.FirstHref}}">first page</a>){{end}}.</p>
{{end}}<div id="keys-pager">{{template "pager" .Keys}}</div>
</section>
</main>
</body>
</html>
{{end}}`
