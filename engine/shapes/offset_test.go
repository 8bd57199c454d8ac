package shapes

import (
	"slices"
	"testing"
)

func TestOffsets(t *testing.T) {
	for _, s := range []string{"-1", "0_0", "0_12", "0_inf", "26800584_4", "18446744073709551615_0"} {
		o, err := ParseOffset(s)
		if err != nil || o.String() != s {
			t.Errorf("%q: %v %v", s, o, err)
		}
	}
	for _, s := range []string{"", "now", "1", "_1", "1_", "a_1", "1_b", "-2", "1_-1", "0_inf_1"} {
		if _, err := ParseOffset(s); err == nil {
			t.Errorf("%q parsed", s)
		}
	}
	order := []Offset{BeforeAll, {Op: 0}, {Op: 5}, SnapshotEnd, {Tx: 7, Op: 0}, {Tx: 7, Op: 3}, {Tx: 9}}
	for i := range order {
		for j := range order {
			if got := order[i].Less(order[j]); got != (i < j) {
				t.Errorf("%v < %v = %v", order[i], order[j], got)
			}
		}
	}
}

func TestParseIdentifiers(t *testing.T) {
	for _, tc := range []struct {
		in   string
		sep  byte
		want []string
	}{
		{"items", '.', []string{"items"}},
		{"Public.Items", '.', []string{"public", "items"}},
		{`"My Schema"."a.b""c"`, '.', []string{"My Schema", `a.b"c`}},
		{`id, "Status-Check",n`, ',', []string{"id", "Status-Check", "n"}},
	} {
		got, err := parseIdentifiers(tc.in, tc.sep)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%q: %q %v", tc.in, got, err)
		}
	}
	for _, in := range []string{"", `"unterminated`, `a"b`, "a..b", `""`, "a.", `"a"b`} {
		if got, err := parseIdentifiers(in, '.'); err == nil {
			t.Errorf("%q parsed as %q", in, got)
		}
	}
}
