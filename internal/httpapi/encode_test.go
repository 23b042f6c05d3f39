package httpapi

import (
	"encoding/json"
	"html/template"
	"slices"
	"strings"
	"testing"
	"time"
)

var trickyStrings = []string{
	"", "validator-0", `"quoted"`, `back\slash`, "tab\tnew\nline\rcr\bbs\fff",
	"\x00\x01\x1f\x7f", "<script>&</script>", "ünïcödé ✓ 🙂", "\u2028\u2029",
	"bad utf8 \xff\xfe end", "\xed\xa0\x80", "a+b='c'",
}

// FuzzAppendJSONString checks appendJSONString against encoding/json.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range trickyStrings {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendJSONString(nil, s); string(got) != string(want) {
			t.Errorf("appendJSONString(%q) = %s, encoding/json: %s", s, got, want)
		}
	})
}

// FuzzAppendHTML checks appendHTML against html/template's text escaping.
func FuzzAppendHTML(f *testing.F) {
	tmpl := template.Must(template.New("t").Parse(`<td title="{{.}}">{{.}}</td>`))
	for _, s := range trickyStrings {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var want strings.Builder
		if err := tmpl.Execute(&want, s); err != nil {
			t.Skip() // html/template rejects some invalid input
		}
		esc := string(appendHTML(nil, s))
		got := `<td title="` + esc + `">` + esc + `</td>`
		if got != want.String() {
			t.Errorf("appendHTML(%q):\n got %s\nwant %s", s, got, want.String())
		}
	})
}

func TestAppendTimestamp(t *testing.T) {
	for _, tm := range []time.Time{
		time.Date(2025, 3, 14, 9, 26, 53, 999_999_999, time.UTC),
		time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
		time.Date(2024, 2, 29, 23, 30, 0, 0, time.FixedZone("x", 5*3600+1800)),
		time.Date(10001, 1, 1, 0, 0, 0, 0, time.UTC),
	} {
		want := tm.UTC().Format("2006-01-02 15:04:05")
		if got := string(appendTimestamp(nil, tm)); got != want {
			t.Errorf("appendTimestamp(%v) = %q, want %q", tm, got, want)
		}
	}
}

func TestNaturalCompare(t *testing.T) {
	// Equal numbers tie-break by plain comparison ("a01" < "a1").
	want := []string{"", "a", "a0", "a01", "a1", "a2", "a10", "a10b", "a11", "b", "validator-2", "validator-010", "validator-10", "validator-100", "validator-a"}
	got := slices.Clone(want)
	slices.Reverse(got)
	slices.SortFunc(got, naturalCompare)
	if !slices.Equal(got, want) {
		t.Errorf("natural order\n%q\nwant\n%q", got, want)
	}
	for _, s := range want {
		if naturalCompare(s, s) != 0 {
			t.Errorf("naturalCompare(%q, itself) != 0", s)
		}
	}
}
