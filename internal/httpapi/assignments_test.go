package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/pkmanager/pkmanager/internal/store"
)

// pageKeys is a fixed key set for the page tests: pods validator-2 and
// validator-10 (natural order puts 2 first), a pending key intended for
// validator-10, a cooling-down key last held by validator-1, and keys the
// page must not show.
func pageKeys() []store.Key {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	return []store.Key{
		{Pubkey: pk(0xaa, 3), State: store.StateAssigned, Pod: "validator-10", PodUID: "uid-10", Since: t0.Add(3 * time.Hour)},
		{Pubkey: pk(0xaa, 1), State: store.StateAssigned, Pod: "validator-2", PodUID: "uid-2", Since: t0.Add(5 * time.Hour)},
		{Pubkey: pk(0xaa, 2), State: store.StateAssigned, Pod: "validator-2", PodUID: "uid-2", Since: t0.Add(1 * time.Hour)},
		{Pubkey: pk(0xaa, 4), State: store.StatePendingDeposit, Pod: "validator-10", Since: t0.Add(4 * time.Hour)},
		{Pubkey: pk(0xaa, 5), State: store.StateCoolingDown, LastPod: "validator-1", Since: t0.Add(2 * time.Hour), CoolingUntil: t0.Add(6 * time.Hour)},
		{Pubkey: pk(0xaa, 6), State: store.StatePendingDeposit, Since: t0},                    // no pod: not shown
		{Pubkey: pk(0xaa, 7), State: store.StateAvailable, LastPod: "validator-9", Since: t0}, // pool: not shown
		{Pubkey: pk(0xaa, 8), State: store.StateRetired, LastPod: "validator-9", RetiredReason: "slashed", Since: t0},
	}
}

func pageHandler(t *testing.T, keys []store.Key) http.Handler {
	t.Helper()
	return newTestHandler(t, &fakeAllocator{}, &fakeLister{keys: keys}, nil)
}

// hexKey is the 0x hex of pk(0xaa, n).
func hexKey(n int) string { return pk(0xaa, n).String() }

func TestAssignmentsTextByteExact(t *testing.T) {
	h := pageHandler(t, pageKeys())
	want := "validator-2=" + hexKey(1) + "\n" +
		"validator-2=" + hexKey(2) + "\n" +
		"validator-10=" + hexKey(3) + "\n"
	for _, hdr := range [][]string{nil, {"Accept", "text/plain"}} {
		target := "/assignments?format=text"
		if hdr != nil {
			target = "/assignments"
		}
		rec := do(t, h, "GET", target, "", hdr...)
		if rec.Code != 200 {
			t.Fatalf("%s %v: status %d", target, hdr, rec.Code)
		}
		if got := rec.Body.String(); got != want {
			t.Errorf("%s %v: body\n%q\nwant\n%q", target, hdr, got, want)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "text/plain; charset=utf-8" {
			t.Errorf("Content-Type %q", ct)
		}
		assertNoSecret(t, "text assignments", rec.Body.Bytes())
	}
	// Filters apply to the text too.
	rec := do(t, h, "GET", "/assignments?format=text&pod=-10", "")
	if got, want := rec.Body.String(), "validator-10="+hexKey(3)+"\n"; got != want {
		t.Errorf("filtered text %q, want %q", got, want)
	}
}

func TestAssignmentsTextBolt(t *testing.T) {
	s := boltWithPods(t)
	h := newTestHandler(t, &fakeAllocator{}, s, nil)
	// Expected lines written the way Prysm's cluster-pk-manager wrote them.
	var want strings.Builder
	for _, pod := range []string{"validator-0", "validator-1", "validator-2"} {
		err := s.ListKeys(context.Background(), store.ListOptions{Pod: pod}, func(k store.Key) error {
			fmt.Fprintf(&want, "%s=%#x\n", pod, k.Pubkey[:])
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	rec := do(t, h, "GET", "/assignments", "", "Accept", "text/plain")
	if got := rec.Body.String(); got != want.String() || strings.Count(got, "\n") != 9 {
		t.Errorf("text body\n%s\nwant\n%s", got, want.String())
	}
}

func TestAssignmentsNegotiation(t *testing.T) {
	h := pageHandler(t, pageKeys())
	for _, tt := range []struct {
		query, accept, wantType string
	}{
		{"", "", "text/html; charset=utf-8"},
		{"", "*/*", "text/html; charset=utf-8"},
		{"", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "text/html; charset=utf-8"},
		{"", "text/plain", "text/plain; charset=utf-8"},
		{"", "text/plain, */*;q=0.1", "text/plain; charset=utf-8"},
		{"", "application/json", "application/json"},
		{"", "text/plain;q=0.5, application/json", "application/json"},
		{"", "text/*", "text/html; charset=utf-8"},
		{"", "image/png", "text/html; charset=utf-8"},
		{"?format=json", "text/plain", "application/json"},
		{"?format=html", "application/json", "text/html; charset=utf-8"},
		{"?format=text", "text/html", "text/plain; charset=utf-8"},
	} {
		var hdr []string
		if tt.accept != "" {
			hdr = []string{"Accept", tt.accept}
		}
		rec := do(t, h, "GET", "/assignments"+tt.query, "", hdr...)
		if rec.Code != 200 {
			t.Errorf("%s Accept %q: status %d", tt.query, tt.accept, rec.Code)
		}
		if ct := rec.Header().Get("Content-Type"); ct != tt.wantType {
			t.Errorf("%s Accept %q: Content-Type %q, want %q", tt.query, tt.accept, ct, tt.wantType)
		}
		if v := rec.Header().Get("Vary"); v != "Accept" {
			t.Errorf("Vary %q, want Accept", v)
		}
	}
}

type assignmentsJSON struct {
	Pods []struct {
		PodName string `json:"pod_name"`
		PodUID  string `json:"pod_uid"`
		Keys    []struct {
			Pubkey string    `json:"pubkey"`
			State  string    `json:"state"`
			Since  time.Time `json:"since"`
		} `json:"keys"`
	} `json:"pods"`
	Counts map[string]int `json:"counts"`
}

func TestAssignmentsJSON(t *testing.T) {
	keys := pageKeys()
	h := pageHandler(t, keys)
	rec := do(t, h, "GET", "/assignments", "", "Accept", "application/json")
	if rec.Code != 200 {
		t.Fatalf("status %d", rec.Code)
	}
	assertNoSecret(t, "JSON assignments", rec.Body.Bytes())
	var got assignmentsJSON
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatal(err)
	}
	if len(got.Pods) != 2 {
		t.Fatalf("pods %+v, want validator-2 and validator-10", got.Pods)
	}
	p2, p10 := got.Pods[0], got.Pods[1]
	if p2.PodName != "validator-2" || p2.PodUID != "uid-2" || p10.PodName != "validator-10" || p10.PodUID != "uid-10" {
		t.Errorf("pods %+v", got.Pods)
	}
	if len(p2.Keys) != 2 || p2.Keys[0].Pubkey != hexKey(1) || p2.Keys[1].Pubkey != hexKey(2) {
		t.Errorf("validator-2 keys %+v", p2.Keys)
	}
	if !p2.Keys[0].Since.Equal(keys[1].Since) || p2.Keys[0].State != "assigned" {
		t.Errorf("validator-2 first key %+v", p2.Keys[0])
	}
	if len(p10.Keys) != 2 || p10.Keys[0].Pubkey != hexKey(3) || p10.Keys[1].Pubkey != hexKey(4) || p10.Keys[1].State != "pending-deposit" {
		t.Errorf("validator-10 keys %+v", p10.Keys)
	}
	wantCounts := map[string]int{"pending-deposit": 2, "available": 1, "assigned": 3, "cooling-down": 1, "retired": 1, "deposit-failed": 0, "still-signing": 0, "exiting": 0}
	if fmt.Sprint(got.Counts) != fmt.Sprint(wantCounts) {
		t.Errorf("counts %v, want %v", got.Counts, wantCounts)
	}

	// state filter
	rec = do(t, h, "GET", "/assignments?format=json&state=pending-deposit", "")
	got = assignmentsJSON{}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Pods) != 1 || len(got.Pods[0].Keys) != 1 || got.Pods[0].Keys[0].Pubkey != hexKey(4) {
		t.Errorf("pending-deposit only: %+v", got.Pods)
	}
	// Empty result is still a valid document.
	rec = do(t, h, "GET", "/assignments?format=json&pod=nobody", "")
	got = assignmentsJSON{}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || len(got.Pods) != 0 || got.Counts["assigned"] != 3 {
		t.Errorf("empty result %q: %v", rec.Body, err)
	}
}

// pageRow is one parsed table row: the text of each cell.
type pageRow []string

// parsePage parses an HTML page and returns the body rows of its keys
// table.
func parsePage(t *testing.T, body string) (*html.Node, []pageRow) {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse page: %v", err)
	}
	return doc, tableRows(doc, "keys")
}

// tableRows returns the body rows of the table with the class.
func tableRows(doc *html.Node, class string) []pageRow {
	var rows []pageRow
	for _, table := range findAll(doc, "table") {
		if attr(table, "class") == class {
			rows = append(rows, bodyRows(table)...)
		}
	}
	return rows
}

// bodyRows returns the text of the cells of the tbody rows under n.
func bodyRows(n *html.Node) []pageRow {
	var rows []pageRow
	var walk func(n *html.Node, inBody bool)
	walk = func(n *html.Node, inBody bool) {
		if n.Type == html.ElementNode && n.Data == "tbody" {
			inBody = true
		}
		if inBody && n.Type == html.ElementNode && n.Data == "tr" {
			var row pageRow
			for c := n.FirstChild; c != nil; c = c.NextSibling {
				if c.Type == html.ElementNode && c.Data == "td" {
					row = append(row, textOf(c))
				}
			}
			rows = append(rows, row)
			return
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c, inBody)
		}
	}
	walk(n, false)
	return rows
}

func textOf(n *html.Node) string {
	if n.Type == html.TextNode {
		return n.Data
	}
	var b strings.Builder
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		b.WriteString(textOf(c))
	}
	return b.String()
}

// findAll returns the elements named tag.
func findAll(n *html.Node, tag string) []*html.Node {
	var out []*html.Node
	if n.Type == html.ElementNode && n.Data == tag {
		out = append(out, n)
	}
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		out = append(out, findAll(c, tag)...)
	}
	return out
}

func attr(n *html.Node, name string) string {
	for _, a := range n.Attr {
		if a.Key == name {
			return a.Val
		}
	}
	return ""
}

// rowKeys returns the public-key column.
func rowKeys(rows []pageRow) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r[1]
	}
	return out
}

func getPage(t *testing.T, h http.Handler, query string) (*html.Node, []pageRow, string) {
	t.Helper()
	rec := do(t, h, "GET", "/assignments"+query, "")
	if rec.Code != 200 {
		t.Fatalf("GET /assignments%s: status %d: %s", query, rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	body := rec.Body.String()
	assertNoSecret(t, "HTML assignments "+query, rec.Body.Bytes())
	doc, rows := parsePage(t, body)
	return doc, rows, body
}

func TestAssignmentsHTML(t *testing.T) {
	h := pageHandler(t, pageKeys())
	rec := do(t, h, "GET", "/assignments", "")
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("CSP %q", csp)
	}
	doc, rows, body := getPage(t, h, "")
	if !strings.HasPrefix(body, "<!DOCTYPE html>") {
		t.Errorf("page does not start with a doctype: %.40q", body)
	}
	// Every state: keys no pod holds, is meant for or held under "(no
	// pod)", available and retired keys under their last holder.
	want := []pageRow{
		{"(no pod)", hexKey(6), "pending-deposit", "2025-01-01 00:00:00", "", "no transaction sent yet"},
		{"validator-1 (last holder)", hexKey(5), "cooling-down until 2025-01-01 06:00:00", "2025-01-01 02:00:00", "", ""},
		{"validator-2", hexKey(1), "assigned", "2025-01-01 05:00:00", "", ""},
		{"validator-2", hexKey(2), "assigned", "2025-01-01 01:00:00", "", ""},
		{"validator-9 (last holder)", hexKey(7), "available", "2025-01-01 00:00:00", "", ""},
		{"validator-9 (last holder)", hexKey(8), "retired slashed", "2025-01-01 00:00:00", "", ""},
		{"validator-10", hexKey(3), "assigned", "2025-01-01 03:00:00", "", ""},
		{"validator-10 (intended)", hexKey(4), "pending-deposit", "2025-01-01 04:00:00", "", "no transaction sent yet"},
	}
	if fmt.Sprint(rows) != fmt.Sprint(want) {
		t.Errorf("rows\n%q\nwant\n%q", rows, want)
	}
	// Summary of counts by state.
	counts := map[string]string{}
	for _, li := range findAll(doc, "li") {
		counts[attr(li, "class")] = textOf(li)
	}
	for state, text := range map[string]string{
		"pending-deposit": "2pending-deposit", "available": "1available", "assigned": "3assigned",
		"cooling-down": "1cooling-down", "retired": "1retired", "total": "8total",
	} {
		if counts[state] != text {
			t.Errorf("summary %s = %q, want %q", state, counts[state], text)
		}
	}
	// The filter form works without JavaScript: a GET form to the page.
	forms := findAll(doc, "form")
	if len(forms) != 1 || attr(forms[0], "method") != "get" || attr(forms[0], "action") != "/assignments" {
		t.Errorf("filter form missing or not a GET form")
	}
	if len(findAll(doc, "script")) != 0 {
		t.Errorf("page has scripts")
	}
}

func TestAssignmentsFilterAndSort(t *testing.T) {
	h := pageHandler(t, pageKeys())
	for _, tt := range []struct {
		query string
		want  []string
	}{
		{"?pod=validator-2", []string{hexKey(1), hexKey(2)}},
		{"?pod=VALIDATOR-1", []string{hexKey(5), hexKey(3), hexKey(4)}}, // substring, any case
		{"?pod=+validator-10+", []string{hexKey(3), hexKey(4)}},         // trimmed
		{"?pod=no+pod", []string{hexKey(6)}},
		{"?state=cooling-down", []string{hexKey(5)}},
		{"?state=assigned&state=pending-deposit", []string{hexKey(6), hexKey(1), hexKey(2), hexKey(3), hexKey(4)}},
		{"?state=available", []string{hexKey(7)}},
		{"?state=retired", []string{hexKey(8)}},
		{"?state=available,retired&pod=validator-9", []string{hexKey(7), hexKey(8)}},
		{"?state=exiting", []string{}},
		{"?pod=nobody", []string{}},
		{"?sort=pubkey", []string{hexKey(1), hexKey(2), hexKey(3), hexKey(4), hexKey(5), hexKey(6), hexKey(7), hexKey(8)}},
		{"?sort=pubkey&order=desc", []string{hexKey(8), hexKey(7), hexKey(6), hexKey(5), hexKey(4), hexKey(3), hexKey(2), hexKey(1)}},
		{"?sort=since&pod=validator-", []string{hexKey(7), hexKey(8), hexKey(2), hexKey(5), hexKey(3), hexKey(4), hexKey(1)}},
		{"?sort=since&order=desc&pod=validator-", []string{hexKey(1), hexKey(4), hexKey(3), hexKey(5), hexKey(2), hexKey(8), hexKey(7)}},
		// Lifecycle order, each state's keys by pod.
		{"?sort=state", []string{hexKey(6), hexKey(4), hexKey(7), hexKey(1), hexKey(2), hexKey(3), hexKey(5), hexKey(8)}},
		{"?sort=pod&order=desc", []string{hexKey(4), hexKey(3), hexKey(8), hexKey(7), hexKey(2), hexKey(1), hexKey(5), hexKey(6)}},
		{"?sort=state&pod=validator-10", []string{hexKey(4), hexKey(3)}},
		// Pages keep the order.
		{"?sort=pubkey&per_page=3", []string{hexKey(1), hexKey(2), hexKey(3)}},
		{"?sort=pubkey&per_page=3&page=2", []string{hexKey(4), hexKey(5), hexKey(6)}},
		{"?sort=pubkey&per_page=3&page=3", []string{hexKey(7), hexKey(8)}},
		{"?sort=pubkey&per_page=3&page=4", []string{}},
		{"?per_page=2&page=2", []string{hexKey(1), hexKey(2)}},
	} {
		_, rows, _ := getPage(t, h, tt.query)
		if got := rowKeys(rows); !slices.Equal(got, tt.want) {
			t.Errorf("%s: keys %v, want %v", tt.query, got, tt.want)
		}
	}
}

func TestAssignmentsSortLinks(t *testing.T) {
	h := pageHandler(t, pageKeys())
	doc, _, _ := getPage(t, h, "?sort=since&pod=val&state=assigned")
	var ths []*html.Node
	for _, table := range findAll(doc, "table") {
		if attr(table, "class") == "keys" {
			ths = findAll(table, "th")
		}
	}
	if len(ths) != 6 {
		t.Fatalf("%d header cells", len(ths))
	}
	links := map[string]url.Values{}
	for _, th := range ths[:4] { // origin and deposit do not sort
		a := findAll(th, "a")
		if len(a) != 1 {
			t.Fatalf("header %q has no link", textOf(th))
		}
		href := attr(a[0], "href")
		u, err := url.Parse(href)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		links[q.Get("sort")] = q
		if q.Get("pod") != "val" || q.Get("state") != "assigned" {
			t.Errorf("link %q drops the filters", href)
		}
		if q.Get("sort") == "since" {
			if attr(th, "aria-sort") != "ascending" || !strings.Contains(textOf(th), "▲") {
				t.Errorf("sorted column not marked: %q aria-sort %q", textOf(th), attr(th, "aria-sort"))
			}
		} else if attr(th, "aria-sort") != "" {
			t.Errorf("unsorted column %q has aria-sort", textOf(th))
		}
	}
	for _, col := range []string{"pod", "pubkey", "state", "since"} {
		if _, ok := links[col]; !ok {
			t.Errorf("no header link sorts by %s", col)
		}
	}
	if links["since"].Get("order") != "desc" || links["pod"].Get("order") != "" {
		t.Errorf("the current column's link should toggle the order: %v", links)
	}
	// The text and JSON links keep the filters.
	for _, a := range findAll(doc, "a") {
		if strings.Contains(attr(a, "href"), "format=") {
			u, _ := url.Parse(attr(a, "href"))
			if u.Query().Get("pod") != "val" || u.Query().Get("sort") != "since" {
				t.Errorf("format link %q drops the query", attr(a, "href"))
			}
		}
	}
}

func TestAssignmentsHostilePodName(t *testing.T) {
	hostile := `</td><script>alert("x")</script><img src=x onerror=alert(1)>'&+` + "\x00\nevil"
	keys := []store.Key{
		{Pubkey: pk(0xaa, 1), State: store.StateAssigned, Pod: hostile, PodUID: `"uid"<b>`, Since: fixtureNow},
		{Pubkey: pk(0xaa, 2), State: store.StateCoolingDown, LastPod: hostile, Since: fixtureNow},
	}
	h := pageHandler(t, keys)

	doc, rows, body := getPage(t, h, "?pod="+url.QueryEscape(`<script>`))
	for _, bad := range []string{"<script", "<img", `alert("x")`} {
		if strings.Contains(body, bad) {
			t.Errorf("page contains unescaped %q", bad)
		}
	}
	if n := len(findAll(doc, "script")) + len(findAll(doc, "img")); n != 0 {
		t.Errorf("hostile name created %d elements", n)
	}
	wantCell := strings.ReplaceAll(hostile, "\x00", "\uFFFD")
	if len(rows) != 2 || rows[0][0] != wantCell || rows[1][0] != wantCell+" (last holder)" {
		t.Errorf("rows %q, want the pod name shown literally", rows)
	}
	// The filter echoed in the form is escaped too.
	for _, in := range findAll(doc, "input") {
		if attr(in, "name") == "pod" && attr(in, "value") != "<script>" {
			t.Errorf("filter input value %q", attr(in, "value"))
		}
	}

	rec := do(t, h, "GET", "/assignments?format=json", "")
	if strings.Contains(rec.Body.String(), "<script") {
		t.Errorf("JSON contains unescaped <script")
	}
	var got assignmentsJSON
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("JSON with hostile name is invalid: %v", err)
	}
	if len(got.Pods) != 1 || got.Pods[0].PodName != hostile || got.Pods[0].PodUID != `"uid"<b>` {
		t.Errorf("JSON pods %+v", got.Pods)
	}

	rec = do(t, h, "GET", "/assignments?format=text", "")
	want := fmt.Sprintf("%q=%s\n", hostile, hexKey(1))
	if rec.Body.String() != want {
		t.Errorf("text %q, want %q (quoted, one line)", rec.Body.String(), want)
	}
}

func TestAssignmentsNoSecrets(t *testing.T) {
	// The fake lister fills SealedSecret with the marker; the bolt store holds
	// it sealed. No representation may show it.
	handlers := map[string]http.Handler{
		"fake": pageHandler(t, pageKeys()),
		"bolt": newTestHandler(t, &fakeAllocator{}, boltWithPods(t), nil),
	}
	for name, h := range handlers {
		for _, q := range []string{"", "?format=json", "?format=text", "?sort=since&order=desc", "?state=cooling-down"} {
			rec := do(t, h, "GET", "/assignments"+q, "")
			if rec.Code != 200 || rec.Body.Len() == 0 {
				t.Errorf("%s %s: status %d, %d bytes", name, q, rec.Code, rec.Body.Len())
			}
			assertNoSecret(t, name+" /assignments"+q, rec.Body.Bytes())
		}
		rec := do(t, h, "GET", "/api/v1/keys", "")
		assertNoSecret(t, name+" /api/v1/keys", rec.Body.Bytes())
	}
}

func TestAssignmentsBoltHTML(t *testing.T) {
	s := boltWithPods(t)
	h := newTestHandler(t, &fakeAllocator{}, s, nil)
	_, rows, _ := getPage(t, h, "")
	if len(rows) != 15 {
		t.Fatalf("%d rows, want 9 assigned + 2 cooling-down + 4 available", len(rows))
	}
	for _, pod := range []string{"validator-0", "validator-1", "validator-2"} {
		err := s.ListKeys(context.Background(), store.ListOptions{Pod: pod}, func(k store.Key) error {
			want := pageRow{pod, k.Pubkey.String(), "assigned", "2025-03-14 09:26:53", "derived m/12381/3600/" + strconv.Itoa(int(k.DerivationIndex)) + "/0/0", ""}
			if !slices.ContainsFunc(rows, func(r pageRow) bool { return slices.Equal(r, want) }) {
				t.Errorf("no row %q", want)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	cooling := 0
	for _, r := range rows {
		if r[0] == "validator-3 (last holder)" && r[2] == "cooling-down until 2025-03-14 10:26:53" {
			cooling++
		}
	}
	if cooling != 2 {
		t.Errorf("%d cooling-down rows of validator-3, want 2", cooling)
	}
}

// failingCounts is a lister whose Counts fails.
type failingCounts struct{ fakeLister }

func (failingCounts) Counts(context.Context) (map[store.State]int, error) {
	return nil, errors.New("meta bucket unreadable at /secret/path")
}

func TestAssignmentsErrors(t *testing.T) {
	h := pageHandler(t, pageKeys())
	for _, q := range []string{"?sort=size", "?order=up", "?state=gone", "?format=xml"} {
		rec := do(t, h, "GET", "/assignments"+q, "")
		if rec.Code != 400 {
			t.Errorf("%s: status %d, want 400", q, rec.Code)
		}
	}
	if rec := do(t, h, "GET", "/assignments?format=json&sort=size", ""); rec.Code != 400 {
		t.Errorf("JSON bad sort: status %d", rec.Code)
	} else {
		decodeError(t, rec)
	}

	broken := newTestHandler(t, &fakeAllocator{}, &failingCounts{}, nil)
	for _, q := range []string{"", "?format=json"} {
		rec := do(t, broken, "GET", "/assignments"+q, "")
		if rec.Code != 500 || strings.Contains(rec.Body.String(), "/secret/path") {
			t.Errorf("counts failure %s: %d %q", q, rec.Code, rec.Body)
		}
	}
	listFails := newTestHandler(t, &fakeAllocator{}, &fakeLister{keys: pageKeys(), err: errors.New("cursor broke"), failAfter: 2}, nil)
	for _, q := range []string{"", "?format=json", "?format=text"} {
		rec := do(t, listFails, "GET", "/assignments"+q, "")
		if rec.Code != 500 || strings.Contains(rec.Body.String(), "cursor broke") || strings.Contains(rec.Body.String(), "validator") {
			t.Errorf("list failure %s: %d %q", q, rec.Code, rec.Body)
		}
	}
}
