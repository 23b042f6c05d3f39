package redact

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"/var/lib/pkmanager/pkmanager.db", "/var/lib/pkmanager/pkmanager.db"},
		{"bolt:///var/lib/pk.db", "bolt:///var/lib/pk.db"},
		{"postgres://pkm@db:5432/pk?sslmode=require", "postgres://pkm@db:5432/pk?sslmode=require"},
		{"postgres://pkm:pw@db/pk", "postgres://pkm:xxxxx@db/pk"},
		{"postgresql://pkm:pw@db/pk?password=p2&sslpassword=p3&search_path=s1&pool_max_conns=4&connect_timeout=2",
			"postgresql://pkm:xxxxx@db/pk?password=xxxxx&sslpassword=xxxxx&search_path=s1&pool_max_conns=4&connect_timeout=2"},
		{"postgres://db/pk?passfile=/etc/pgpass&application_name=x", "postgres://db/pk?passfile=/etc/pgpass&application_name=x"},
		{"https://mainnet.infura.io/v3/0123456789abcdef", "https://mainnet.infura.io/..."},
		{"http://127.0.0.1:8545", "http://127.0.0.1:8545"},
		{"http://127.0.0.1:8545/", "http://127.0.0.1:8545/"},
		{"wss://eth.example/ws/KEY?apikey=K2&x", "wss://eth.example/...?apikey=xxxxx&xxxxx"},
		{"https://KEY@eth.example/", "https://xxxxx@eth.example/"},
		{"https://user:KEY@eth.example/#frag", "https://xxxxx@eth.example/#xxxxx"},
		{"postgres://pkm:Sup3r@[::1/pk", "postgres://(unparseable URL)"},
		{"host=db user=pkm password=Sup3r sslpassword='a b'", "host=db user=pkm password=xxxxx sslpassword=xxxxx"},
	} {
		if got := URL(tc.in); got != tc.want {
			t.Errorf("URL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestStringHidesRememberedSecrets(t *testing.T) {
	Remember("postgres://pkm:RememberPw1@db:5432/pk?password=RememberPw2&sslmode=disable")
	Remember("https://node.example/v3/RememberKey3?apikey=RememberKey4")
	Secret("RememberPw5")
	Secret("ab") // too short to replace by text
	in := `failed: password RememberPw1 or RememberPw2 for "https://node.example/v3/RememberKey3?apikey=RememberKey4": ` +
		`RememberPw5 is wrong; Post "http://10.0.0.1:8545/LiteralKey6?k=LiteralKey7": dial tcp: refused. ab ok`
	got := String(in)
	for _, s := range []string{"RememberPw1", "RememberPw2", "RememberKey3", "RememberKey4", "RememberPw5", "LiteralKey6", "LiteralKey7"} {
		if strings.Contains(got, s) {
			t.Errorf("String shows %s: %s", s, got)
		}
	}
	if !strings.Contains(got, "http://10.0.0.1:8545/...?k=xxxxx") || !strings.HasSuffix(got, "refused. ab ok") {
		t.Errorf("String = %s", got)
	}
}

func TestErrorKeepsChain(t *testing.T) {
	Secret("ChainSecret8")
	base := fmt.Errorf("open ChainSecret8: %w", fs.ErrNotExist)
	err := Error(fmt.Errorf("wrapped: %w", base))
	if strings.Contains(err.Error(), "ChainSecret8") || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Error = %v (is ErrNotExist: %v)", err, errors.Is(err, fs.ErrNotExist))
	}
	if Error(fs.ErrNotExist) != fs.ErrNotExist {
		t.Error("Error changed an error with nothing to hide")
	}
	if Error(nil) != nil {
		t.Error("Error(nil) != nil")
	}
}

type stringer struct{ s string }

func (s stringer) String() string { return s.s }

func TestHandler(t *testing.T) {
	Secret("HandlerSecret9")
	var buf bytes.Buffer
	l := Logger(slog.New(slog.NewJSONHandler(&buf, nil)))
	if Logger(l) != l {
		t.Error("Logger wrapped twice")
	}
	l = l.With("store", "postgres://u:HandlerSecret9@h/db")
	l.WithGroup("g").Error("msg HandlerSecret9", slog.Any("error", errors.New("e HandlerSecret9")),
		slog.Any("v", stringer{"HandlerSecret9"}), slog.Group("sub", slog.String("url", "https://h/KeyInGroup10")), slog.Int("n", 1))
	if out := buf.String(); strings.Contains(out, "HandlerSecret9") || strings.Contains(out, "KeyInGroup10") || !strings.Contains(out, `"n":1`) {
		t.Errorf("log line shows a secret: %s", out)
	}
}
