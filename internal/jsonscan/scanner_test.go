package jsonscan

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// failure is the part of an *Error a test pins; Offset -1 leaves it out.
type failure struct {
	Kind   Kind
	Field  string
	Offset int
	Msg    string
}

// check fails unless err is the *Error want describes (nil for no error).
func check(t *testing.T, err error, want *failure) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	var se *Error
	if !errors.As(err, &se) {
		t.Fatalf("error = %v, want an *Error %+v", err, *want)
	}
	got := failure{Kind: se.Kind, Field: se.Field, Offset: se.Offset, Msg: se.Msg}
	if want.Offset < 0 {
		got.Offset = -1
	}
	if diff := cmp.Diff(*want, got); diff != "" {
		t.Errorf("error (-want +got):\n%s", diff)
	}
}

func TestInt(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		signed bool
		want   uint64
		fail   *failure
	}{
		{name: "zero", in: "0", want: 0},
		{name: "white space first", in: " \n\t7,", want: 7},
		{name: "u64 max", in: "18446744073709551615", want: math.MaxUint64},
		{name: "19 digits", in: "9999999999999999999", want: 9999999999999999999},
		{name: "i64 min as bits", in: "-9223372036854775808", signed: true, want: 1 << 63},
		{name: "minus one as bits", in: "-1", signed: true, want: math.MaxUint64},
		{name: "minus zero", in: "-0", signed: true, want: 0},
		{name: "u64 max plus one", in: "18446744073709551616", fail: &failure{Range, "f", 0, "18446744073709551616 is out of the range of u64"}},
		{name: "21 digits", in: "100000000000000000000", signed: true, fail: &failure{Range, "f", 0, "100000000000000000000 is out of the range of u64 and i64"}},
		{name: "below i64", in: "-9223372036854775809", signed: true, fail: &failure{Range, "f", 0, "-9223372036854775809 is out of the range of u64 and i64"}},
		{name: "negative unsigned", in: "-3", fail: &failure{Range, "f", 0, "expected an unsigned integer, found -3"}},
		{name: "fraction", in: " 1.5", fail: &failure{Range, "f", 1, "expected an integer, found a number with a fraction or exponent"}},
		{name: "exponent", in: "1e3", fail: &failure{Range, "f", 0, "expected an integer, found a number with a fraction or exponent"}},
		{name: "bad fraction", in: "1.", fail: &failure{Syntax, "f", 2, "invalid number"}},
		{name: "leading zero", in: "012", fail: &failure{Syntax, "f", 3, "number with a leading zero"}},
		{name: "string", in: `"1"`, fail: &failure{Type, "f", 0, "expected an integer, found a string"}},
		{name: "minus alone", in: "-", signed: true, fail: &failure{Type, "f", 0, "expected an integer, found a number"}},
		{name: "end", in: "  ", fail: &failure{Syntax, "f", 2, "unexpected end of input"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New([]byte(tt.in))
			got, err := s.Int("f", tt.signed)
			check(t, err, tt.fail)
			if tt.fail == nil && got != tt.want {
				t.Errorf("Int(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestUintFloatBool(t *testing.T) {
	s := New([]byte(`[4294967296, 2.5e-1, 1e400, -0.5, true, fals, "x"]`))
	check(t, s.Array("a", "an array"), nil)
	next := func() {
		t.Helper()
		if _, err := s.Elem("a", s.pos == 1); err != nil {
			t.Fatal(err)
		}
	}
	next()
	_, err := s.Uint("u", math.MaxUint32)
	check(t, err, &failure{Range, "u", 1, "4294967296 is out of range (allowed 0..4294967295)"})
	next()
	if v, err := s.Float("f", 0, 1); err != nil || v != 0.25 {
		t.Errorf("Float = %v, %v; want 0.25", v, err)
	}
	next()
	_, err = s.Float("f", 0, 1)
	check(t, err, &failure{Range, "f", 21, "1e400 is out of range (allowed 0..1)"})
	next()
	_, err = s.Float("f", 0, 1)
	check(t, err, &failure{Range, "f", 28, "-0.5 is out of range (allowed 0..1)"})
	next()
	if v, err := s.Bool("b"); err != nil || !v {
		t.Errorf("Bool = %v, %v; want true", v, err)
	}
	next()
	_, err = s.Bool("b")
	check(t, err, &failure{Syntax, "b", 40, "invalid literal"})
	s = New([]byte(`"x"`))
	_, err = s.Bool("b")
	check(t, err, &failure{Type, "b", 0, "expected true or false, found a string"})
	_, err = s.Float("f", 0, 1)
	check(t, err, &failure{Type, "f", 0, "expected a number, found a string"})
}

func TestStrings(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		want   string
		strict *failure // String's failure where Bytes accepts
		fail   *failure // both fail
	}{
		{name: "plain", in: `"token_ids"`, want: "token_ids"},
		{name: "escapes", in: `"a\"b\\c\/\b\f\n\r\t"`, want: "a\"b\\c/\b\f\n\r\t"},
		{name: "unicode escapes", in: `"\u00e9\ud83d\ude00"`, want: "é😀"},
		{name: "utf-8 as is", in: `"é😀"`, want: "é😀"},
		{name: "lone high surrogate", in: `"\ud83dx"`, want: "\ufffdx", strict: &failure{Syntax, "s", 8, `unpaired surrogate in a \u escape`}},
		{name: "lone low surrogate", in: `"\ude00"`, want: "\ufffd", strict: &failure{Syntax, "s", 7, `unpaired surrogate in a \u escape`}},
		{name: "invalid utf-8", in: "\"a\xffb\"", want: "a\xffb", strict: &failure{Syntax, "s", 4, "not valid UTF-8"}},
		{name: "control character", in: "\"a\nb\"", fail: &failure{Syntax, "s", 2, "control character in a string"}},
		{name: "bad escape", in: `"\x"`, fail: &failure{Syntax, "s", 1, "invalid escape"}},
		{name: "bad unicode escape", in: `"\u12g4"`, fail: &failure{Syntax, "s", 1, `invalid \u escape`}},
		{name: "unterminated", in: `"abc`, fail: &failure{Syntax, "s", 4, "unterminated string"}},
		{name: "unterminated escape", in: `"\`, fail: &failure{Syntax, "s", 1, "unterminated string"}},
		{name: "not a string", in: `[1]`, fail: &failure{Type, "s", 0, "expected a string, found an array"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New([]byte(tt.in))
			b, err := s.Bytes("s")
			check(t, err, tt.fail)
			if tt.fail == nil && string(b) != tt.want {
				t.Errorf("Bytes = %q, want %q", b, tt.want)
			}
			s = New([]byte(tt.in))
			str, err := s.String("s")
			want := tt.strict
			if want == nil {
				want = tt.fail
			}
			check(t, err, want)
			if want == nil && str != tt.want {
				t.Errorf("String = %q, want %q", str, tt.want)
			}
		})
	}
}

// TestObject walks an object with every kind of value and then the errors
// of the object grammar.
func TestObject(t *testing.T) {
	s := New([]byte(` { "a" : 1 , "b\u0022":[true,{"x":null}], "c":"s" } `))
	check(t, s.Object("", "an object"), nil)
	var keys []string
	for first := true; ; first = false {
		k, ok, err := s.Key("o", first)
		check(t, err, nil)
		if !ok {
			break
		}
		keys = append(keys, string(k))
		check(t, s.Skip("o."+string(k)), nil)
	}
	check(t, s.End("the object"), nil)
	if diff := cmp.Diff([]string{"a", `b"`, "c"}, keys); diff != "" {
		t.Errorf("keys (-want +got):\n%s", diff)
	}

	for _, tt := range []struct {
		in   string
		want failure
	}{
		{`{"a" 1}`, failure{Syntax, "o", 5, "expected ':' after a key"}},
		{`{"a":1 "b":2}`, failure{Syntax, "o", 7, "expected ',' or '}' in an object"}},
		{`{1:2}`, failure{Syntax, "o", 1, "expected a string key"}},
		{`{"a":1,`, failure{Syntax, "o", 7, "unexpected end of input in an object"}},
		{`{"a":`, failure{Syntax, "o", 5, "unexpected end of input"}},
		{`{"a":tru}`, failure{Syntax, "o", 5, "invalid literal"}},
		{`{"a":[1 2]}`, failure{Syntax, "o", 8, "expected ',' or ']' in an array"}},
		{`{"a":[1,`, failure{Syntax, "o", 8, "unexpected end of input"}},
		{`{"a":}`, failure{Syntax, "o", 5, "unexpected '}'"}},
	} {
		t.Run(tt.in, func(t *testing.T) {
			s := New([]byte(tt.in))
			check(t, skipObject(&s), &tt.want)
		})
	}

	s = New([]byte(`[]`))
	check(t, s.Object("o", "a RouterEvent object"), &failure{Type, "o", 0, "expected a RouterEvent object, found an array"})
	s = New([]byte(`{} x`))
	check(t, s.Object("", "an object"), nil)
	if _, ok, err := s.Key("", true); ok || err != nil {
		t.Fatalf("Key of {} = %v, %v", ok, err)
	}
	check(t, s.End("the request"), &failure{Syntax, "", 3, "data after the request"})
}

// skipObject reads an object of any values and the end of the document.
func skipObject(s *Scanner) error {
	if err := s.Object("o", "an object"); err != nil {
		return err
	}
	for first := true; ; first = false {
		_, ok, err := s.Key("o", first)
		if err != nil {
			return err
		}
		if !ok {
			return s.End("the object")
		}
		if err := s.Skip("o"); err != nil {
			return err
		}
	}
}

func TestNull(t *testing.T) {
	s := New([]byte(` null nul`))
	if !s.Null() {
		t.Error("Null missed null")
	}
	if s.Null() {
		t.Error("Null took nul")
	}
}

func TestSkipDepth(t *testing.T) {
	deep := strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1)
	s := New([]byte(deep))
	check(t, s.Skip(""), nil)
	deeper := "[" + deep + "]"
	s = New([]byte(deeper))
	check(t, s.Skip("x"), &failure{Limit, "x", MaxDepth + 1, "values nested deeper than 64 levels"})
	// Too deep is not malformed.
	check(t, CheckSyntax([]byte(deeper)), nil)
	check(t, CheckSyntax([]byte(`{"a":[1,2,{"b":"c"}]} `)), nil)
	check(t, CheckSyntax([]byte(`{"a":[1,2,]}`)), &failure{Syntax, "", 10, "unexpected ']'"})
	check(t, CheckSyntax([]byte(`1 2`)), &failure{Syntax, "", 2, "data after the value"})
	check(t, CheckSyntax(nil), &failure{Syntax, "", 0, "unexpected end of input"})
}

func TestTokenIDs(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		limit int
		want  []uint32
		fail  *failure
	}{
		{name: "empty", in: `[ ]`, want: nil},
		{name: "fast path", in: `[1,22,333,0,999999999]`, want: []uint32{1, 22, 333, 0, 999999999}},
		{name: "ten digits and spaces", in: `[ 4294967295 , 1000000000 ,7 ]`, want: []uint32{4294967295, 1000000000, 7}},
		{name: "at the limit", in: `[1,2,3]`, limit: 3, want: []uint32{1, 2, 3}},
		{name: "over the limit", in: `[1,2,3,4]`, limit: 3, fail: &failure{Limit, "token_ids", 7, "more than 3 tokens"}},
		{name: "over u32", in: `[1,4294967296]`, fail: &failure{Range, "token_ids", 3, "4294967296 is out of range (allowed 0..4294967295)"}},
		{name: "leading zero", in: `[1,007]`, fail: &failure{Syntax, "token_ids", 6, "number with a leading zero"}},
		{name: "fraction", in: `[1.0]`, fail: &failure{Range, "token_ids", 1, "expected an integer, found a number with a fraction or exponent"}},
		{name: "trailing comma", in: `[1,]`, fail: &failure{Type, "token_ids", 3, "expected an integer, found ']'"}},
		{name: "missing comma", in: `[1 2]`, fail: &failure{Syntax, "token_ids", 3, "expected ',' or ']' in an array"}},
		{name: "truncated", in: `[1,2`, fail: &failure{Syntax, "token_ids", 4, "unexpected end of input in an array"}},
		{name: "not an array", in: `{}`, fail: &failure{Type, "token_ids", 0, "expected an array, found an object"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.limit == 0 {
				tt.limit = 100
			}
			s := New([]byte(tt.in))
			got, err := s.TokenIDs("token_ids", nil, tt.limit)
			check(t, err, tt.fail)
			if tt.fail == nil {
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("ids (-want +got):\n%s", diff)
				}
				check(t, s.End("the ids"), nil)
			}
		})
	}
}

func TestErrorString(t *testing.T) {
	e := &Error{Kind: Range, Field: "isl", Offset: 7, Msg: "-1 is negative"}
	if got, want := e.Error(), "out of range: isl at byte 7: -1 is negative"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	e.Field = ""
	if got, want := e.Error(), "out of range at byte 7: -1 is negative"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// FuzzScanner holds the scanner to encoding/json: CheckSyntax accepts
// exactly what json.Valid accepts (but for nesting past MaxDepth, which it
// leaves unread), and TokenIDs reads an array of ids as json.Unmarshal does,
// or refuses one that json.Unmarshal refuses.
func FuzzScanner(f *testing.F) {
	for _, s := range []string{
		`{"a":[1,2,{"b":"c\u00e9"}],"d":null,"e":true,"f":-1.5e3}`, `[1,22,333]`, `[ 4294967295 , 0 ]`,
		`[1,]`, `[01]`, `[1.0]`, `"\ud83d"`, "\"\xff\"", `[4294967296]`, strings.Repeat("[", 70),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		err := CheckSyntax(data)
		valid := json.Valid(data)
		switch {
		case err != nil && valid:
			t.Fatalf("CheckSyntax(%q) = %v; json.Valid accepts it", data, err)
		case err == nil && !valid && !deeperThan(data, MaxDepth):
			t.Fatalf("CheckSyntax(%q) accepted what json.Valid refuses", data)
		}
		if err != nil {
			var se *Error
			if !errors.As(err, &se) || se.Kind != Syntax || se.Offset < 0 || se.Offset > len(data) {
				t.Fatalf("CheckSyntax error %#v", err)
			}
		}

		s := New(data)
		ids, err := s.TokenIDs("t", nil, 1<<20)
		if err == nil {
			err = s.End("the ids")
		}
		var ref []uint32
		refErr := json.Unmarshal(data, &ref)
		switch {
		case err == nil && refErr != nil:
			t.Fatalf("TokenIDs(%q) = %v; encoding/json refuses it: %v", data, ids, refErr)
		case err == nil && !cmp.Equal(ids, ref) && !(len(ids) == 0 && len(ref) == 0):
			t.Fatalf("TokenIDs(%q) = %v; encoding/json reads %v", data, ids, ref)
		case err != nil && refErr == nil && ref != nil:
			t.Fatalf("TokenIDs(%q) refused: %v; encoding/json reads %v", data, err, ref)
		}
	})
}

// deeperThan reports whether data opens more than n arrays or objects at
// once somewhere (counting brackets outside strings only roughly: enough
// for the fuzz target's exemption).
func deeperThan(data []byte, n int) bool {
	depth := 0
	for _, c := range data {
		switch c {
		case '[', '{':
			depth++
			if depth > n {
				return true
			}
		case ']', '}':
			depth--
		}
	}
	return false
}

// Detail names the field before the message, and is the message alone
// when no field is at fault.
func TestErrorDetail(t *testing.T) {
	for _, tt := range []struct {
		err  Error
		want string
	}{
		{Error{Field: "token_ids[3]", Msg: "expected an integer, found a string"}, "token_ids[3]: expected an integer, found a string"},
		{Error{Msg: "unexpected end of input"}, "unexpected end of input"},
	} {
		if got := tt.err.Detail(); got != tt.want {
			t.Errorf("Detail() = %q, want %q", got, tt.want)
		}
	}
}
