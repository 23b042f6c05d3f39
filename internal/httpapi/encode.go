package httpapi

import (
	"encoding/hex"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/pkmanager/pkmanager/internal/store"
)

// This file holds the append-style encoders used on the hot paths (listings
// and the assignments page), where encoding/json and html/template cost too
// much per row for 100,000 keys. They follow the escaping rules of
// encoding/json and html/template and are tested against them.

const hexDigits = "0123456789abcdef"

// appendPubkey appends p as 0x-prefixed lower-case hex.
func appendPubkey(b []byte, p *store.Pubkey) []byte {
	b = append(b, '0', 'x')
	n := len(b)
	b = append(b, make([]byte, 2*store.PubkeyLength)...)
	hex.Encode(b[n:], p[:])
	return b
}

// appendJSONString appends s as a JSON string, escaped like encoding/json
// with HTML escaping on: quotes, backslashes, control characters, <, >, &,
// U+2028 and U+2029 are escaped, invalid UTF-8 becomes U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendJSONField appends "name":"value", preceded by a comma unless first.
// name must not need escaping.
func appendJSONField(b []byte, first bool, name, value string) []byte {
	if !first {
		b = append(b, ',')
	}
	b = append(b, '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendJSONString(b, value)
}

// appendJSONTime appends t in UTC as an RFC 3339 JSON string, like
// encoding/json does for time.Time.
func appendJSONTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// appendJSONInt appends n.
func appendJSONInt(b []byte, n int) []byte { return strconv.AppendInt(b, int64(n), 10) }

// htmlNeedsEscape marks the bytes html/template's HTML escaper replaces.
var htmlNeedsEscape = [256]bool{0: true, '"': true, '&': true, '\'': true, '+': true, '<': true, '>': true}

// appendHTML appends s escaped for HTML text and quoted attribute values
// with the same replacements as html/template: NUL, ", &, ', +, < and >.
// Everything else, including non-ASCII text, is copied as is.
func appendHTML(b []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !htmlNeedsEscape[c] {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case 0:
			b = append(b, "\uFFFD"...)
		case '"':
			b = append(b, "&#34;"...)
		case '&':
			b = append(b, "&amp;"...)
		case '\'':
			b = append(b, "&#39;"...)
		case '+':
			b = append(b, "&#43;"...)
		case '<':
			b = append(b, "&lt;"...)
		case '>':
			b = append(b, "&gt;"...)
		}
		start = i + 1
	}
	return append(b, s[start:]...)
}

// appendTimestamp appends t in UTC as "2006-01-02 15:04:05", much faster
// than time.Format. Years outside 0..9999 fall back to time.AppendFormat.
func appendTimestamp(b []byte, t time.Time) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.AppendFormat(b, "2006-01-02 15:04:05")
	}
	hour, minute, sec := t.Clock()
	return append(b,
		byte('0'+year/1000), byte('0'+year/100%10), byte('0'+year/10%10), byte('0'+year%10), '-',
		byte('0'+int(month)/10), byte('0'+int(month)%10), '-',
		byte('0'+day/10), byte('0'+day%10), ' ',
		byte('0'+hour/10), byte('0'+hour%10), ':',
		byte('0'+minute/10), byte('0'+minute%10), ':',
		byte('0'+sec/10), byte('0'+sec%10))
}
