package where

import (
	"math"
	"regexp"
	"strings"
	"testing"

	"github.com/shapelog/shapelog/engine/catalog"
)

func TestParseTime(t *testing.T) {
	for _, tc := range []struct {
		in   string
		k    kind
		want int64 // microseconds since the epoch
		ok   bool
	}{
		{"1970-01-01", kDate, 0, true},
		{"2024-01-02", kDate, 19724 * usPerDay, true},
		{"2024-01-02 03:04:05.123456+00", kTimestampTZ, 19724*usPerDay + (3*3600+4*60+5)*usPerSec + 123456, true},
		{"2024-01-02 03:04:05+05:30", kTimestampTZ, 19724*usPerDay + (3*3600+4*60+5-5*3600-30*60)*usPerSec, true},
		{"2024-01-02 03:04:05+05:30", kTimestamp, 19724*usPerDay + (3*3600+4*60+5)*usPerSec, true},
		{"2024-01-02T03:04Z", kTimestampTZ, 19724*usPerDay + (3*3600+4*60)*usPerSec, true},
		{"2024-01-02 24:00:00", kTimestamp, 19725 * usPerDay, true},
		{"1969-12-31 23:59:59.5", kTimestamp, -usPerSec / 2, true},
		{"0001-01-01 BC", kDate, daysFromCivil(0, 1, 1) * usPerDay, true},
		{"infinity", kTimestampTZ, math.MaxInt64, true},
		{"-infinity", kDate, math.MinInt64, true},
		{"2024-02-30", kDate, 0, false},
		{"2023-02-29", kDate, 0, false},
		{"2024-02-29", kDate, daysFromCivil(2024, 2, 29) * usPerDay, true},
		{"2024-01-02 25:00", kTimestamp, 0, false},
		{"today", kDate, 0, false},
		{"2024-1-2", kDate, 0, false},
	} {
		got, ok := parseTime(tc.in, tc.k)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("parseTime(%q, %v) = %d, %v; want %d, %v", tc.in, tc.k, got, ok, tc.want, tc.ok)
		}
	}
	for days := int64(-800000); days < 800000; days += 997 {
		y, m, d := civilFromDays(days)
		if back := daysFromCivil(y, m, d); back != days {
			t.Fatalf("civil round trip of day %d: %d-%d-%d → %d", days, y, m, d, back)
		}
	}
}

func TestIntervals(t *testing.T) {
	for _, tc := range []struct {
		in      string
		m, d    int32
		us      int64
		ok      bool
		display string
	}{
		{"P1Y2M3DT4H5M6.5S", 14, 3, (4*3600+5*60+6)*usPerSec + 500000, true, "P1Y2M3DT4H5M6.5S"},
		{"PT0S", 0, 0, 0, true, "PT0S"},
		{"P-1Y-2M3DT-4H-5M-6.25S", -14, 3, -((4*3600+5*60+6)*usPerSec + 250000), true, "P-1Y-2M3DT-4H-5M-6.25S"},
		{"1 year 2 mons 3 days 04:05:06.5", 14, 3, (4*3600+5*60+6)*usPerSec + 500000, true, "P1Y2M3DT4H5M6.5S"},
		{"-1 mons +2 days -03:00:00", -1, 2, -3 * 3600 * usPerSec, true, "P-1M2DT-3H"},
		{"1 day ago", 0, -1, 0, true, "P-1D"},
		{"@ 2 hours 30 mins", 0, 0, 150 * 60 * usPerSec, true, "PT2H30M"},
		{"1.5 hours", 0, 0, 90 * 60 * usPerSec, true, "PT1H30M"},
		{"2 weeks", 0, 14, 0, true, "P14D"},
		{"P1W", 0, 7, 0, true, "P7D"},
		{"90", 0, 0, 90 * usPerSec, true, "PT1M30S"},
		{"1.5 days", 0, 0, 0, false, ""},
		{"1 fortnight", 0, 0, 0, false, ""},
		{"", 0, 0, 0, false, ""},
	} {
		v, ok := parseInterval(tc.in)
		if ok != tc.ok || (ok && (v.m != tc.m || v.d != tc.d || v.i != tc.us)) {
			t.Errorf("parseInterval(%q) = %d mons %d days %d us, %v", tc.in, v.m, v.d, v.i, ok)
			continue
		}
		if ok && formatInterval(v) != tc.display {
			t.Errorf("formatInterval(%q) = %s, want %s", tc.in, formatInterval(v), tc.display)
		}
	}
	month, _ := parseInterval("1 mon")
	days30, _ := parseInterval("30 days")
	hours720, _ := parseInterval("720 hours")
	if compare(kInterval, month, days30) != 0 || compare(kInterval, days30, hours720) != 0 {
		t.Error("1 mon, 30 days and 720 hours must be equal")
	}
	if jan31, _ := parseTime("2024-01-31 10:00", kTimestamp); formatValue(kTimestamp, value{i: addInterval(jan31, month)}) != "2024-02-29 10:00:00" {
		t.Errorf("2024-01-31 + 1 mon = %s", formatValue(kTimestamp, value{i: addInterval(jan31, month)}))
	}
}

func TestFormatFloat(t *testing.T) {
	for f, want := range map[float64]string{
		0: "0", 1: "1", -1.5: "-1.5", 0.1: "0.1", 1.0 / 3: "0.3333333333333333", 1e15: "1e+15", 123456789012345: "123456789012345",
		1e-4: "0.0001", 1.5e-5: "1.5e-05", 1e300: "1e+300", math.Inf(1): "Infinity", math.NaN(): "NaN", math.Copysign(0, -1): "-0",
	} {
		if got := formatFloat(f); got != want {
			t.Errorf("formatFloat(%v) = %s, want %s", f, got, want)
		}
	}
}

// likeRegexp is a reference LIKE implementation.
func likeRegexp(p string, ci bool) *regexp.Regexp {
	var b strings.Builder
	if ci {
		b.WriteString("(?i)")
	}
	b.WriteString("(?s)^")
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '%':
			b.WriteString(".*")
		case '_':
			b.WriteString(".")
		case '\\':
			i++
			b.WriteString(regexp.QuoteMeta(p[i : i+1]))
		default:
			b.WriteString(regexp.QuoteMeta(p[i : i+1]))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

func TestLike(t *testing.T) {
	subjects := []string{"", "a", "ab", "abc", "aXbXc", "%", "_", `a\b`, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab", "ABC", "xabcx"}
	patterns := []string{"", "%", "_", "a%", "%c", "a_c", "%b%", "a%b%c", `\%`, `\_`, `a\\b`, "%a%a%a%a%a%a%a%a%a%c", "__", "%%", "A%", "_b_"}
	for _, p := range patterns {
		for _, ci := range []bool{false, true} {
			toks, err := compileLike(p, ci)
			if err != nil {
				t.Fatal(err)
			}
			re := likeRegexp(p, ci)
			for _, s := range subjects {
				if got, want := likeMatch(s, toks, ci), re.MatchString(s); got != want {
					t.Errorf("%q LIKE %q (ci %v) = %v, want %v", s, p, ci, got, want)
				}
			}
		}
	}
	if _, err := compileLike(`abc\`, false); err == nil {
		t.Error("trailing escape accepted")
	}
}

func TestMatchUnit(t *testing.T) {
	cols := []catalog.Column{
		{Name: "id", Type: &catalog.Type{Name: "integer", Kind: catalog.KindInt4}},
		{Name: "title", Type: &catalog.Type{Name: "text", Kind: catalog.KindText}},
		{Name: "done", Type: &catalog.Type{Name: "boolean", Kind: catalog.KindBool}},
		{Name: "Tags", Type: &catalog.Type{Name: "text[]", Kind: catalog.KindArray, Elem: &catalog.Type{Name: "text", Kind: catalog.KindText}}},
	}
	row := func(vals ...any) [][]byte {
		out := make([][]byte, len(vals))
		for i, v := range vals {
			if s, ok := v.(string); ok {
				out[i] = []byte(s)
			}
		}
		return out
	}
	for _, tc := range []struct {
		expr string
		row  [][]byte
		want bool
	}{
		{"id = 5", row("5", nil, nil, nil), true},
		{"5 = id", row("6", nil, nil, nil), false},
		{"id = 5", row(nil, nil, nil, nil), false},
		{"NOT (id = 5)", row(nil, nil, nil, nil), false},
		{"id = 5 OR done", row(nil, nil, "t", nil), true},
		{"id = 5 AND done", row(nil, nil, "f", nil), false},
		{"(id = 5 AND done) IS NULL", row(nil, nil, "t", nil), true},
		{"(id = 5 AND done) IS NULL", row(nil, nil, "f", nil), false},
		{"id IN (1, NULL) IS UNKNOWN", row("2", nil, nil, nil), true},
		{"id NOT IN (1, NULL)", row("2", nil, nil, nil), false},
		{"title LIKE 'a%'", row(nil, "abc", nil, nil), true},
		{"title ILIKE 'Ä%'", row(nil, "äbc", nil, nil), true},
		{`'x' = ANY("Tags")`, row(nil, nil, nil, `{a,"x"}`), true},
		{`"Tags" @> '{"b c"}'`, row(nil, nil, nil, `{a,"b c"}`), true},
		{"id BETWEEN SYMMETRIC 10 AND 1", row("5", nil, nil, nil), true},
		{"id NOT BETWEEN 1 AND 10", row("5", nil, nil, nil), false},
		{"-id * 2 = -10 AND id % 3 = 2 AND id / 2 = 2", row("5", nil, nil, nil), true},
		{"title || '!' = $1", row(nil, "hi", nil, nil), true},
	} {
		f, err := Parse(tc.expr, map[string]string{"1": "hi!"}, cols)
		if err != nil {
			t.Errorf("%s: %v", tc.expr, err)
			continue
		}
		if got, err := f.Match(tc.row); err != nil || got != tc.want {
			t.Errorf("%s: %v, %v; want %v", tc.expr, got, err, tc.want)
		}
	}
}
