//go:build unix

package httpapi

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

// browserFixture fills a real bbolt store with keys in every state the
// page must show and returns what the checks need.
type browserFixture struct {
	pending, failed, retired, quarantined, available, imported store.Pubkey
	txHash                                                     [32]byte
	assigned                                                   map[string][]string
}

func fillBrowserStore(t *testing.T, s store.Store) browserFixture {
	t.Helper()
	ctx := context.Background()
	f := browserFixture{assigned: map[string][]string{}}
	pods := []string{"validator-0", "validator-1", "validator-2"}
	fillAssigned(t, s, 0xc0, pods, 3, fixtureNow) // derived, m/12381/3600/0..8/0/0
	for _, pod := range pods {
		if err := s.ListKeys(ctx, store.ListOptions{Pod: pod}, func(k store.Key) error {
			f.assigned[pod] = append(f.assigned[pod], k.Pubkey.String())
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	// The pool: random and imported keys; one goes to quarantine, one is
	// retired.
	pool := newKeys(0xd0, 0, 4)
	for i := range pool {
		pool[i].Origin, pool[i].HasDerivationIndex, pool[i].DerivationIndex = store.OriginRandom, false, 0
	}
	pool[3].Origin = store.OriginImported
	if err := s.AddKeys(ctx, pool, store.StateAvailable, fixtureNow); err != nil {
		t.Fatal(err)
	}
	f.available, f.quarantined, f.retired, f.imported = pool[0].Pubkey, pool[1].Pubkey, pool[2].Pubkey, pool[3].Pubkey
	later := fixtureNow.Add(time.Minute)
	if n, err := s.Quarantine(ctx, []store.Pubkey{f.quarantined}, "seen signing at slot 4242 after its release", later); err != nil || n != 1 {
		t.Fatalf("quarantine: %d, %v", n, err)
	}
	if err := s.Retire(ctx, f.retired, "slashed <b>on chain</b>", later); err != nil {
		t.Fatal(err)
	}
	// Minted for validator-3, deposits on their way: one sent, one failed.
	minted := newKeys(0xe0, 20, 2)
	if err := s.AddPending(ctx, store.AddParams{Pod: "validator-3", PodUID: "uid-validator-3", Want: 2, Keys: minted, Now: later}); err != nil {
		t.Fatal(err)
	}
	f.pending, f.failed = minted[0].Pubkey, minted[1].Pubkey
	for i := range f.txHash {
		f.txHash[i] = byte(0x70 + i)
	}
	if err := s.SetDepositTx(ctx, f.pending, store.DepositTx{Nonce: 7, Hash: f.txHash, Raw: []byte{0x02, 0xf8}}, later); err != nil {
		t.Fatal(err)
	}
	if err := s.FailDeposit(ctx, f.failed, "deposit transaction reverted in block 77", later); err != nil {
		t.Fatal(err)
	}
	// The beacon node's word about one key of validator-0.
	pk0, err := store.ParsePubkey(f.assigned["validator-0"][0])
	if err != nil {
		t.Fatal(err)
	}
	lc, ok := s.(store.Lifecycle)
	if !ok {
		t.Fatal("the bbolt store keeps no validator readings")
	}
	far := ^uint64(0)
	if _, err := lc.RecordValidators(ctx, []store.ValidatorReading{{Pubkey: pk0, Status: store.ValidatorStatus{
		Index: 17, Status: "active_ongoing", Balance: 32e9, ActivationEpoch: 1, ExitEpoch: far, Epoch: 9, At: later,
	}}}, later); err != nil {
		t.Fatal(err)
	}
	return f
}

// pageView is what the page's DOM shows, as Chromium laid it out.
type pageView struct {
	Elements map[string]*elementView `json:"elements"`
	Rows     []struct {
		Class string   `json:"cls"`
		Cells []string `json:"cells"`
	} `json:"rows"`
	Pods    [][]string `json:"pods"`
	Hexes   []hexView  `json:"hexes"`
	Next    string     `json:"next"`
	Prev    string     `json:"prev"`
	Width   float64    `json:"width"`
	Height  float64    `json:"height"`
	Refresh string     `json:"refresh"`
	// KeysBox is the width of the keys table's scrolling box.
	KeysBox float64 `json:"keysBox"`
}

type elementView struct {
	Visible bool    `json:"visible"`
	Text    string  `json:"text"`
	X       float64 `json:"x"`
	Y       float64 `json:"y"`
	W       float64 `json:"w"`
	H       float64 `json:"h"`
}

func (e *elementView) rect() rect { return rect{X: e.X, Y: e.Y, W: e.W, H: e.H} }

// hexView is one public key or transaction hash as laid out.
type hexView struct {
	Title  string  `json:"title"`
	Text   string  `json:"text"`
	Height float64 `json:"h"`
	Line   float64 `json:"line"`
	Rects  int     `json:"rects"`
	Wrap   string  `json:"wrap"`
}

// pageSelectors are the elements each rendering must show.
var pageSelectors = map[string]string{
	"title":           "h1",
	"network":         "#network dl.network",
	"states":          "#states ul.counts",
	"count-available": "#states li.available",
	"count-retired":   "#states li.retired",
	"filter":          "form",
	"state-filter":    "form input[name=state][value=available]",
	"status-filter":   "form select[name=status]",
	"refresh-control": "form select[name=refresh]",
	"page-size":       "form select[name=per_page]",
	"pods":            "table.pods",
	"keys":            "table.keys",
	"pager":           "#keys-pager nav.pager",
	"row-available":   "table.keys tr.available",
	"row-assigned":    "table.keys tr.assigned",
	"row-pending":     "table.keys tr.pending-deposit",
	"row-retired":     "table.keys tr.retired",
	"row-failed":      "table.keys tr.deposit-failed",
	"row-quarantined": "table.keys tr.still-signing",
	"pending-tx":      "table.keys tr.pending-deposit td.deposit code.hex",
	"release-blocked": "table.keys small.release-blocked",
	"validator":       "table.keys tr.assigned td:last-child",
}

// inspectJS returns the page as a pageView, JSON-encoded by the browser.
func inspectJS(selectors map[string]string) string {
	var b strings.Builder
	b.WriteString("(() => {\nconst sel = {")
	for name, s := range selectors {
		fmt.Fprintf(&b, "%q: %q,", name, s)
	}
	b.WriteString(`};
const box = el => { const r = el.getBoundingClientRect(); return {x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height}; };
const elements = {};
for (const [name, s] of Object.entries(sel)) {
  const el = document.querySelector(s);
  if (!el) { elements[name] = null; continue; }
  const b = box(el);
  elements[name] = {visible: el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true}) && b.w > 0 && b.h > 0, text: el.innerText || el.value || "", ...b};
}
const rows = [...document.querySelectorAll("table.keys tbody tr")].map(tr => ({cls: tr.className, cells: [...tr.cells].map(td => td.innerText)}));
const pods = [...document.querySelectorAll("table.pods tbody tr")].map(tr => [...tr.cells].map(td => td.innerText));
const hexes = [...document.querySelectorAll("code.hex")].map(c => ({title: c.title, text: c.textContent, h: c.getBoundingClientRect().height,
  line: parseFloat(getComputedStyle(c).fontSize), rects: c.getClientRects().length, wrap: getComputedStyle(c.querySelector(".h")).whiteSpace}));
const link = rel => { const a = document.querySelector("#keys-pager a[rel=" + rel + "]"); return a ? a.href : ""; };
const meta = document.querySelector("meta[http-equiv=refresh]");
const scroller = document.querySelector("table.keys") && document.querySelector("table.keys").parentElement;
return {keysBox: scroller ? scroller.clientWidth : 0, elements, rows, pods, hexes, next: link("next"), prev: link("prev"),
  width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight, refresh: meta ? meta.content : ""};
})()`)
	return b.String()
}

// TestAssignmentsPageInChromium renders /assignments from a real bbolt
// store with keys in every state in headless Chromium (DevTools protocol)
// and checks what a person sees: the network header, counts, the per-pod
// summary, rows of available, assigned, pending-deposit (with its deposit
// transaction), retired, deposit-failed and quarantined keys with their
// reasons, a release-blocked pod, the validator column, public keys on one
// line, pagination and auto-refresh (which reloads the page). Screenshots of the parts are checked
// for size and content.
func TestAssignmentsPageInChromium(t *testing.T) {
	bin := chromiumOrSkip(t)
	s := openBolt(t, t.TempDir())
	defer s.Close()
	f := fillBrowserStore(t, s)
	srv := httptest.NewServer(NewHandler(Config{
		Allocator: &fakeAllocator{}, Keys: s, Logger: quietLogger(t), Validators: s.(ValidatorReader),
		ReleaseBlocked: func() map[string]string {
			return map[string]string{"validator-1": "node-not-ready: pod validator-1 is on a NotReady node"}
		},
		Network: Network{Name: "devnet", GenesisForkVersion: "0x10000038", ChainID: "1337",
			DepositContract: "0x4242424242424242424242424242424242424242", Deposits: "chain", Confirmations: 2},
	}))
	defer srv.Close()
	d := startDevtools(t, bin, 1280, 900)
	shots := t.TempDir()
	if dir := os.Getenv("HTTPAPI_SCREENSHOT_DIR"); dir != "" {
		shots = dir
	}

	d.navigate(srv.URL + "/assignments")
	var v pageView
	d.eval(inspectJS(pageSelectors), &v)
	for name := range pageSelectors {
		e := v.Elements[name]
		if e == nil || !e.Visible {
			t.Errorf("%s (%s) is not visible: %+v", name, pageSelectors[name], e)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	// The store holds every key's secret (the marker, sealed as given):
	// the rendered document shows none of it, nor the signed deposit
	// transaction.
	var dom string
	d.eval("document.documentElement.outerHTML", &dom)
	assertNoSecret(t, "Chromium DOM", []byte(dom))
	if strings.Contains(dom, "02f8") {
		t.Error("the DOM shows the raw deposit transaction")
	}
	text := func(name string) string { return v.Elements[name].Text }
	for name, want := range map[string][]string{
		"title":           {"Key assignments"},
		"network":         {"devnet", "0x10000038", "1337", "0x4242424242424242424242424242424242424242", "chain (2 confirmations)"},
		"count-available": {"2", "available"},
		"count-retired":   {"1", "retired"},
		"pager":           {"1–15 of 15", "page 1 of 1"},
		"row-available":   {f.available.String(), "available", "minted", "random"},
		"row-pending":     {"validator-3", "(intended)", f.pending.String(), "derived", "m/12381/3600/20/0/0", fmt.Sprintf("0x%x", f.txHash), "sent"},
		"row-failed":      {"validator-3", f.failed.String(), "deposit transaction reverted in block 77"},
		"row-retired":     {"(no pod)", f.retired.String(), "slashed <b>on chain</b>"},
		"row-quarantined": {f.quarantined.String(), "still-signing", "seen signing at slot 4242 after its release"},
		"release-blocked": {"(release-blocked: node-not-ready)"},
		"validator":       {"active_ongoing", "#17"},
	} {
		for _, w := range want {
			if !strings.Contains(text(name), w) {
				t.Errorf("%s shows %q, want %q in it", name, text(name), w)
			}
		}
	}
	// Every key in one row, each assigned key with its pod.
	if len(v.Rows) != 15 {
		t.Errorf("%d key rows, want 15", len(v.Rows))
	}
	for pod, keys := range f.assigned {
		for _, key := range keys {
			if !slices.ContainsFunc(v.Rows, func(r struct {
				Class string   `json:"cls"`
				Cells []string `json:"cells"`
			}) bool {
				return r.Class == "assigned" && strings.HasPrefix(r.Cells[0], pod) && r.Cells[1] == key
			}) {
				t.Errorf("no row shows pod %s with key %s", pod, key)
			}
		}
	}
	// The per-pod summary: pod, keys, assigned, states.
	wantPods := map[string][]string{
		"(no pod)":    {"(no pod)", "4", "0", "available 2 · retired 1 · still-signing 1"},
		"validator-0": {"validator-0", "3", "3", "assigned 3"},
		"validator-1": {"validator-1 (release-blocked: node-not-ready)", "3", "3", "assigned 3"},
		"validator-3": {"validator-3", "2", "0", "pending-deposit 1 · deposit-failed 1"},
	}
	for _, want := range wantPods {
		if !slices.ContainsFunc(v.Pods, func(row []string) bool { return slices.Equal(row, want) }) {
			t.Errorf("pods summary %q lacks the row %q", v.Pods, want)
		}
	}
	if len(v.Pods) != 5 {
		t.Errorf("pods summary has %d rows, want 5: %q", len(v.Pods), v.Pods)
	}
	// Public keys and hashes never wrap; the whole value is in the text
	// and the title.
	if len(v.Hexes) != 15+1 {
		t.Errorf("%d hex values, want 15 keys and 1 deposit transaction", len(v.Hexes))
	}
	for _, h := range v.Hexes {
		if h.Rects != 1 || h.Height > 2*h.Line || h.Wrap != "nowrap" {
			t.Errorf("%s wraps: %d boxes, %.1f px high at %.1f px type, white-space %s", h.Title, h.Rects, h.Height, h.Line, h.Wrap)
		}
		if h.Title != h.Text || !strings.HasPrefix(h.Title, "0x") || (len(h.Title) != 98 && len(h.Title) != 66) {
			t.Errorf("hex value title %q text %q: want the whole value in both", h.Title, h.Text)
		}
	}
	if k := v.Elements["keys"]; k.W > v.KeysBox+1 {
		t.Errorf("the keys table is %.0f px wide in a %.0f px box: columns are cut off", k.W, v.KeysBox)
	}
	if v.Width > 1280+1 {
		t.Errorf("the page is %.0f px wide in a 1280 px window: something does not fit", v.Width)
	}
	if v.Refresh != "" {
		t.Errorf("auto-refresh is on by default (%q)", v.Refresh)
	}

	// Screenshots of the page and its parts: each the element's size and
	// not blank.
	full, img := d.screenshot(rect{W: 1280, H: v.Height})
	checkScreenshot(t, "page", img, rect{W: 1280, H: v.Height}, 8)
	writeShot(t, shots, "assignments.png", full)
	for _, name := range []string{"network", "states", "pods", "row-pending", "row-quarantined", "pager"} {
		r := v.Elements[name].rect()
		b, img := d.screenshot(r)
		checkScreenshot(t, name, img, r, 3)
		writeShot(t, shots, "assignments-"+name+".png", b)
	}

	// Pages of 5, by public key: three pages, next and previous links that
	// keep the query, no key twice.
	d.navigate(srv.URL + "/assignments?sort=pubkey&per_page=5&refresh=30")
	seen := map[string]bool{}
	for page := 1; ; page++ {
		var pv pageView
		d.eval(inspectJS(map[string]string{"pager": "#keys-pager nav.pager", "top": "#keys-pager-top nav.pager", "refresh": "p.meta span.refresh"}), &pv)
		for _, name := range []string{"pager", "top", "refresh"} {
			if e := pv.Elements[name]; e == nil || !e.Visible {
				t.Fatalf("page %d: %s not visible", page, name)
			}
		}
		wantRange := fmt.Sprintf("%d–%d of 15", (page-1)*5+1, min(page*5, 15))
		if pt := pv.Elements["pager"].Text; !strings.Contains(pt, wantRange) || !strings.Contains(pt, fmt.Sprintf("page %d of 3", page)) {
			t.Errorf("page %d: pager %q, want %q", page, pt, wantRange)
		}
		if pv.Refresh != "30" || !strings.Contains(pv.Elements["refresh"].Text, "every 30 s") {
			t.Errorf("page %d: refresh %q, %q", page, pv.Refresh, pv.Elements["refresh"].Text)
		}
		if len(pv.Rows) != 5 {
			t.Errorf("page %d: %d rows", page, len(pv.Rows))
		}
		prev := ""
		for _, r := range pv.Rows {
			if seen[r.Cells[1]] {
				t.Errorf("page %d shows %s again", page, r.Cells[1])
			}
			if r.Cells[1] <= prev {
				t.Errorf("page %d: %s after %s, want public-key order", page, r.Cells[1], prev)
			}
			seen[r.Cells[1]], prev = true, r.Cells[1]
		}
		if page > 1 && pv.Prev == "" {
			t.Errorf("page %d has no previous link", page)
		}
		if page == 2 {
			b, img := d.screenshot(pv.Elements["pager"].rect())
			checkScreenshot(t, "pager page 2", img, pv.Elements["pager"].rect(), 3)
			writeShot(t, shots, "assignments-page2-pager.png", b)
		}
		if pv.Next == "" {
			if page != 3 {
				t.Errorf("no next link on page %d of 3", page)
			}
			break
		}
		if !strings.Contains(pv.Next, "per_page=5") || !strings.Contains(pv.Next, "sort=pubkey") || !strings.Contains(pv.Next, "refresh=30") {
			t.Errorf("next link %q drops the query", pv.Next)
		}
		if page > 3 {
			t.Fatal("more than 3 pages")
		}
		d.navigate(pv.Next)
	}
	if len(seen) != 15 {
		t.Errorf("the pages showed %d keys, want all 15", len(seen))
	}

	// The state filter shows the states the default view mixes in.
	d.navigate(srv.URL + "/assignments?state=available&state=retired")
	var fv pageView
	d.eval(inspectJS(map[string]string{"keys": "table.keys"}), &fv)
	var states []string
	for _, r := range fv.Rows {
		states = append(states, r.Class)
	}
	slices.Sort(states)
	if !slices.Equal(states, []string{"available", "available", "retired"}) {
		t.Errorf("?state=available&state=retired shows %v", states)
	}

	// Auto-refresh reloads the page by itself (a meta refresh: the page
	// has no script), after the interval.
	d.navigate(srv.URL + "/assignments?refresh=5")
	loaded := time.Now()
	d.waitEvent("Page.loadEventFired")
	if dt := time.Since(loaded); dt < 4*time.Second {
		t.Errorf("the page reloaded after %v, want about 5 s", dt)
	}
}

func writeShot(t *testing.T, dir, name string, b []byte) {
	t.Helper()
	if len(b) < 200 {
		t.Errorf("screenshot %s: %d bytes", name, len(b))
	}
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		t.Error(err)
	}
}
