package httpapi

import (
	"bufio"
	"bytes"
	"fmt"
	"html/template"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pkmanager/pkmanager/internal/redact"
	"github.com/pkmanager/pkmanager/internal/store"
)

// Representations of /assignments.
const (
	formatHTML = "html"
	formatJSON = "json"
	formatText = "text"
)

// Sort columns of /assignments.
const (
	sortPod    = "pod"
	sortState  = "state"
	sortSince  = "since"
	sortPubkey = "pubkey"
)

// pageStates are the states /assignments shows, in display order: keys with
// a pod (intended, holding, last holder).
var pageStates = []store.State{store.StatePendingDeposit, store.StateAssigned, store.StateCoolingDown, store.StateDepositFailed}

// noPod is the pod column of failed deposits of keys meant for no pod
// (spares). It is not a valid pod name.
const noPod = "(no pod)"

// assignQuery is the parsed query of /assignments.
type assignQuery struct {
	format string
	pod    string        // substring filter, lower-cased
	rawPod string        // as given, for the form
	states []store.State // empty: every state of the representation
	// statuses filters by validator status (lifecycle.StatusUnknown for
	// keys without a reading); empty: all.
	statuses []string
	sort     string
	desc     bool
}

// assignRow is one key of the page. Pod names are interned in
// assignData.pods; rows refer to them by index.
type assignRow struct {
	pubkey store.Pubkey
	pod    int32
	state  store.State
	since  time.Time
	until  time.Time // cooling-down: reusable from
	reason string    // deposit-failed: why
	// status is the key's last validator status ("" for none) and index
	// its validator index (-1 for none), with a validator reader.
	status string
	index  int64
}

// podInfo is one pod of the page.
type podInfo struct {
	name    string
	uid     string
	blocked string // release-blocked reason (audit.go)
}

// assignData is what every representation renders.
type assignData struct {
	rows   []assignRow
	pods   []podInfo
	counts map[store.State]int
	sorted bool // rows are in public-key order
	// withStatus: the rows carry validator statuses (a column, JSON fields).
	withStatus bool
}

// assignments serves /assignments: which pod holds which public keys, as
// HTML, JSON or Prysm-style text.
func (s *server) assignments(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	err := s.serveAssignments(w, r)
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.Observe("http", "assignments", start, err)
	}
}

func (s *server) serveAssignments(w http.ResponseWriter, r *http.Request) error {
	w.Header().Add("Vary", "Accept")
	q, err := parseAssignQuery(r)
	if err != nil {
		s.assignmentsError(w, r, q.format, err)
		return err
	}
	data, err := s.loadAssignments(r, &q)
	if err != nil {
		s.assignmentsError(w, r, q.format, err)
		return err
	}
	h := w.Header()
	h.Set("Cache-Control", "no-cache")
	bw := bufio.NewWriterSize(w, 64<<10)
	switch q.format {
	case formatText:
		h.Set("Content-Type", "text/plain; charset=utf-8")
		err = writeAssignmentsText(bw, data)
	case formatJSON:
		h.Set("Content-Type", "application/json")
		err = writeAssignmentsJSON(bw, data)
	default:
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("Referrer-Policy", "no-referrer")
		err = writeAssignmentsHTML(bw, &q, data, time.Now())
	}
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		// The client went away or the template failed mid-page.
		s.log.InfoContext(r.Context(), "http: write assignments", slog.Any("error", err))
	}
	return err
}

// assignmentsError answers a failed /assignments request in its format.
func (s *server) assignmentsError(w http.ResponseWriter, r *http.Request, format string, err error) {
	if format == formatJSON {
		s.writeError(w, r, "assignments", err)
		return
	}
	status, _ := classify(err)
	msg := redact.String(err.Error())
	if status == http.StatusInternalServerError {
		s.log.ErrorContext(r.Context(), "http: assignments", slog.Any("error", err))
		msg = "internal error; see the server log"
	}
	http.Error(w, msg, status)
}

// parseAssignQuery reads format, pod, state, sort and order. On error the
// returned query still carries the format, for the error's representation.
func parseAssignQuery(r *http.Request) (assignQuery, error) {
	v := r.URL.Query()
	q := assignQuery{sort: sortPod, rawPod: v.Get("pod")}
	switch f := v.Get("format"); f {
	case "":
		q.format = negotiate(r.Header.Values("Accept"))
	case "html":
		q.format = formatHTML
	case "json":
		q.format = formatJSON
	case "text", "txt", "plain":
		q.format = formatText
	default:
		q.format = formatHTML
		return q, invalidf("unknown format %q; want html, json or text", truncate(f, 40))
	}
	q.pod = strings.ToLower(strings.TrimSpace(q.rawPod))
	states, err := parseStates(v["state"])
	if err != nil {
		return q, err
	}
	q.states = states
	if q.statuses, err = parseStatuses(v["status"]); err != nil {
		return q, err
	}
	switch sv := v.Get("sort"); sv {
	case "", sortPod:
	case sortState, sortSince, sortPubkey:
		q.sort = sv
	default:
		return q, invalidf("unknown sort %q; want pod, state, since or pubkey", truncate(sv, 40))
	}
	switch o := v.Get("order"); o {
	case "", "asc":
	case "desc":
		q.desc = true
	default:
		return q, invalidf("unknown order %q; want asc or desc", truncate(o, 40))
	}
	return q, nil
}

// negotiate picks a representation from Accept headers: the offer with the
// highest quality, HTML on ties and by default.
func negotiate(accept []string) string {
	offers := [...]struct{ format, typ, sub string }{
		{formatHTML, "text", "html"},
		{formatJSON, "application", "json"},
		{formatText, "text", "plain"},
	}
	var quality [len(offers)]float64
	var specificity [len(offers)]int
	for i := range specificity {
		specificity[i] = -1
	}
	matched := false
	for _, header := range accept {
		for part := range strings.SplitSeq(header, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			typ, sub, _ := strings.Cut(mt, "/")
			q := 1.0
			if qs, ok := params["q"]; ok {
				if f, err := strconv.ParseFloat(qs, 64); err == nil && f >= 0 && f <= 1 {
					q = f
				}
			}
			for i, o := range offers {
				spec := -1
				switch {
				case typ == o.typ && sub == o.sub:
					spec = 2
				case typ == o.typ && sub == "*":
					spec = 1
				case typ == "*" && sub == "*":
					spec = 0
				}
				if spec > specificity[i] {
					specificity[i], quality[i] = spec, q
					matched = true
				}
			}
		}
	}
	if !matched {
		return formatHTML
	}
	best, bestQ := formatHTML, 0.0
	for i, o := range offers {
		if specificity[i] >= 0 && quality[i] > bestQ {
			best, bestQ = o.format, quality[i]
		}
	}
	return best
}

// loadAssignments lists the keys the representation shows, filtered and
// sorted. Only public fields are read; nothing is decrypted.
func (s *server) loadAssignments(r *http.Request, q *assignQuery) (*assignData, error) {
	ctx := r.Context()
	shown := pageStates
	switch q.format {
	case formatText:
		shown = []store.State{store.StateAssigned}
	case formatJSON:
		shown = []store.State{store.StatePendingDeposit, store.StateAssigned}
	}
	if len(q.states) > 0 {
		shown = slices.DeleteFunc(slices.Clone(shown), func(st store.State) bool { return !slices.Contains(q.states, st) })
	}
	// The counts feed the summary and size the row slice up front.
	counts, err := s.cfg.Keys.Counts(ctx)
	if err != nil {
		return nil, fmt.Errorf("count keys: %w", err)
	}
	data := &assignData{counts: counts, sorted: true}
	blocked := s.releaseBlocked()
	capacity := 0
	for _, st := range shown {
		capacity += counts[st]
	}
	if len(shown) == 0 {
		return data, nil
	}
	data.rows = make([]assignRow, 0, capacity)
	podIndex := make(map[string]int32)
	err = s.cfg.Keys.ListKeys(ctx, store.ListOptions{States: shown}, func(k store.Key) error {
		pod := k.Pod
		switch k.State {
		case store.StateAssigned, store.StatePendingDeposit:
		case store.StateCoolingDown, store.StateDepositFailed:
			pod = k.LastPod
		default:
			return nil
		}
		if pod == "" && k.State == store.StateDepositFailed {
			pod = noPod
		}
		if pod == "" || !slices.Contains(shown, k.State) {
			return nil
		}
		if q.pod != "" && !strings.Contains(strings.ToLower(pod), q.pod) {
			return nil
		}
		id, ok := podIndex[pod]
		if !ok {
			id = int32(len(data.pods))
			podIndex[pod] = id
			data.pods = append(data.pods, podInfo{name: pod, blocked: blocked[pod]})
		}
		if k.State == store.StateAssigned && k.PodUID != "" && data.pods[id].uid == "" {
			data.pods[id].uid = k.PodUID
		}
		if n := len(data.rows); n > 0 && bytes.Compare(data.rows[n-1].pubkey[:], k.Pubkey[:]) >= 0 {
			data.sorted = false
		}
		row := assignRow{pubkey: k.Pubkey, pod: id, state: k.State, since: k.Since, until: k.CoolingUntil}
		if k.State == store.StateDepositFailed {
			row.reason = k.RetiredReason
		}
		data.rows = append(data.rows, row)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	if q.format != formatText {
		if err := s.addReadings(ctx, data, q.statuses); err != nil {
			return nil, err
		}
	}
	if q.format == formatJSON {
		sortRows(data, sortPod, false) // grouped by pod
	} else {
		sortRows(data, q.sort, q.desc)
	}
	return data, nil
}

// sortRows orders the rows by column, reversed when desc. Ties keep public-key
// order; sorting by state orders each state's rows by pod first.
func sortRows(data *assignData, column string, desc bool) {
	rows := data.rows
	if !data.sorted {
		slices.SortFunc(rows, func(a, b assignRow) int { return bytes.Compare(a.pubkey[:], b.pubkey[:]) })
	}
	switch column {
	case sortPod:
		rows = sortByPod(data)
	case sortState:
		rows = sortByPod(data)
		rows = countingSort(rows, 3, func(r *assignRow) int {
			switch r.state {
			case store.StatePendingDeposit:
				return 0
			case store.StateAssigned:
				return 1
			default:
				return 2
			}
		})
	case sortSince:
		slices.SortStableFunc(rows, func(a, b assignRow) int { return a.since.Compare(b.since) })
	}
	if desc {
		slices.Reverse(rows)
	}
	data.rows = rows
}

// sortByPod orders rows by pod name in natural order (validator-2 before
// validator-10), stably. It sorts the few distinct names, then the rows by
// rank in linear time.
func sortByPod(data *assignData) []assignRow {
	order := make([]int32, len(data.pods))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(a, b int32) int { return naturalCompare(data.pods[a].name, data.pods[b].name) })
	rank := make([]int, len(data.pods))
	for r, id := range order {
		rank[id] = r
	}
	return countingSort(data.rows, len(data.pods), func(r *assignRow) int { return rank[r.pod] })
}

// countingSort returns rows stably ordered by key, which is in [0, n).
func countingSort(rows []assignRow, n int, key func(*assignRow) int) []assignRow {
	start := make([]int, n+1)
	for i := range rows {
		start[key(&rows[i])+1]++
	}
	for i := 1; i <= n; i++ {
		start[i] += start[i-1]
	}
	out := make([]assignRow, len(rows))
	for i := range rows {
		k := key(&rows[i])
		out[start[k]] = rows[i]
		start[k]++
	}
	return out
}

// naturalCompare compares strings with digit runs compared as numbers.
func naturalCompare(a, b string) int {
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		ca, cb := a[i], b[j]
		if isDigit(ca) && isDigit(cb) {
			si, sj := i, j
			for i < len(a) && isDigit(a[i]) {
				i++
			}
			for j < len(b) && isDigit(b[j]) {
				j++
			}
			na := strings.TrimLeft(a[si:i], "0")
			nb := strings.TrimLeft(b[sj:j], "0")
			if len(na) != len(nb) {
				return cmpInt(len(na), len(nb))
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			continue
		}
		if ca != cb {
			return cmpInt(int(ca), int(cb))
		}
		i++
		j++
	}
	if c := cmpInt(len(a)-i, len(b)-j); c != 0 {
		return c
	}
	return strings.Compare(a, b)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// writeAssignmentsText writes "podname=0x<pubkey>\n" lines like Prysm's
// cluster-pk-manager. Pod names that are not plain DNS names are quoted so
// that one key is always one line.
func writeAssignmentsText(bw *bufio.Writer, data *assignData) error {
	names := make([][]byte, len(data.pods))
	for i, p := range data.pods {
		if plainPodName(p.name) {
			names[i] = []byte(p.name)
		} else {
			names[i] = strconv.AppendQuoteToASCII(nil, p.name)
		}
	}
	for i := range data.rows {
		row := &data.rows[i]
		b := bw.AvailableBuffer()
		b = append(b, names[row.pod]...)
		b = append(b, '=')
		b = appendPubkey(b, &row.pubkey)
		b = append(b, '\n')
		if _, err := bw.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// plainPodName reports whether name has only the characters of a DNS-1123 name.
func plainPodName(name string) bool {
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return name != ""
}

// writeAssignmentsJSON writes {"pods":[...],"counts":{...}}, pods in name
// order and keys in public-key order.
func writeAssignmentsJSON(bw *bufio.Writer, data *assignData) error {
	b := bw.AvailableBuffer()
	b = append(b, `{"pods":[`...)
	prev := int32(-1)
	for i := range data.rows {
		row := &data.rows[i]
		if row.pod != prev {
			if prev >= 0 {
				b = append(b, "]},"...)
			}
			p := &data.pods[row.pod]
			b = appendJSONField(append(b, '{'), true, "pod_name", p.name)
			b = appendJSONField(b, false, "pod_uid", p.uid)
			if p.blocked != "" {
				b = appendJSONField(b, false, "release_blocked", p.blocked)
			}
			b = append(b, `,"keys":[`...)
			prev = row.pod
		} else {
			b = append(b, ',')
		}
		b = append(b, `{"pubkey":"`...)
		b = appendPubkey(b, &row.pubkey)
		b = append(b, '"')
		b = appendJSONField(b, false, "state", string(row.state))
		b = append(b, `,"since":`...)
		b = appendJSONTime(b, row.since)
		if row.status != "" {
			b = appendJSONField(b, false, "validator_status", row.status)
			b = append(b, `,"validator_index":`...)
			b = strconv.AppendInt(b, row.index, 10)
		}
		b = append(b, '}')
		if _, err := bw.Write(b); err != nil {
			return err
		}
		b = bw.AvailableBuffer()
	}
	if prev >= 0 {
		b = append(b, "]}"...)
	}
	b = append(b, `],"counts":{`...)
	for i, st := range store.States {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, string(st))
		b = append(b, ':')
		b = appendJSONInt(b, data.counts[st])
	}
	b = append(b, "}}\n"...)
	_, err := bw.Write(b)
	return err
}

// pageData feeds the HTML templates around the table rows.
type pageData struct {
	Generated string
	Counts    []stateCount
	Total     int
	Pod       string
	States    []stateOption
	Sort      string
	Order     string
	Columns   []column
	// Statuses are the validator status filter's options (nil without
	// validator statuses).
	Statuses  []stateOption
	TextHref  string
	JSONHref  string
	ResetHref string
	Rows      int
	Pods      int
}

type stateCount struct {
	State string
	N     int
}

type stateOption struct {
	Value   string
	Checked bool
}

type column struct {
	Label    string
	Href     string
	Arrow    string
	AriaSort string
}

// writeAssignmentsHTML writes the HTML page: html/template for the parts
// around the table, appendHTML for the rows.
func writeAssignmentsHTML(bw *bufio.Writer, q *assignQuery, data *assignData, now time.Time) error {
	pd := pageData{
		Generated: now.UTC().Format("2006-01-02 15:04:05 UTC"),
		Pod:       q.rawPod,
		Sort:      q.sort,
		Order:     "asc",
		Rows:      len(data.rows),
		Pods:      countPods(data),
		ResetHref: "/assignments",
	}
	if q.desc {
		pd.Order = "desc"
	}
	for _, st := range store.States {
		pd.Counts = append(pd.Counts, stateCount{State: string(st), N: data.counts[st]})
		pd.Total += data.counts[st]
	}
	for _, st := range pageStates {
		pd.States = append(pd.States, stateOption{Value: string(st), Checked: slices.Contains(q.states, st)})
	}
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
	if data.withStatus {
		for _, st := range append(slices.Clone(store.ValidatorStatuses), statusUnknown) {
			pd.Statuses = append(pd.Statuses, stateOption{Value: st, Checked: slices.Contains(q.statuses, st)})
		}
	}
	for _, c := range []struct{ key, label string }{
		{sortPod, "Pod"}, {sortPubkey, "Public key"}, {sortState, "State"}, {sortSince, "Since (UTC)"},
	} {
		v := cloneValues(base)
		v.Set("sort", c.key)
		col := column{Label: c.label}
		if q.sort == c.key {
			if q.desc {
				col.Arrow, col.AriaSort = " ▼", "descending"
			} else {
				col.Arrow, col.AriaSort = " ▲", "ascending"
				v.Set("order", "desc")
			}
		}
		col.Href = "?" + v.Encode()
		pd.Columns = append(pd.Columns, col)
	}
	if data.withStatus {
		pd.Columns = append(pd.Columns, column{Label: "Validator (beacon node)"})
	}
	formatHref := func(f string) string {
		v := cloneValues(base)
		if q.sort != sortPod {
			v.Set("sort", q.sort)
		}
		if q.desc {
			v.Set("order", "desc")
		}
		v.Set("format", f)
		return "?" + v.Encode()
	}
	pd.TextHref, pd.JSONHref = formatHref("text"), formatHref("json")

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

// writeRowHTML writes one table row; pod is the escaped pod name.
func writeRowHTML(bw *bufio.Writer, row *assignRow, pod []byte, withStatus bool) error {
	b := bw.AvailableBuffer()
	class := "other"
	if row.state.Valid() {
		class = string(row.state) // a fixed identifier, safe in an attribute
	}
	b = append(b, `<tr class="`...)
	b = append(b, class...)
	b = append(b, `"><td>`...)
	b = append(b, pod...)
	switch row.state {
	case store.StatePendingDeposit, store.StateDepositFailed:
		if !bytes.Equal(pod, []byte(noPod)) {
			b = append(b, ` <small>(intended)</small>`...)
		}
	case store.StateCoolingDown:
		b = append(b, ` <small>(last holder)</small>`...)
	}
	b = append(b, `</td><td><code>`...)
	b = appendPubkey(b, &row.pubkey)
	b = append(b, `</code></td><td>`...)
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
	b = append(b, `</td><td>`...)
	if !row.since.IsZero() {
		b = appendTimestamp(b, row.since)
	}
	if withStatus {
		b = appendStatusCell(b, row)
	}
	b = append(b, "</td></tr>\n"...)
	_, err := bw.Write(b)
	return err
}

// countPods counts the pods that appear in the rows.
func countPods(data *assignData) int {
	seen := make([]bool, len(data.pods))
	n := 0
	for i := range data.rows {
		if id := data.rows[i].pod; !seen[id] {
			seen[id] = true
			n++
		}
	}
	return n
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

const pageHTML = `{{define "head"}}<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pkmanager: key assignments</title>
<style>
:root{color-scheme:light dark;font-family:system-ui,-apple-system,"Segoe UI",sans-serif}
body{margin:0 auto;max-width:80rem;padding:1rem 1.5rem 3rem;line-height:1.45}
h1{font-size:1.5rem;margin:.5rem 0 .2rem}
h2{font-size:1.1rem;margin:1.2rem 0 .4rem}
.meta{color:#777;margin:0}
ul.counts{display:flex;flex-wrap:wrap;gap:.6rem;list-style:none;padding:0;margin:0}
ul.counts li{border:1px solid #8886;border-radius:.5rem;padding:.35rem .9rem;min-width:7rem}
ul.counts b{display:block;font-size:1.35rem}
form{display:flex;flex-wrap:wrap;gap:.4rem 1.2rem;align-items:center;margin:.6rem 0 1rem}
fieldset{border:0;padding:0;margin:0;display:flex;gap:.8rem}
input[type=search]{padding:.25rem .4rem;min-width:14rem}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.3rem .7rem;border-bottom:1px solid #8884;vertical-align:top}
thead th{position:sticky;top:0;background:Canvas;border-bottom:2px solid #8888}
th a{color:inherit;text-decoration:none}
th a:hover{text-decoration:underline}
td:nth-child(2){font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85rem;word-break:break-all}
tr.pending-deposit td:first-child,tr.cooling-down{color:#888}
tr.deposit-failed td:nth-child(3){color:#c22}
td.vs-bad{color:#c22;font-weight:600}
small{color:#888}
</style>
</head>
<body>
<main>
<h1>Key assignments</h1>
<p class="meta">Which pod holds which validator public key. Generated {{.Generated}}. Also as <a href="{{.TextHref}}">text</a> or <a href="{{.JSONHref}}">JSON</a>.</p>
<h2>Keys by state</h2>
<ul class="counts">
{{range .Counts}}<li class="{{.State}}"><b>{{.N}}</b>{{.State}}</li>
{{end}}<li class="total"><b>{{.Total}}</b>total</li>
</ul>
<h2>Pods and keys</h2>
<form method="get" action="/assignments">
<label>Pod contains <input type="search" name="pod" value="{{.Pod}}"></label>
<fieldset><legend hidden>States</legend>
{{range .States}}<label><input type="checkbox" name="state" value="{{.Value}}"{{if .Checked}} checked{{end}}> {{.Value}}</label>
{{end}}</fieldset>
{{with .Statuses}}<label>Validator <select name="status"><option value="">any status</option>
{{range .}}<option value="{{.Value}}"{{if .Checked}} selected{{end}}>{{.Value}}</option>
{{end}}</select></label>
{{end}}<input type="hidden" name="sort" value="{{.Sort}}"><input type="hidden" name="order" value="{{.Order}}">
<button type="submit">Filter</button> <a href="{{.ResetHref}}">Reset</a>
</form>
<p class="meta">{{.Rows}} keys, {{.Pods}} pods. Pending-deposit keys show the pod they are intended for; cooling-down keys their last holder.</p>
<table>
<thead><tr>{{range .Columns}}<th{{with .AriaSort}} aria-sort="{{.}}"{{end}}>{{if .Href}}<a href="{{.Href}}">{{.Label}}{{.Arrow}}</a>{{else}}{{.Label}}{{end}}</th>{{end}}</tr></thead>
<tbody>
{{end}}{{define "foot"}}</tbody>
</table>
{{if not .Rows}}<p>No keys match.</p>
{{end}}</main>
</body>
</html>
{{end}}`
