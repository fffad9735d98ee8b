package service

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/kvrouter/router/metrics"
)

// This file is a small strict JSON scanner for the router's requests.
//
// Why not encoding/json: a route request carries the prompt, thousands of
// token ids, and encoding/json decodes a 3,840-token prompt in about
// 600 µs on the machines this router runs on, a hundred times the routing
// decision itself. The scanner below reads numbers straight into reusable
// slices, allocates only the strings it returns, and is strict where
// encoding/json is lenient: keys match exactly (case included), a key
// may not repeat, strings must be valid UTF-8, integers must be integers.
// FuzzDecodeRoute holds it to json.Valid and to a round trip.

// requestError is a request the router refuses: the reason label of
// dynamo_component_router_bad_requests_total and a message naming the
// field.
type requestError struct {
	reason string
	msg    string
}

func (e *requestError) Error() string { return e.msg }

// badRequest builds a requestError.
func badRequest(reason, format string, args ...any) error {
	return &requestError{reason: reason, msg: fmt.Sprintf(format, args...)}
}

// reasonOf returns the bad-request reason of err, malformed by default.
func reasonOf(err error) string {
	var re *requestError
	if errors.As(err, &re) {
		return re.reason
	}
	return metrics.BadRequestMalformed
}

// scanner reads one JSON value from data.
type scanner struct {
	data []byte
	pos  int
}

func (s *scanner) ws() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// peek returns the next byte after white space, or 0 at the end.
func (s *scanner) peek() byte {
	s.ws()
	if s.pos >= len(s.data) {
		return 0
	}
	return s.data[s.pos]
}

// syntax reports malformed JSON at the current position.
func (s *scanner) syntax(what string) error {
	if s.pos >= len(s.data) {
		return badRequest(metrics.BadRequestMalformed, "malformed JSON: %s, found the end of the request", what)
	}
	return badRequest(metrics.BadRequestMalformed, "malformed JSON at byte %d: %s, found %q", s.pos, what, s.data[s.pos])
}

// expect consumes byte c after white space.
func (s *scanner) expect(c byte) error {
	if s.peek() != c {
		return s.syntax(fmt.Sprintf("want %q", c))
	}
	s.pos++
	return nil
}

// end checks that nothing but white space follows the value.
func (s *scanner) end() error {
	if s.peek() != 0 {
		return s.syntax("want the end of the request")
	}
	return nil
}

// null consumes a null literal if one is next.
func (s *scanner) null() bool {
	if s.peek() == 'n' && s.literal("null") {
		return true
	}
	return false
}

// literal consumes lit if it is next.
func (s *scanner) literal(lit string) bool {
	if len(s.data)-s.pos < len(lit) || string(s.data[s.pos:s.pos+len(lit)]) != lit {
		return false
	}
	s.pos += len(lit)
	return true
}

// object reads an object, calling fn for each key with the scanner on its
// value; fn must consume the value. Keys may not repeat (seen collects
// them, sized by the caller).
func (s *scanner) object(fn func(key string) error) error {
	if err := s.expect('{'); err != nil {
		return err
	}
	if s.peek() == '}' {
		s.pos++
		return nil
	}
	var seen [16]string
	nseen := 0
	for {
		key, err := s.keyString()
		if err != nil {
			return err
		}
		for _, k := range seen[:nseen] {
			if k == key {
				return badRequest(metrics.BadRequestMalformed, "field %s appears twice", key)
			}
		}
		if nseen < len(seen) {
			seen[nseen] = key
			nseen++
		}
		if err := s.expect(':'); err != nil {
			return err
		}
		if err := fn(key); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.pos++
		case '}':
			s.pos++
			return nil
		default:
			return s.syntax("want ',' or '}'")
		}
	}
}

// keyString reads an object key; keys the router knows have no escapes,
// so one with escapes is returned decoded but will not match.
func (s *scanner) keyString() (string, error) {
	if s.peek() != '"' {
		return "", s.syntax("want a field name")
	}
	return s.str("field name")
}

// array reads an array, calling fn for each element with the scanner on
// it; fn must consume the element.
func (s *scanner) array(field string, fn func(i int) error) error {
	if s.peek() != '[' {
		return badRequest(metrics.BadRequestMalformed, "%s: want an array", field)
	}
	s.pos++
	if s.peek() == ']' {
		s.pos++
		return nil
	}
	for i := 0; ; i++ {
		if err := fn(i); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.pos++
		case ']':
			s.pos++
			return nil
		default:
			return s.syntax("want ',' or ']'")
		}
	}
}

// str reads a string value.
func (s *scanner) str(field string) (string, error) {
	if s.peek() != '"' {
		return "", badRequest(metrics.BadRequestMalformed, "%s: want a string", field)
	}
	s.pos++
	start := s.pos
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		switch {
		case c == '"':
			raw := s.data[start:s.pos]
			s.pos++
			if !utf8.Valid(raw) {
				return "", badRequest(metrics.BadRequestMalformed, "%s: not valid UTF-8", field)
			}
			return string(raw), nil
		case c == '\\':
			return s.escapedStr(field, start)
		case c < 0x20:
			return "", badRequest(metrics.BadRequestMalformed, "%s: control character in a string", field)
		}
		s.pos++
	}
	return "", s.syntax("unterminated string")
}

// escapedStr finishes a string that has escapes, from its first byte at
// start.
func (s *scanner) escapedStr(field string, start int) (string, error) {
	buf := append([]byte(nil), s.data[start:s.pos]...)
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		switch {
		case c == '"':
			s.pos++
			if !utf8.Valid(buf) {
				return "", badRequest(metrics.BadRequestMalformed, "%s: not valid UTF-8", field)
			}
			return string(buf), nil
		case c < 0x20:
			return "", badRequest(metrics.BadRequestMalformed, "%s: control character in a string", field)
		case c != '\\':
			buf = append(buf, c)
			s.pos++
			continue
		}
		if s.pos+1 >= len(s.data) {
			break
		}
		e := s.data[s.pos+1]
		s.pos += 2
		switch e {
		case '"', '\\', '/':
			buf = append(buf, e)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, ok := s.hex4()
			if !ok {
				return "", badRequest(metrics.BadRequestMalformed, "%s: bad \\u escape", field)
			}
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if s.literal(`\u`) {
					r2, _ = s.hex4()
				}
				r = utf16.DecodeRune(r, r2)
				if r == utf8.RuneError {
					return "", badRequest(metrics.BadRequestMalformed, "%s: bad surrogate pair", field)
				}
			}
			buf = utf8.AppendRune(buf, r)
		default:
			return "", badRequest(metrics.BadRequestMalformed, "%s: bad escape \\%c", field, e)
		}
	}
	return "", s.syntax("unterminated string")
}

// hex4 reads four hex digits.
func (s *scanner) hex4() (rune, bool) {
	if len(s.data)-s.pos < 4 {
		return 0, false
	}
	var r rune
	for _, c := range s.data[s.pos : s.pos+4] {
		switch {
		case '0' <= c && c <= '9':
			r = r<<4 | rune(c-'0')
		case 'a' <= c && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case 'A' <= c && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	s.pos += 4
	return r, true
}

// boolean reads true or false.
func (s *scanner) boolean(field string) (bool, error) {
	switch s.peek() {
	case 't':
		if s.literal("true") {
			return true, nil
		}
	case 'f':
		if s.literal("false") {
			return false, nil
		}
	}
	return false, badRequest(metrics.BadRequestMalformed, "%s: want true or false", field)
}

// number returns the extent of a JSON number at the current position and
// whether it is an integer (no fraction, no exponent), checking the
// grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) number(field string) (lit []byte, integer bool, err error) {
	s.ws()
	start, i, d := s.pos, s.pos, s.data
	digits := func() int {
		n := 0
		for i < len(d) && '0' <= d[i] && d[i] <= '9' {
			i++
			n++
		}
		return n
	}
	bad := func() ([]byte, bool, error) {
		return nil, false, badRequest(metrics.BadRequestMalformed, "%s: want a number", field)
	}
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case digits() == 0:
		return bad()
	}
	integer = true
	if i < len(d) && d[i] == '.' {
		i++
		if digits() == 0 {
			return bad()
		}
		integer = false
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if digits() == 0 {
			return bad()
		}
		integer = false
	}
	s.pos = i
	return d[start:i], integer, nil
}

// uint reads a non-negative integer no larger than limit.
func (s *scanner) uint(field string, limit uint64) (uint64, error) {
	s.ws()
	// Fast path: plain digits, the shape of nearly every token id and
	// hash: up to 20 digits, no leading zero, followed by a delimiter.
	i, d := s.pos, s.data
	var v uint64
	overflow := false
	for ; i < len(d) && '0' <= d[i] && d[i] <= '9'; i++ {
		digit := uint64(d[i] - '0')
		if v > (math.MaxUint64-digit)/10 {
			overflow = true
			break
		}
		v = v*10 + digit
	}
	if !overflow && i > s.pos && i < len(d) && (d[s.pos] != '0' || i == s.pos+1) {
		switch d[i] {
		case '.', 'e', 'E':
		default:
			s.pos = i
			if v > limit {
				return 0, badRequest(metrics.BadRequestOutOfRange, "%s: %d is out of range (allowed 0..%d)", field, v, limit)
			}
			return v, nil
		}
	}
	lit, integer, err := s.number(field)
	if err != nil {
		return 0, err
	}
	if !integer || lit[0] == '-' {
		return 0, badRequest(metrics.BadRequestOutOfRange, "%s: %s is not a non-negative integer", field, lit)
	}
	v, err = strconv.ParseUint(string(lit), 10, 64)
	if err != nil || v > limit {
		return 0, badRequest(metrics.BadRequestOutOfRange, "%s: %s is out of range (allowed 0..%d)", field, lit, limit)
	}
	return v, nil
}

// tokenIDs reads an array of token ids (each 0..2³²−1) into dst, at most
// limit of them. It is array and uint fused into one loop for the common
// shape, plain digits between commas: a prompt is thousands of ids, and
// the general path's call per element and per delimiter was most of its
// cost. Any other shape of element goes through uint, so errors read the
// same either way.
func (s *scanner) tokenIDs(field string, dst []uint32, limit int) ([]uint32, error) {
	if s.peek() != '[' {
		return dst, badRequest(metrics.BadRequestMalformed, "%s: want an array", field)
	}
	s.pos++
	if s.peek() == ']' {
		s.pos++
		return dst, nil
	}
	d := s.data
	for {
		if len(dst) >= limit {
			return dst, badRequest(metrics.BadRequestTooLarge, "%s: more than %d tokens", field, limit)
		}
		start := s.pos
		i, v := start, uint64(0)
		for ; i < len(d) && i-start < 10; i++ {
			c := d[i] - '0'
			if c > 9 {
				break
			}
			v = v*10 + uint64(c)
		}
		if n := i - start; n > 0 && n < 10 && i < len(d) && (d[start] != '0' || n == 1) {
			// Nine digits or fewer: no overflow, below 2³².
			switch d[i] {
			case ',':
				dst = append(dst, uint32(v))
				s.pos = i + 1
				continue
			case ']':
				dst = append(dst, uint32(v))
				s.pos = i + 1
				return dst, nil
			}
		}
		u, err := s.uint(field, math.MaxUint32)
		if err != nil {
			return dst, err
		}
		dst = append(dst, uint32(u))
		switch s.peek() {
		case ',':
			s.pos++
		case ']':
			s.pos++
			return dst, nil
		default:
			return dst, s.syntax("want ',' or ']'")
		}
	}
}

// hash reads a 64-bit hash: an unsigned integer, or a negative one whose
// two's-complement bits are the hash (some clients write u64 hashes as
// i64).
func (s *scanner) hash(field string) (uint64, error) {
	if s.peek() != '-' {
		return s.uint(field, math.MaxUint64)
	}
	lit, integer, err := s.number(field)
	if err != nil {
		return 0, err
	}
	if !integer {
		return 0, badRequest(metrics.BadRequestOutOfRange, "%s: %s is not an integer", field, lit)
	}
	v, err := strconv.ParseInt(string(lit), 10, 64)
	if err != nil {
		return 0, badRequest(metrics.BadRequestOutOfRange, "%s: %s is out of range for a 64-bit hash", field, lit)
	}
	return uint64(v), nil
}

// float reads a finite number in [lo, hi].
func (s *scanner) float(field string, lo, hi float64) (float64, error) {
	lit, _, err := s.number(field)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseFloat(string(lit), 64)
	if err != nil || math.IsInf(v, 0) || v < lo || v > hi {
		return 0, badRequest(metrics.BadRequestOutOfRange, "%s: %s is out of range (allowed %v..%v)", field, lit, lo, hi)
	}
	return v, nil
}
