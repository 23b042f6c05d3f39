package httpapi

import (
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// GET /api/v1/keys?limit=N pages through a real bbolt store: the pages,
// followed by their Link headers, are the whole listing in order; the
// body keeps its shape.
func TestListKeysPages(t *testing.T) {
	h := newTestHandler(t, &fakeAllocator{}, boltWithPods(t), nil)
	var whole []string
	for _, k := range listKeysJSON(t, h, "") {
		whole = append(whole, k.Pubkey)
	}
	if len(whole) != 15 {
		t.Fatalf("whole listing has %d keys", len(whole))
	}
	for _, tt := range []struct {
		query string
		want  []string
	}{
		{"?limit=4", whole},
		{"?limit=1", whole},
		{"?limit=15", whole},
		{"?limit=100", whole},
		{"?limit=2&after=" + whole[12], whole[13:]},
		{"?limit=3&state=assigned", nil}, // checked against the unpaged filter below
	} {
		want := tt.want
		if want == nil {
			for _, k := range listKeysJSON(t, h, "?state=assigned") {
				want = append(want, k.Pubkey)
			}
		}
		var got []string
		target := "/api/v1/keys" + tt.query
		for range 100 {
			rec := do(t, h, "GET", target, "")
			if rec.Code != 200 {
				t.Fatalf("%s: %d %s", target, rec.Code, rec.Body)
			}
			var body struct {
				Keys []listedKey `json:"keys"`
			}
			dec := json.NewDecoder(rec.Body)
			dec.DisallowUnknownFields()
			if err := dec.Decode(&body); err != nil {
				t.Fatalf("%s: %v", target, err)
			}
			for _, k := range body.Keys {
				got = append(got, k.Pubkey)
			}
			link := rec.Header().Get("Link")
			if link == "" {
				break
			}
			ref, rel, _ := strings.Cut(link, ">; rel=")
			u, err := url.Parse(strings.TrimPrefix(ref, "<"))
			if err != nil || rel != `"next"` || u.Query().Get("limit") == "" {
				t.Fatalf("%s: Link %q", target, link)
			}
			target = "/api/v1/keys?" + u.RawQuery
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: pages give %d keys %v, want %d", tt.query, len(got), got, len(want))
		}
	}
	for _, bad := range []string{"?limit=0", "?limit=10001", "?limit=x", "?after=" + whole[0], "?limit=2&after=0x12"} {
		if rec := do(t, h, "GET", "/api/v1/keys"+bad, ""); rec.Code != 400 {
			t.Errorf("%s: %d, want 400", bad, rec.Code)
		}
	}
}
