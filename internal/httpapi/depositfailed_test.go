package httpapi

import (
	"strings"
	"testing"
	"time"

	"github.com/pkmanager/pkmanager/internal/store"
)

// Keys whose deposit failed are shown on the HTML page with the pod they
// were meant for (or "(no pod)") and the reason, escaped; the text and JSON
// representations list pods' keys only and leave them out.
func TestAssignmentsDepositFailed(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	keys := []store.Key{
		{Pubkey: pk(0xaa, 1), State: store.StateAssigned, Pod: "validator-1", LastPod: "validator-1", Since: t0},
		{Pubkey: pk(0xaa, 2), State: store.StateDepositFailed, LastPod: "validator-1", Since: t0,
			RetiredReason: "deposit transaction 0x12 reverted in block 7 <script>"},
		{Pubkey: pk(0xaa, 3), State: store.StateDepositFailed, Since: t0, RetiredReason: "simulation reverted"},
	}
	h := pageHandler(t, keys)
	body := do(t, h, "GET", "/assignments", "").Body.String()
	for _, want := range []string{
		`<tr class="deposit-failed"><td class="pod">validator-1 <small>(intended)</small></td><td class="pk"><code class="hex" title="` + hexKey(2) + `">`,
		`deposit-failed <small class="reason">deposit transaction 0x12 reverted in block 7 &lt;script&gt;</small>`,
		`<tr class="deposit-failed"><td class="pod">(no pod)</td><td class="pk"><code class="hex" title="` + hexKey(3) + `">`,
		`simulation reverted`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(body, "<script>") {
		t.Error("reason not escaped")
	}
	for _, f := range []string{"text", "json"} {
		if b := do(t, h, "GET", "/assignments?format="+f, "").Body.String(); strings.Contains(b, hexKey(2)) || strings.Contains(b, hexKey(3)) {
			t.Errorf("%s representation lists failed deposits: %s", f, b)
		}
	}
}
