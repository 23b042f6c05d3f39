package httpapi

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
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

// jsonStates are the states /assignments?format=json lists without a state
// filter: keys held by a pod or intended for one.
var jsonStates = []store.State{store.StatePendingDeposit, store.StateAssigned}

// noPod is the pod column of keys that no pod holds, is meant for or last
// held (the pool, spares). It is not a valid pod name.
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
	// keys is the page of rows shown and pods the page of the per-pod
	// summary (assignments_page.go).
	keys, pods paging
	// refresh is the auto-refresh interval of the HTML page in seconds;
	// 0: off.
	refresh int
}

// assignRow is one key of the page. Pod names are interned in
// assignData.pods; rows refer to them by index.
type assignRow struct {
	pubkey store.Pubkey
	pod    int32
	state  store.State
	since  time.Time
	until  time.Time // cooling-down: reusable from
	// reason is why the key is retired, deposit-failed, still-signing
	// (quarantined) or exiting.
	reason string
	origin store.Origin
	// path is i of m/12381/3600/i/0/0 when hasPath.
	path    uint32
	hasPath bool
	// deposit is the deposit transaction this server sent for a
	// pending-deposit or deposit-failed key (HTML only); nil for none.
	deposit *depositRef
	// status is the key's last validator status ("" for none) and index
	// its validator index (-1 for none), with a validator reader.
	status string
	index  int64
}

// depositRef is what the page shows of a deposit transaction: public
// chain data only (never the raw signed transaction).
type depositRef struct {
	hash [32]byte
	sent time.Time
	// block is the block holding the deposit (recorded at confirmation,
	// or seen on chain while the key waits for confirmations); 0: not
	// seen yet. chainKnown: the server could tell.
	block      uint64
	chainKnown bool
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
	// total is the number of rows that match, before paging; summary the
	// per-pod summary of all of them (HTML only).
	total   int
	summary []podSummary
	// podTotal is the number of pods in the summary before paging.
	podTotal int
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
	if sizer, ok := s.cfg.Keys.(podSizer); ok && q.streamsJSON() {
		return s.serveAssignmentsJSON(w, r, &q, sizer)
	}
	data, err := s.loadAssignments(r, &q)
	if err != nil {
		s.assignmentsError(w, r, q.format, err)
		return err
	}
	h := w.Header()
	h.Set("Cache-Control", "no-cache")
	if q.format != formatHTML {
		setPagingHeaders(h, r, &q, data.total)
	}
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
		err = writeAssignmentsHTML(bw, &q, data, s.cfg.Network, time.Now())
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

// parseAssignQuery reads format, pod, state, status, sort, order, paging and
// refresh. On error the
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
	if err := q.parsePaging(v); err != nil {
		return q, err
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

// loadAssignments lists the keys the representation shows, filtered,
// sorted and paged. Only public fields are read; nothing is decrypted. The
// store is read page by page (store.ListPages) into memory before anything
// is written: no transaction is held while the client reads.
func (s *server) loadAssignments(r *http.Request, q *assignQuery) (*assignData, error) {
	ctx := r.Context()
	shown := q.shownStates()
	// The counts feed the summary and size the row slice up front.
	counts, err := s.cfg.Keys.Counts(ctx)
	if err != nil {
		return nil, fmt.Errorf("count keys: %w", err)
	}
	data := &assignData{counts: counts, sorted: true}
	if len(shown) == 0 {
		return data, nil
	}
	capacity := 0
	for _, st := range shown {
		capacity += counts[st]
	}
	data.rows = make([]assignRow, 0, capacity)
	b := rowBuilder{data: data, q: q, blocked: s.releaseBlocked(), index: make(map[string]int32)}
	// The HTML page shows the deposit transactions of pending-deposit and
	// deposit-failed keys: only those states are read with their deposits.
	var plain, withTx []store.State
	for _, st := range shown {
		if q.format == formatHTML && (st == store.StatePendingDeposit || st == store.StateDepositFailed) {
			withTx = append(withTx, st)
		} else {
			plain = append(plain, st)
		}
	}
	for _, group := range []struct {
		states []store.State
		tx     bool
	}{{plain, false}, {withTx, true}} {
		if len(group.states) == 0 {
			continue
		}
		opts := store.ListOptions{States: group.states, WithDeposit: group.tx}
		if err := store.ListPages(ctx, s.cfg.Keys, opts, 0, func(page []store.Key) error {
			for i := range page {
				b.add(&page[i])
			}
			return nil
		}); err != nil {
			return nil, fmt.Errorf("list keys: %w", err)
		}
	}
	// Validator statuses: of every row when they filter, else of the
	// shown page only (below).
	if q.format != formatText && len(q.statuses) > 0 {
		if err := s.addReadings(ctx, data, q.statuses); err != nil {
			return nil, err
		}
	}
	if q.format == formatJSON {
		sortRows(data, sortPod, false) // grouped by pod
	} else {
		sortRows(data, q.sort, q.desc)
	}
	data.total = len(data.rows)
	if q.format == formatHTML {
		data.summary, data.podTotal = summarizePods(data, q.pods)
	}
	lo, hi := q.keys.bounds(len(data.rows))
	data.rows = data.rows[lo:hi]
	if q.format != formatText && len(q.statuses) == 0 {
		if err := s.addReadings(ctx, data, nil); err != nil {
			return nil, err
		}
	}
	if q.format == formatHTML {
		s.addChainBlocks(ctx, data)
	}
	return data, nil
}

// shownStates are the states the representation lists: the state filter,
// else every state on the HTML page, keys with a pod in JSON; the text
// lists assigned keys only.
func (q *assignQuery) shownStates() []store.State {
	switch {
	case q.format == formatText:
		if len(q.states) > 0 && !slices.Contains(q.states, store.StateAssigned) {
			return nil
		}
		return []store.State{store.StateAssigned}
	case len(q.states) > 0:
		return q.states
	case q.format == formatJSON:
		return jsonStates
	}
	return store.States
}

// rowBuilder turns listed keys into rows.
type rowBuilder struct {
	data    *assignData
	q       *assignQuery
	blocked map[string]string
	index   map[string]int32
}

// rowPod is the pod a key is listed under: its holder (assigned), the pod
// it is meant for (pending-deposit, deposit-failed) or its last holder;
// "" for none.
func rowPod(k *store.Key) string {
	switch k.State {
	case store.StateAssigned, store.StatePendingDeposit:
		return k.Pod
	}
	return cmp.Or(k.Pod, k.LastPod)
}

// add appends k's row unless a filter drops it. JSON and text list keys
// with a pod only; the HTML page lists the rest under noPod.
func (b *rowBuilder) add(k *store.Key) {
	pod := rowPod(k)
	if pod == "" {
		if b.q.format != formatHTML {
			return
		}
		pod = noPod
	}
	if b.q.pod != "" && !strings.Contains(strings.ToLower(pod), b.q.pod) {
		return
	}
	data := b.data
	id := b.podID(pod)
	if k.State == store.StateAssigned && k.PodUID != "" && data.pods[id].uid == "" {
		data.pods[id].uid = k.PodUID
	}
	if n := len(data.rows); n > 0 && bytes.Compare(data.rows[n-1].pubkey[:], k.Pubkey[:]) >= 0 {
		data.sorted = false
	}
	row := assignRow{pubkey: k.Pubkey, pod: id, state: k.State, since: k.Since, until: k.CoolingUntil,
		reason: k.RetiredReason, origin: k.Origin, path: k.DerivationIndex, hasPath: k.HasDerivationIndex}
	if tx := k.DepositTx; tx != nil && b.q.format == formatHTML {
		row.deposit = &depositRef{hash: tx.Hash, sent: tx.RecordedAt, block: tx.Block, chainKnown: tx.Block > 0}
	}
	data.rows = append(data.rows, row)
}

// podID is the index of pod in data.pods, which it is added to the
// first time.
func (b *rowBuilder) podID(pod string) int32 {
	id, ok := b.index[pod]
	if !ok {
		id = int32(len(b.data.pods))
		b.index[pod] = id
		b.data.pods = append(b.data.pods, podInfo{name: pod, blocked: b.blocked[pod]})
	}
	return id
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
		// Lifecycle order (store.States), each state's rows by pod.
		rows = sortByPod(data)
		rows = countingSort(rows, len(store.States)+1, func(r *assignRow) int {
			if i := slices.Index(store.States, r.state); i >= 0 {
				return i
			}
			return len(store.States)
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
	return countingSortTo(nil, rows, n, key)
}

// countingSortTo is countingSort writing into out's array when it is
// large enough.
func countingSortTo(out, rows []assignRow, n int, key func(*assignRow) int) []assignRow {
	start := make([]int, n+1)
	for i := range rows {
		start[key(&rows[i])+1]++
	}
	for i := 1; i <= n; i++ {
		start[i] += start[i-1]
	}
	if cap(out) < len(rows) {
		out = make([]assignRow, len(rows))
	}
	out = out[:len(rows)]
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
	var j jsonListing
	if err := j.rows(bw, data); err != nil {
		return err
	}
	return j.end(bw, data.counts)
}

// jsonListing writes the JSON of /assignments in pieces, rows as they are
// read (assignments_stream.go): {"pods":[ on the first rows, each call's
// rows as whole pods, then the counts.
type jsonListing struct {
	started bool // {"pods":[ written
	pods    int  // pod objects written
}

// rows writes data's rows, which are grouped by pod, each pod's keys
// in public-key order; a pod does not continue into the next call.
func (j *jsonListing) rows(bw *bufio.Writer, data *assignData) error {
	b := bw.AvailableBuffer()
	if !j.started {
		b = append(b, `{"pods":[`...)
		j.started = true
	}
	prev := int32(-1)
	for i := range data.rows {
		row := &data.rows[i]
		if row.pod != prev {
			if prev >= 0 {
				b = append(b, "]}"...)
			}
			if j.pods > 0 {
				b = append(b, ',')
			}
			j.pods++
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
	_, err := bw.Write(b)
	return err
}

// end writes the counts and closes the listing.
func (j *jsonListing) end(bw *bufio.Writer, counts map[store.State]int) error {
	b := bw.AvailableBuffer()
	if !j.started {
		b = append(b, `{"pods":[`...)
		j.started = true
	}
	b = append(b, `],"counts":{`...)
	for i, st := range store.States {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, string(st))
		b = append(b, ':')
		b = appendJSONInt(b, counts[st])
	}
	b = append(b, "}}\n"...)
	_, err := bw.Write(b)
	return err
}
