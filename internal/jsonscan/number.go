package jsonscan

import (
	"fmt"
	"math"
	"strconv"
)

// Int reads an integer that fits u64; with signed, also a negative one that
// fits i64, whose two's-complement bits it returns (publishers in languages
// without u64 write 64-bit hashes as i64). A number with a fraction or an
// exponent is not an integer, even 1.0 or 1e3 (a Range error).
func (s *Scanner) Int(field string, signed bool) (uint64, error) {
	s.ws()
	d, i := s.data, s.pos
	if i >= len(d) {
		return 0, s.fail(Syntax, field, "unexpected end of input")
	}
	start := i
	neg := d[i] == '-'
	if neg {
		i++
	}
	first := i
	// Locals, not s.pos, in the loop: it is the hot loop of both decoders.
	// Up to 19 digits cannot overflow u64; longer runs are checked below.
	var v uint64
	for i < len(d) {
		c := d[i] - '0'
		if c > 9 {
			break
		}
		v = v*10 + uint64(c)
		i++
	}
	s.pos = i
	digits := i - first
	switch {
	case digits == 0:
		s.pos = start
		return 0, s.fail(Type, field, "expected an integer, found "+s.found())
	case digits > 1 && d[first] == '0':
		return 0, s.fail(Syntax, field, "number with a leading zero")
	}
	if i < len(d) && (d[i] == '.' || d[i] == 'e' || d[i] == 'E') {
		s.pos = start
		if err := s.skipNumber(field); err != nil {
			return 0, err
		}
		return 0, failAt(start, Range, field, "expected an integer, found a number with a fraction or exponent")
	}
	overflow := digits > 20 || digits == 20 && string(d[first:i]) > "18446744073709551615"
	switch {
	case neg && !signed:
		return 0, failAt(start, Range, field, "expected an unsigned integer, found "+string(d[start:i]))
	case overflow && !signed:
		return 0, failAt(start, Range, field, string(d[start:i])+" is out of the range of u64")
	case overflow, neg && v > 1<<63:
		return 0, failAt(start, Range, field, string(d[start:i])+" is out of the range of u64 and i64")
	case neg:
		return -v, nil // two's complement: the bits of the i64
	}
	return v, nil
}

// Uint reads an unsigned integer no larger than limit.
func (s *Scanner) Uint(field string, limit uint64) (uint64, error) {
	s.ws()
	start := s.pos
	v, err := s.Int(field, false)
	if err == nil && v > limit {
		return 0, failAt(start, Range, field, fmt.Sprintf("%d is out of range (allowed 0..%d)", v, limit))
	}
	return v, err
}

// Float reads a number, integer or not, that lies in [lo, hi].
func (s *Scanner) Float(field string, lo, hi float64) (float64, error) {
	s.ws()
	if s.pos >= len(s.data) {
		return 0, s.fail(Syntax, field, "unexpected end of input")
	}
	if c := s.data[s.pos]; c != '-' && (c < '0' || c > '9') {
		return 0, s.fail(Type, field, "expected a number, found "+s.found())
	}
	start := s.pos
	if err := s.skipNumber(field); err != nil {
		return 0, err
	}
	lit := s.data[start:s.pos]
	v, err := strconv.ParseFloat(string(lit), 64)
	if err != nil || v < lo || v > hi { // ±Inf (err set) is out of every range
		return 0, failAt(start, Range, field, fmt.Sprintf("%s is out of range (allowed %v..%v)", lit, lo, hi))
	}
	return v, nil
}

// skipNumber skips a number per the JSON grammar:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *Scanner) skipNumber(field string) error {
	digits := func() int {
		n := 0
		for s.pos < len(s.data) && s.data[s.pos] >= '0' && s.data[s.pos] <= '9' {
			s.pos++
			n++
		}
		return n
	}
	if s.pos < len(s.data) && s.data[s.pos] == '-' {
		s.pos++
	}
	start := s.pos
	if n := digits(); n == 0 || n > 1 && s.data[start] == '0' {
		return s.fail(Syntax, field, "invalid number")
	}
	if s.pos < len(s.data) && s.data[s.pos] == '.' {
		s.pos++
		if digits() == 0 {
			return s.fail(Syntax, field, "invalid number")
		}
	}
	if s.pos < len(s.data) && (s.data[s.pos] == 'e' || s.data[s.pos] == 'E') {
		s.pos++
		if s.pos < len(s.data) && (s.data[s.pos] == '+' || s.data[s.pos] == '-') {
			s.pos++
		}
		if digits() == 0 {
			return s.fail(Syntax, field, "invalid number")
		}
	}
	return nil
}

// TokenIDs reads an array of token ids (each 0..2³²−1) and appends them to
// dst, failing past limit ids (a Limit error). It is Array, Elem and Uint
// fused into one loop for the common shape, plain digits between commas:
// a prompt is thousands of ids, and a call per element and per delimiter
// was most of the cost. Any other shape of element goes through Uint, so
// errors read the same either way.
func (s *Scanner) TokenIDs(field string, dst []uint32, limit int) ([]uint32, error) {
	if err := s.Array(field, "an array"); err != nil {
		return dst, err
	}
	if s.Peek() == ']' {
		s.pos++
		return dst, nil
	}
	d := s.data
	for {
		if len(dst) >= limit {
			return dst, s.fail(Limit, field, fmt.Sprintf("more than %d tokens", limit))
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
		u, err := s.Uint(field, math.MaxUint32)
		if err != nil {
			return dst, err
		}
		dst = append(dst, uint32(u))
		switch s.Peek() {
		case ',':
			s.pos++
		case ']':
			s.pos++
			return dst, nil
		case 0:
			if s.pos >= len(s.data) {
				return dst, s.fail(Syntax, field, "unexpected end of input in an array")
			}
			fallthrough
		default:
			return dst, s.fail(Syntax, field, "expected ',' or ']' in an array")
		}
	}
}
