package jsonscan

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"math/rand"
	"reflect"
	"strings"
	"testing"
)

func TestIntegralNumber(t *testing.T) {
	cases := []string{"0", "-0", "1", "1.0", "1.5", "0.0", "0.000", "10e-1", "100e-2", "100e-3", "1e0", "1e1", "1e-1",
		"1.5e1", "1.25e1", "1.25e2", "-3.000e-0", "0e-999999999999999999999", "0.0e5", "1e-99999999999999999999",
		"1e99999999999999999999", "120.00e-1", "120.00e-2", "12345678901234567890.000000000001", "5E+2", "5e-0"}
	rng := rand.New(rand.NewSource(7))
	for i := 0; i < 2000; i++ {
		n := fmt.Sprintf("%d", rng.Intn(2000)-1000)
		if rng.Intn(2) == 0 {
			n += "." + strings.Repeat("0", rng.Intn(3)) + fmt.Sprint(rng.Intn(100))
		}
		if rng.Intn(2) == 0 {
			n += fmt.Sprintf("e%d", rng.Intn(9)-4)
		}
		cases = append(cases, n)
	}
	for _, c := range cases {
		// The reference: exact with enough precision for these inputs.
		f, _, err := big.ParseFloat(c, 10, 4096, big.ToNearestEven)
		want := err == nil && f.IsInt()
		if strings.Contains(c, "99999999999999999999") { // beyond big.Float's exponent
			want = !strings.Contains(c, "e-") || strings.HasPrefix(c, "0")
		}
		if got := IntegralNumber([]byte(c)); got != want {
			t.Errorf("IntegralNumber(%s) = %v, want %v", c, got, want)
		}
	}
}

func TestQuoteOrBackslash(t *testing.T) {
	for in, want := range map[string]int{``: -1, `abc`: -1, `a"b`: 1, `a\b"`: 1, `ab"\`: 2, `"`: 0, `\`: 0} {
		if got := QuoteOrBackslash([]byte(in)); got != want {
			t.Errorf("QuoteOrBackslash(%q) = %d, want %d", in, got, want)
		}
	}
	// Across the boundaries of the windows it searches.
	for _, at := range []int{0, 63, 64, 65, 191, 192, 193, 1000, 4031, 4032, 100000} {
		b := bytes.Repeat([]byte{'a'}, 200000)
		for _, c := range []byte{'"', '\\'} {
			b[at] = c
			if got := QuoteOrBackslash(b); got != at {
				t.Errorf("QuoteOrBackslash with %q at %d = %d", c, at, got)
			}
			b[at+1] = '"' + '\\' - c // the other one, later
			if got := QuoteOrBackslash(b); got != at {
				t.Errorf("QuoteOrBackslash with %q at %d, then the other = %d", c, at, got)
			}
			b[at], b[at+1] = 'a', 'a'
		}
	}
	if got := QuoteOrBackslash(bytes.Repeat([]byte{'a'}, 5000)); got != -1 {
		t.Errorf("QuoteOrBackslash of no quote = %d", got)
	}
}

// TestSkipAgreesWithEncodingJSON: Skip accepts exactly the documents
// json.Valid accepts, on hand-picked and mutated inputs.
func TestSkipAgreesWithEncodingJSON(t *testing.T) {
	seeds := []string{`{}`, `[]`, `{"a":1,"b":[true,false,null],"c":{"d":"e\u00e9\n"}}`, `"x"`, `-0.5e+3`, `0`,
		`{"a":01}`, `{"a":1,}`, `[1,]`, `{"a" 1}`, `"\x"`, `"\ud800"`, `tru`, `nul`, `1.`, `.5`, `-`, `1e`, `"a` + "\t" + `b"`,
		`{"a":"` + "	" + `"}`, `[[[[]]]]`, `{"":""}`, ` { "a" : [ 1 , 2 ] } `}
	rng := rand.New(rand.NewSource(3))
	var cases []string
	for _, s := range seeds {
		cases = append(cases, s)
		for i := 0; i < 200; i++ {
			b := []byte(s)
			if len(b) == 0 {
				break
			}
			switch k := rng.Intn(len(b)); rng.Intn(3) {
			case 0:
				b = append(b[:k], b[k+1:]...)
			case 1:
				b[k] = `{}[]",:01e.-tfn \u`[rng.Intn(18)]
			default:
				b = append(b[:k], append([]byte{`{}[]",:1 `[rng.Intn(9)]}, b[k:]...)...)
			}
			cases = append(cases, string(b))
		}
	}
	for _, c := range cases {
		s := Scanner{B: []byte(c)}
		s.WS()
		got := s.Skip() && s.Done()
		if want := json.Valid([]byte(c)); got != want {
			t.Errorf("Skip(%q) = %v, json.Valid says %v", c, got, want)
		}
		// Value decodes what encoding/json decodes, as it does.
		s = Scanner{B: []byte(c)}
		s.WS()
		v, ok := s.Value()
		ok = ok && s.Done()
		dec := json.NewDecoder(strings.NewReader(c))
		dec.UseNumber()
		var want any
		wantOK := dec.Decode(&want) == nil && json.Valid([]byte(c))
		if ok != wantOK || (ok && !reflect.DeepEqual(v, want)) {
			t.Errorf("Value(%q) = %#v, %v; encoding/json says %#v, %v", c, v, ok, want, wantOK)
		}
	}
}

// TestNestingDepthIsBounded: values nested deeper than MaxDepth are
// refused, not a stack overflow; MaxDepth levels are fine.
func TestNestingDepthIsBounded(t *testing.T) {
	deep := []byte(strings.Repeat("[", 20<<20))
	if (&Scanner{B: deep}).Skip() {
		t.Error("Skip accepted unclosed nesting")
	}
	if _, ok := (&Scanner{B: deep}).Value(); ok {
		t.Error("Value accepted unclosed nesting")
	}
	for depth, want := range map[int]bool{MaxDepth: true, MaxDepth + 1: false} {
		doc := []byte(strings.Repeat(`{"a":[`, depth/2) + strings.Repeat("[", depth%2) + strings.Repeat("]", depth%2) + strings.Repeat(`]}`, depth/2))
		if got := (&Scanner{B: doc}).Skip(); got != want {
			t.Errorf("Skip of depth %d = %v", depth, got)
		}
		if _, got := (&Scanner{B: doc}).Value(); got != want {
			t.Errorf("Value of depth %d = %v", depth, got)
		}
	}
}

func TestSkipBoundsMatchesStringsAndBrackets(t *testing.T) {
	for in, rest := range map[string]string{
		`{"s":"a\"}b\\","t":[1,"]"]},x`: `,x`, `"str\"ing" y`: ` y`, `[{"a":"\u00e9"}]`: ``, `12.5,`: `,`,
	} {
		s := Scanner{B: []byte(in)}
		if !s.SkipBounds() || string(s.B[s.I:]) != rest {
			t.Errorf("SkipBounds(%s) stopped before %q, want %q", in, s.B[s.I:], rest)
		}
	}
	for _, in := range []string{`{"a":"}`, `[1,2`, `"abc`} {
		s := Scanner{B: []byte(in)}
		if s.SkipBounds() {
			t.Errorf("SkipBounds(%s) succeeded", in)
		}
	}
}

func ExampleScanner_Str() {
	s := Scanner{B: []byte(`"caf\u00e9" rest`)}
	v, ok := s.Str()
	fmt.Println(string(v), ok, string(s.B[s.I:]))
	// Output: café true  rest
}

// TestStrRefusesInvalidUTF8: a string with bytes that are not UTF-8 is
// refused, with or without escapes, rather than altered.
func TestStrRefusesInvalidUTF8(t *testing.T) {
	for _, in := range []string{"\"a\xffb\"", "\"\\n\xc3\"", "\"\xed\xa0\x80\"", "\"caf\xe9\""} {
		if v, ok := (&Scanner{B: []byte(in)}).Str(); ok {
			t.Errorf("Str(%q) = %q, want refused", in, v)
		}
	}
	for _, in := range []string{`"é"`, `"\u00e9"`, `"\ud83d\ude00"`, `"plain"`} {
		if _, ok := (&Scanner{B: []byte(in)}).Str(); !ok {
			t.Errorf("Str(%s) refused", in)
		}
	}
}

func TestInvalidUTF8(t *testing.T) {
	for in, want := range map[string]string{
		"\"\xff\"":                               "",
		"{\"a\":\"ok\",\"b\":\"x\xffy\"}":        "/b",
		"{\"a\":{\"c/d\":[1,\"\xfe\"]}}":         "/a/c~1d/1",
		"{\"k\xff\":1}":                          "/k\xff",
		"[true, null, {\"~\":\"\xc3\"}]":         "/2/~0",
		"{\"e\\u00e9\":[\"\\\"\",\"\xc0\xaf\"]}": "/eé/1",
	} {
		got, found := InvalidUTF8([]byte(in))
		if !found || got != want {
			t.Errorf("InvalidUTF8(%q) = %q, %v; want %q", in, got, found, want)
		}
	}
	for _, in := range []string{`{"a":"é","b":["\u00e9"]}`, `1`, "[1,2,}\xff"} {
		if got, found := InvalidUTF8([]byte(in)); found {
			t.Errorf("InvalidUTF8(%q) found %q", in, got)
		}
	}
}

func TestBrokenSurrogatePairs(t *testing.T) {
	for in, want := range map[string]string{
		`"\ud800\u0041"`:  "\ufffdA",
		`"\udc00\ud800x"`: "\ufffd\ufffdx",
		`"\ud83d\ude00"`:  "😀",
		`"\ud800"`:        "\ufffd",
	} {
		s := Scanner{B: []byte(in)}
		if got, ok := s.Str(); !ok || string(got) != want || s.I != len(in) {
			t.Errorf("%s: %q, %v (at %d), want %q", in, got, ok, s.I, want)
		}
	}
}

func TestInvalidUTF8DepthIsBounded(t *testing.T) {
	deep := strings.Repeat("[", MaxDepth+10) + "\"\xff\"" + strings.Repeat("]", MaxDepth+10)
	if _, found := InvalidUTF8([]byte(deep)); found {
		t.Error("a walk deeper than MaxDepth went on")
	}
	shallow := "{\"a\":[1,\"\xff\"]}"
	if p, found := InvalidUTF8([]byte(shallow)); !found || p != "/a/1" {
		t.Errorf("InvalidUTF8(%q) = %q, %v", shallow, p, found)
	}
}

// TestInvalidUTF8CostsTheInputOnly: finding the bad string builds its
// pointer once, not a pointer per element or member on the way (which,
// deep in nesting, cost gigabytes for a megabyte body).
func TestInvalidUTF8CostsTheInputOnly(t *testing.T) {
	body := []byte(strings.Repeat("[", 5000) + strings.Repeat("0,", 100_000) + "{" + strings.Repeat(`"a/b~":0,`, 10_000) + "\"k\":\"\xff\"}")
	var pointer string
	allocs := testing.AllocsPerRun(1, func() { pointer, _ = InvalidUTF8(body) })
	if want := strings.Repeat("/0", 4999) + "/100000/k"; pointer != want {
		t.Fatalf("pointer %.40q…, want %.40q…", pointer, want)
	}
	if allocs > 100 {
		t.Errorf("%v allocations for one bad string", allocs)
	}
}
