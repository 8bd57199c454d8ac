package jsonscan

import (
	"bytes"
	"encoding/json"
	"math/big"
	"strings"
	"testing"
	"unicode/utf8"
)

// nesting is an upper bound on b's nesting depth (brackets in strings
// count too).
func nesting(b []byte) int {
	depth, most := 0, 0
	for _, c := range b {
		switch c {
		case '[', '{':
			depth++
			most = max(most, depth)
		case ']', '}':
			depth--
		}
	}
	return most
}

// FuzzSkip checks Skip against encoding/json on whole documents: it takes
// exactly the valid JSON whose strings are valid UTF-8 (encoding/json
// takes any bytes in strings, and refuses nesting deeper than 10,000).
// SkipBounds must end a valid document where Skip does; InvalidUTF8 must
// find a bad string exactly when a valid document is not valid UTF-8;
// QuoteOrBackslash must find the first quote or backslash.
func FuzzSkip(f *testing.F) {
	for _, s := range []string{`{"a":[1,-2.5e3,"x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"],"b":{"c":null,"d":true,"e":false}}`,
		` [ ] `, `{}`, `"\ud800"`, `0`, `-0.0E+1`, `[1,]`, `{"a" 1}`, `01`, `"a` + "\xff" + `"`, `{"\xfe":1}`, `[[[[[[]]]]]]`, `"\u12"`,
		`tru`, `nul`, `[1 2]`, `{"a":1,}`, "\"\x01\"", `1.`, `.5`, `-`, `"\a"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s := Scanner{B: b}
		s.WS()
		ok := s.Skip() && s.Done()
		valid := json.Valid(b)
		if want := valid && utf8.Valid(b); ok != want && nesting(b) < 10000 {
			t.Fatalf("%q: Skip %v, encoding/json %v, valid UTF-8 %v", b, ok, valid, utf8.Valid(b))
		}
		bounds := Scanner{B: b}
		bounds.WS()
		bok := bounds.SkipBounds()
		if bounds.I < 0 || bounds.I > len(b) {
			t.Fatalf("%q: SkipBounds ends at %d", b, bounds.I)
		}
		if ok && (!bok || bounds.I != s.I-trailingWS(b)) {
			t.Fatalf("%q: Skip ends at %d, SkipBounds at %d (%v)", b, s.I, bounds.I, bok)
		}
		_, found := InvalidUTF8(b)
		if utf8.Valid(b) && found {
			t.Fatalf("%q: InvalidUTF8 found a bad string in valid UTF-8", b)
		}
		if valid && !utf8.Valid(b) && !found {
			t.Fatalf("%q: InvalidUTF8 missed the bad string", b)
		}
		if got, want := QuoteOrBackslash(b), bytes.IndexAny(b, `"\`); got != want {
			t.Fatalf("QuoteOrBackslash(%q) = %d, want %d", b, got, want)
		}
	})
}

// trailingWS is the length of b's trailing JSON whitespace.
func trailingWS(b []byte) int {
	return len(b) - len(bytes.TrimRight(b, " \t\n\r"))
}

// FuzzScalar checks Str and Number against encoding/json's first token:
// where encoding/json reads a string whose bytes are valid UTF-8, Str
// reads the same text and ends at the same byte, and what Str reads,
// encoding/json reads; the same for numbers, whose integrality
// IntegralNumber must decide as math/big does.
func FuzzScalar(f *testing.F) {
	for _, s := range []string{`"abc"`, `"a\"b\\c\u00e9\ud83d\ude00"`, `"\ud800"`, `"\ud800\u0041"`, `"\udc00\ud800x"`, `"\u0000"`,
		`"é` + "\xff" + `"`, `"tab` + "\t" + `"`, `"\/"`, `"\x"`, `"\u00"`, `"\u00e9`, `0`, `-0`, `1.5e3`, `10e-1`, `1e400`,
		`123456789012345678901234567890`, `1.0000000000000000001`, `-12.5E-1`, `01`, `1.`, `-`, `2e`, `5e+`, `1.5 `, `7,`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		tok, err := dec.Token()
		end := int(dec.InputOffset())
		if len(b) == 0 {
			return
		}
		s := Scanner{B: b}
		switch c := b[0]; {
		case c == '"':
			v, ok := s.Str()
			want, isStr := tok.(string)
			if err == nil && isStr && utf8.Valid(b[:end]) && (!ok || string(v) != want || s.I != end) {
				t.Fatalf("%q: Str %q, %v, ends at %d; encoding/json %q ends at %d", b, v, ok, s.I, want, end)
			}
			if ok {
				var got string
				if err := json.Unmarshal(b[:s.I], &got); err != nil || got != string(v) || !utf8.Valid(v) {
					t.Fatalf("%q: Str %q; encoding/json %q, %v", b[:s.I], v, got, err)
				}
			}
		case c == '-' || (c >= '0' && c <= '9'):
			integral, ok := s.Number()
			num, isNum := tok.(json.Number)
			if err == nil && isNum && (!ok || s.I != end) {
				t.Fatalf("%q: Number %v ends at %d; encoding/json %s ends at %d", b, ok, s.I, num, end)
			}
			if !ok {
				return
			}
			if !json.Valid(b[:s.I]) {
				t.Fatalf("%q: Number read %q, which is not JSON", b, b[:s.I])
			}
			if integral != IntegralNumber(b[:s.I]) {
				t.Fatalf("%q: Number says integral %v, IntegralNumber %v", b[:s.I], integral, !integral)
			}
			// math/big decides when the exponent is small enough to expand.
			text := string(b[:s.I])
			if e := strings.IndexAny(text, "eE"); e < 0 || len(strings.TrimLeft(text[e+1:], "+-")) <= 4 {
				r, rok := new(big.Rat).SetString(text)
				if !rok || r.IsInt() != integral {
					t.Fatalf("%s: integral %v; math/big %v (%v)", text, integral, r, rok)
				}
			}
		}
	})
}
