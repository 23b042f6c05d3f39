// Package redact keeps secrets out of everything pkmanager prints: banners,
// logs, error messages and API answers. It is the one place of the rules:
//
//   - URL shows a store or execution-node URL without its secrets: the
//     password of the user information (all of it for URLs other than
//     PostgreSQL's, where providers put API keys), every query value but
//     those of a known-safe list (sslmode, search_path, application_name,
//     connect_timeout, pool_*, ...), the fragment, and for URLs other than
//     store URLs (bolt, postgres) the path, which execution-node providers
//     use for API keys ("https://host/v3/KEY" becomes "https://host/...").
//   - Remember and Secret record the secrets of this process's
//     configuration (the passwords and keys in its URLs, a password read
//     from a passfile or PGPASSWORD); String and Error replace each of them
//     wherever it appears, redact every URL in the text as URL does, and
//     hide password=... settings of connection strings. Handler applies the
//     same to every log record.
//
// Errors of libraries (pgx, go-ethereum's RPC client, net/http) may quote a
// URL or connection string; they are scrubbed where they leave the store or
// the chain client, and again by the log handler and the API error writers.
package redact

import (
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Mask replaces what is hidden.
const Mask = "xxxxx"

// minSecret is the shortest secret String replaces by text: shorter ones
// would blank out ordinary words of every message (and protect nothing).
// URL hides them by position all the same.
const minSecret = 4

// safeQuery are the query parameters whose values are shown: PostgreSQL
// settings that say how to connect, never with what.
var safeQuery = map[string]bool{
	"sslmode": true, "sslrootcert": true, "sslcert": true, "sslkey": true, "sslsni": true,
	"sslnegotiation": true, "search_path": true, "application_name": true, "connect_timeout": true,
	"target_session_attrs": true, "statement_cache_capacity": true, "description_cache_capacity": true,
	"default_query_exec_mode": true, "client_encoding": true, "timezone": true, "passfile": true,
	"host": true, "port": true, "dbname": true, "user": true, "min_read_buffer_size": true,
	"tcp_keepalives_idle": true, "tcp_keepalives_interval": true, "tcp_keepalives_count": true,
}

// safeKey reports whether the value of query parameter k may be shown.
func safeKey(k string) bool {
	k = strings.ToLower(k)
	return safeQuery[k] || strings.HasPrefix(k, "pool_")
}

// storeScheme reports whether the path of a URL with this scheme names a
// database or file (shown) rather than anything else (hidden).
func storeScheme(scheme string) bool {
	switch strings.ToLower(scheme) {
	case "postgres", "postgresql", "bolt", "bbolt", "file":
		return true
	}
	return false
}

func isPostgres(scheme string) bool {
	s := strings.ToLower(scheme)
	return s == "postgres" || s == "postgresql"
}

// URL returns raw fit for output (see the package documentation). A string
// without "://" is a file path and is returned as it is, except for the
// password settings of a key=value connection string. A URL that does not
// parse is shown up to its scheme.
func URL(raw string) string {
	if raw == "" {
		return ""
	}
	i := strings.Index(raw, "://")
	if i < 0 {
		return hideSettings(raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		if i > 0 && !strings.ContainsAny(raw[:i], "@:/?#") {
			return raw[:i] + "://(unparseable URL)"
		}
		return "(unparseable URL)"
	}
	var b strings.Builder
	b.WriteString(u.Scheme)
	b.WriteString("://")
	if u.User != nil {
		if isPostgres(u.Scheme) {
			b.WriteString(url.PathEscape(u.User.Username()))
			if _, ok := u.User.Password(); ok {
				b.WriteString(":" + Mask)
			}
		} else {
			b.WriteString(Mask)
		}
		b.WriteByte('@')
	}
	b.WriteString(u.Host)
	switch {
	case u.Opaque != "":
		b.WriteString("/...")
	case storeScheme(u.Scheme):
		b.WriteString(u.EscapedPath())
	case u.Path != "" && u.Path != "/":
		b.WriteString("/...")
	case u.Path == "/":
		b.WriteByte('/')
	}
	if u.RawQuery != "" || u.ForceQuery {
		b.WriteByte('?')
		for j, kv := range strings.Split(u.RawQuery, "&") {
			if j > 0 {
				b.WriteByte('&')
			}
			k, v, hasValue := strings.Cut(kv, "=")
			key, err := url.QueryUnescape(k)
			if err != nil {
				key = k
			}
			if !safeKey(key) {
				// The name too may be the secret (?KEY).
				if !hasValue {
					b.WriteString(Mask)
					continue
				}
				v = Mask
			}
			b.WriteString(k)
			if hasValue {
				b.WriteByte('=')
				b.WriteString(v)
			}
		}
	}
	if u.Fragment != "" {
		b.WriteString("#" + Mask)
	}
	return b.String()
}

// settingRE matches the password settings of a key=value connection string
// (and of a query string): password=..., sslpassword='...'.
var settingRE = regexp.MustCompile(`(?i)\b((?:ssl)?password)(\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&'"` + "`" + `,;)]+)`)

func hideSettings(s string) string {
	if !strings.Contains(strings.ToLower(s), "password") {
		return s
	}
	return settingRE.ReplaceAllString(s, "${1}${2}"+Mask)
}

// urlRE matches URLs in running text, up to white space or a quote.
var urlRE = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.\-]*://[^\s"'<>` + "`" + `]+`)

// secrets holds every secret remembered so far, longest first (a secret
// that contains another is replaced whole).
var (
	mu      sync.Mutex
	secrets atomic.Pointer[[]string]
)

// Secret remembers secrets (a password, an API key) for String and Error.
// Empty and very short ones are ignored.
func Secret(ss ...string) {
	var add []string
	for _, s := range ss {
		if len(s) >= minSecret {
			add = append(add, s)
			if e := url.QueryEscape(s); e != s {
				add = append(add, e)
			}
			if e := url.PathEscape(s); e != s {
				add = append(add, e)
			}
		}
	}
	if len(add) == 0 {
		return
	}
	mu.Lock()
	defer mu.Unlock()
	var cur []string
	if p := secrets.Load(); p != nil {
		cur = *p
	}
	next := slices.Clone(cur)
	for _, s := range add {
		if !slices.Contains(next, s) {
			next = append(next, s)
		}
	}
	if len(next) == len(cur) {
		return
	}
	slices.SortFunc(next, func(a, b string) int { return len(b) - len(a) })
	secrets.Store(&next)
}

// Remember remembers the secrets in a URL or connection string: what URL
// hides (the password, or all of the user information of a URL other than
// PostgreSQL's; query values outside the safe list; the path segments of a
// URL other than a store's; the fragment), and password settings of a
// key=value connection string.
func Remember(raw string) {
	if raw == "" {
		return
	}
	if !strings.Contains(raw, "://") {
		for _, m := range settingRE.FindAllStringSubmatch(raw, -1) {
			Secret(strings.Trim(m[3], "'"))
		}
		return
	}
	u, err := url.Parse(raw)
	if err != nil {
		// Nothing can be told apart: the whole string is the secret.
		Secret(raw)
		return
	}
	var ss []string
	if u.User != nil {
		if pw, ok := u.User.Password(); ok {
			ss = append(ss, pw)
		}
		if !isPostgres(u.Scheme) {
			ss = append(ss, u.User.Username(), u.User.String())
		}
	}
	for _, kv := range strings.Split(u.RawQuery, "&") {
		k, v, hasValue := strings.Cut(kv, "=")
		key, _ := url.QueryUnescape(k)
		if safeKey(key) {
			continue
		}
		if !hasValue {
			ss = append(ss, key, k)
			continue
		}
		dv, err := url.QueryUnescape(v)
		if err == nil {
			ss = append(ss, dv)
		}
		ss = append(ss, v)
	}
	if !storeScheme(u.Scheme) {
		ss = append(ss, u.Opaque)
		for _, seg := range strings.Split(u.EscapedPath(), "/") {
			if d, err := url.PathUnescape(seg); err == nil {
				ss = append(ss, d)
			}
			ss = append(ss, seg)
		}
	}
	ss = append(ss, u.Fragment)
	Secret(ss...)
}

// String returns s with every remembered secret replaced, every URL in it
// redacted as URL does, and password settings hidden.
func String(s string) string {
	if p := secrets.Load(); p != nil {
		for _, sec := range *p {
			if strings.Contains(s, sec) {
				s = strings.ReplaceAll(s, sec, Mask)
			}
		}
	}
	if strings.Contains(s, "://") {
		s = urlRE.ReplaceAllStringFunc(s, func(m string) string {
			// Punctuation after a URL in a sentence is not part of it.
			trail := len(m) - len(strings.TrimRight(m, ".,;:)]}"))
			return URL(m[:len(m)-trail]) + m[len(m)-trail:]
		})
	}
	return hideSettings(s)
}

// Error returns err with its message scrubbed as String does. It is err
// itself when there is nothing to hide; otherwise an error with the
// scrubbed message that unwraps to err, so errors.Is and errors.As see
// everything err wraps.
func Error(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	clean := String(msg)
	if clean == msg {
		return err
	}
	return &scrubbed{msg: clean, err: err}
}

type scrubbed struct {
	msg string
	err error
}

func (e *scrubbed) Error() string { return e.msg }
func (e *scrubbed) Unwrap() error { return e.err }
