package jsonscan

import (
	"encoding/json"
	"fmt"
	"math/big"
	"math/rand"
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
