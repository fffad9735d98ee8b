package jsonscan

import (
	"errors"
	"fmt"
	"strconv"
)

// MaxDepth caps the nesting of the values Skip skips (unknown fields,
// opaque extras), so that a hostile document cannot recurse deeply.
const MaxDepth = 64

// Kind says what is wrong with a document.
type Kind uint8

// The kinds of Error.
const (
	// Syntax: the document is not JSON (RFC 8259) at this point.
	Syntax Kind = iota + 1
	// Type: well-formed, but a value of another type than the field takes
	// (a string for a number, an array for an object).
	Type
	// Range: a number the field does not take: a fraction or exponent
	// where an integer belongs, a sign where an unsigned integer belongs,
	// or a magnitude past the field's range.
	Range
	// Limit: over a limit of the scanner (MaxDepth) or of the caller (the
	// length of a list).
	Limit
)

// String names the kind.
func (k Kind) String() string {
	switch k {
	case Syntax:
		return "malformed json"
	case Type:
		return "wrong type"
	case Range:
		return "out of range"
	case Limit:
		return "over a limit"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Error is a document the scanner refused: what is wrong (Kind, Msg),
// where (Offset) and in which field.
type Error struct {
	// Kind classifies the failure; callers map it onto their reasons.
	Kind Kind
	// Field is the path of the field being read as the caller named it,
	// e.g. "token_ids" or "event.data.stored.blocks[3].block_hash"; empty
	// when the document as a whole is at fault. Callers that build a path
	// only when it is needed set it after the fact.
	Field string
	// Offset is the byte offset in the document where scanning stopped.
	Offset int
	// Msg says what was wrong, e.g. "expected an integer, found a string".
	Msg string
}

// Error says what was refused, where and why.
func (e *Error) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%v at byte %d: %s", e.Kind, e.Offset, e.Msg)
	}
	return fmt.Sprintf("%v: %s at byte %d: %s", e.Kind, e.Field, e.Offset, e.Msg)
}

// Detail is the message prefixed with the field, "field: msg", or the
// message alone when the document as a whole is at fault: what a caller
// shows after its own words for the kind of failure.
func (e *Error) Detail() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

// Scanner reads one JSON document front to back. The zero value is not
// useful; make one with New.
type Scanner struct {
	data []byte
	pos  int
}

// New returns a Scanner at the start of data. The scanner does not copy
// data; values it returns as []byte may alias it.
func New(data []byte) Scanner { return Scanner{data: data} }

// Offset returns the byte offset of the next byte to read.
func (s *Scanner) Offset() int { return s.pos }

// ws skips white space.
func (s *Scanner) ws() {
	if s.pos < len(s.data) && s.data[s.pos] > ' ' {
		return // the common case, kept small enough to inline
	}
	s.skipWS()
}

func (s *Scanner) skipWS() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\r', '\n':
			s.pos++
		default:
			return
		}
	}
}

// Peek returns the next byte after white space, or 0 at the end.
func (s *Scanner) Peek() byte {
	s.ws()
	if s.pos >= len(s.data) {
		return 0
	}
	return s.data[s.pos]
}

// End checks that nothing but white space follows the document; what names
// the document in the error ("the event": "data after the event").
func (s *Scanner) End(what string) error {
	s.ws()
	if s.pos != len(s.data) {
		return s.fail(Syntax, "", "data after "+what)
	}
	return nil
}

// Object consumes the '{' that opens an object. want names what the field
// takes, for the error when something else comes ("a RouterEvent object").
func (s *Scanner) Object(field, want string) error { return s.open('{', field, want) }

// Array consumes the '[' that opens an array; want is as for Object.
func (s *Scanner) Array(field, want string) error { return s.open('[', field, want) }

func (s *Scanner) open(c byte, field, want string) error {
	s.ws()
	if s.pos >= len(s.data) {
		return s.fail(Syntax, field, "unexpected end of input")
	}
	if s.data[s.pos] != c {
		return s.fail(Type, field, "expected "+want+", found "+s.found())
	}
	s.pos++
	return nil
}

// Key reads the next key of an object whose '{' Object consumed, and the
// ':' after it; first says whether it is the object's first key. ok is
// false at the closing '}', which it consumes. The key is unescaped and
// aliases the document when it has no escapes; it is not checked for valid
// UTF-8, since callers match keys against names they know.
func (s *Scanner) Key(field string, first bool) (key []byte, ok bool, err error) {
	s.ws()
	if s.pos >= len(s.data) {
		return nil, false, s.fail(Syntax, field, "unexpected end of input in an object")
	}
	if s.data[s.pos] == '}' {
		s.pos++
		return nil, false, nil
	}
	if !first {
		if s.data[s.pos] != ',' {
			return nil, false, s.fail(Syntax, field, "expected ',' or '}' in an object")
		}
		s.pos++
		s.ws()
	}
	if s.pos >= len(s.data) {
		return nil, false, s.fail(Syntax, field, "unexpected end of input in an object")
	}
	if s.data[s.pos] != '"' {
		return nil, false, s.fail(Syntax, field, "expected a string key")
	}
	key, err = s.str(field, false)
	if err != nil {
		return nil, false, err
	}
	s.ws()
	if s.pos >= len(s.data) || s.data[s.pos] != ':' {
		return nil, false, s.fail(Syntax, field, "expected ':' after a key")
	}
	s.pos++
	return key, true, nil
}

// Elem moves to the next element of an array whose '[' Array consumed;
// first says whether it is the first element. more is false at the closing
// ']', which it consumes.
func (s *Scanner) Elem(field string, first bool) (more bool, err error) {
	s.ws()
	if s.pos >= len(s.data) {
		return false, s.fail(Syntax, field, "unexpected end of input in an array")
	}
	if s.data[s.pos] == ']' {
		s.pos++
		return false, nil
	}
	if !first {
		if s.data[s.pos] != ',' {
			return false, s.fail(Syntax, field, "expected ',' or ']' in an array")
		}
		s.pos++
	}
	return true, nil
}

// Null consumes a null if one comes next.
func (s *Scanner) Null() bool {
	s.ws()
	if len(s.data)-s.pos >= 4 && string(s.data[s.pos:s.pos+4]) == "null" {
		s.pos += 4
		return true
	}
	return false
}

// Bool reads true or false.
func (s *Scanner) Bool(field string) (bool, error) {
	switch s.Peek() {
	case 't':
		err := s.literal(field, "true")
		return err == nil, err
	case 'f':
		return false, s.literal(field, "false")
	}
	if s.pos >= len(s.data) {
		return false, s.fail(Syntax, field, "unexpected end of input")
	}
	return false, s.fail(Type, field, "expected true or false, found "+s.found())
}

func (s *Scanner) literal(field, lit string) error {
	if len(s.data)-s.pos >= len(lit) && string(s.data[s.pos:s.pos+len(lit)]) == lit {
		s.pos += len(lit)
		return nil
	}
	return s.fail(Syntax, field, "invalid literal")
}

// Skip skips one value of any type, checking its syntax; values nested
// deeper than MaxDepth are a Limit error.
func (s *Scanner) Skip(field string) error { return s.skip(field, 0) }

func (s *Scanner) skip(field string, depth int) error {
	if depth > MaxDepth {
		return s.fail(Limit, field, fmt.Sprintf("values nested deeper than %d levels", MaxDepth))
	}
	s.ws()
	if s.pos >= len(s.data) {
		return s.fail(Syntax, field, "unexpected end of input")
	}
	switch c := s.data[s.pos]; {
	case c == '{':
		s.pos++
		for first := true; ; first = false {
			_, ok, err := s.Key(field, first)
			if err != nil || !ok {
				return err
			}
			if err := s.skip(field, depth+1); err != nil {
				return err
			}
		}
	case c == '[':
		s.pos++
		for first := true; ; first = false {
			more, err := s.Elem(field, first)
			if err != nil || !more {
				return err
			}
			if err := s.skip(field, depth+1); err != nil {
				return err
			}
		}
	case c == '"':
		_, err := s.str(field, false)
		return err
	case c == '-' || c >= '0' && c <= '9':
		return s.skipNumber(field)
	case c == 't':
		return s.literal(field, "true")
	case c == 'f':
		return s.literal(field, "false")
	case c == 'n':
		return s.literal(field, "null")
	}
	return s.fail(Syntax, field, "unexpected "+s.found())
}

// CheckSyntax returns the Syntax error of data, nil if data is one
// well-formed JSON value with nothing but white space around it. Values
// nested deeper than MaxDepth count as well-formed here: they are too
// deep, not malformed.
//
// A decoder stops at the first problem it meets, which may be a value of
// the wrong type before a syntax error further on; CheckSyntax lets it
// report the document as malformed instead.
func CheckSyntax(data []byte) error {
	s := New(data)
	if err := s.Skip(""); err != nil {
		if se := (*Error)(nil); errors.As(err, &se) && se.Kind == Limit {
			return nil
		}
		return err
	}
	return s.End("the value")
}

// found names what comes next, for error messages.
func (s *Scanner) found() string {
	if s.pos >= len(s.data) {
		return "end of input"
	}
	switch c := s.data[s.pos]; {
	case c == '{':
		return "an object"
	case c == '[':
		return "an array"
	case c == '"':
		return "a string"
	case c == '-' || c >= '0' && c <= '9':
		return "a number"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == 'n':
		return "null"
	default:
		return strconv.QuoteRune(rune(c))
	}
}

// fail builds an error at the current offset.
func (s *Scanner) fail(k Kind, field, msg string) error {
	return &Error{Kind: k, Field: field, Offset: s.pos, Msg: msg}
}

// failAt builds an error at offset at.
func failAt(at int, k Kind, field, msg string) error {
	return &Error{Kind: k, Field: field, Offset: at, Msg: msg}
}

// Cause returns err as the scanner's *Error, with one correction: a value
// of the wrong type in data that is not JSON at all is reported as data's
// syntax error, the worse of the two. ok is false when err is not the
// scanner's.
func Cause(data []byte, err error) (se *Error, ok bool) {
	if !errors.As(err, &se) {
		return nil, false
	}
	if se.Kind == Type {
		if serr := CheckSyntax(data); serr != nil {
			errors.As(serr, &se)
		}
	}
	return se, true
}
