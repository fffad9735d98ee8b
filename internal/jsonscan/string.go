package jsonscan

import (
	"unicode/utf16"
	"unicode/utf8"
)

// Bytes reads a string and returns its contents, unescaped; without escapes
// the result aliases the document. It checks the JSON grammar (escapes, no
// control characters) but not that the contents are valid UTF-8, and an
// unpaired surrogate escape reads as U+FFFD: for values the caller only
// compares with names it knows, where the KV-event wire (serde) is as
// lenient.
func (s *Scanner) Bytes(field string) ([]byte, error) { return s.str(field, false) }

// String reads a string the caller keeps: as Bytes, and the contents must
// be valid UTF-8 with every surrogate escape paired.
func (s *Scanner) String(field string) (string, error) {
	b, err := s.str(field, true)
	return string(b), err
}

// str reads a string; strict also requires valid UTF-8 and paired
// surrogates.
func (s *Scanner) str(field string, strict bool) ([]byte, error) {
	s.ws()
	if s.pos >= len(s.data) {
		return nil, s.fail(Syntax, field, "unexpected end of input")
	}
	if s.data[s.pos] != '"' {
		return nil, s.fail(Type, field, "expected a string, found "+s.found())
	}
	s.pos++
	start := s.pos
	// Fast path: printable ASCII up to the closing quote, the shape of
	// every key and name the decoders read.
	d, i := s.data, s.pos
	for i < len(d) && plain[d[i]] {
		i++
	}
	if i < len(d) && d[i] == '"' {
		s.pos = i + 1
		return d[start:i], nil
	}
	s.pos = i
	escaped, ascii := false, true
	for {
		if s.pos >= len(s.data) {
			return nil, s.fail(Syntax, field, "unterminated string")
		}
		c := s.data[s.pos]
		switch {
		case c == '"':
			raw := s.data[start:s.pos]
			if strict && !ascii && !utf8.Valid(raw) {
				return nil, s.fail(Syntax, field, "not valid UTF-8")
			}
			s.pos++
			if !escaped {
				return raw, nil
			}
			out, ok := unescape(raw, strict)
			if !ok {
				return nil, failAt(s.pos-1, Syntax, field, `unpaired surrogate in a \u escape`)
			}
			return out, nil
		case c == '\\':
			escaped = true
			if s.pos+1 >= len(s.data) {
				return nil, s.fail(Syntax, field, "unterminated string")
			}
			switch s.data[s.pos+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.pos += 2
			case 'u':
				if s.pos+6 > len(s.data) || !isHex4(s.data[s.pos+2:s.pos+6]) {
					return nil, s.fail(Syntax, field, `invalid \u escape`)
				}
				s.pos += 6
			default:
				return nil, s.fail(Syntax, field, "invalid escape")
			}
		case c < 0x20:
			return nil, s.fail(Syntax, field, "control character in a string")
		default:
			if c >= utf8.RuneSelf {
				ascii = false
			}
			s.pos++
		}
	}
}

// plain marks the bytes a string can hold as they are, ASCII only: not a
// control character, not '"' or '\\'.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func isHex4(b []byte) bool {
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// hex4 decodes four hex digits already checked by isHex4.
func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case c <= '9':
			r = r<<4 | rune(c-'0')
		case c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			r = r<<4 | rune(c-'a'+10)
		}
	}
	return r
}

// unescape decodes the escapes of a string body already checked by str. An
// unpaired surrogate is U+FFFD, or with strict a failure (ok false).
func unescape(s []byte, strict bool) (out []byte, ok bool) {
	out = make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			out = append(out, s[i])
			continue
		}
		i++
		switch s[i] {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r := hex4(s[i+1:])
			i += 4
			if utf16.IsSurrogate(r) {
				paired := false
				if r < 0xDC00 && i+6 < len(s) && s[i+1] == '\\' && s[i+2] == 'u' {
					if lo := hex4(s[i+3:]); lo >= 0xDC00 && lo < 0xE000 {
						r = utf16.DecodeRune(r, lo)
						i += 6
						paired = true
					}
				}
				if !paired && strict {
					return nil, false
				}
			}
			out = utf8.AppendRune(out, r)
		default: // '"', '\\', '/'
			out = append(out, s[i])
		}
	}
	return out, true
}
