package catalog

import (
	"strings"
	"testing"
)

func TestAPIName(t *testing.T) {
	cases := []struct{ schema, table, api string }{
		{"public", "items", "items"},
		{"public", "MixedCase", "MixedCase"},
		{"public", "a.b", `public."a.b"`},
		{"public", `say "hi"`, `public."say ""hi"""`},
		{"public", `x"; DROP TABLE y; --`, `public."x""; DROP TABLE y; --"`},
		{"public", "naïve 表", "naïve 表"},
		{"public", "with space", "with space"},
		{"s", "t", "s.t"},
		{"Sales", "Q1", "Sales.Q1"},
		{"s", "a.b", `s."a.b"`},
		{"s.x", "t", `"s.x".t`},
		{`s"x`, `t.u"v`, `"s""x"."t.u""v"`},
		{"Public", "t", "Public.t"},
		{"ünï", "cödé", "ünï.cödé"},
		{"public", `"`, `public.""""`},
		{"public", ".", `public."."`},
	}
	for _, c := range cases {
		if got := APIName(c.schema, c.table); got != c.api {
			t.Errorf("APIName(%q, %q) = %s, want %s", c.schema, c.table, got, c.api)
		}
		s, tb, err := ParseAPIName(c.api)
		if err != nil || s != c.schema || tb != c.table {
			t.Errorf("ParseAPIName(%s) = %q, %q, %v; want %q, %q", c.api, s, tb, err, c.schema, c.table)
		}
	}
}

func TestParseAPIName(t *testing.T) {
	ok := []struct{ name, schema, table string }{
		{"t", "public", "t"},
		{"s.t", "s", "t"},
		{`"a.b"`, "public", "a.b"},
		{`s."a.b"`, "s", "a.b"},
		{`"s"."t"`, "s", "t"},
		{`"s".t`, "s", "t"},
		{`public.t`, "public", "t"},
		{`"a""b"`, "public", `a"b`},
		{`""""`, "public", `"`},
		{`"x""; DROP TABLE y; --"`, "public", `x"; DROP TABLE y; --`},
		{"Ünï.Cödé", "Ünï", "Cödé"},
	}
	for _, c := range ok {
		s, tb, err := ParseAPIName(c.name)
		if err != nil || s != c.schema || tb != c.table {
			t.Errorf("ParseAPIName(%s) = %q, %q, %v; want %q, %q", c.name, s, tb, err, c.schema, c.table)
		}
	}
	bad := []struct{ name, msg string }{
		{"", "empty table name"},
		{".", "empty part"},
		{".t", "empty part"},
		{"s.", "empty part"},
		{"s..t", "empty part"},
		{`""`, "empty part"},
		{`s.""`, "empty part"},
		{"a.b.c", "more than two"},
		{`"a".b.c`, "more than two"},
		{`"a`, "unbalanced"},
		{`s."a`, "unbalanced"},
		{`a"b`, "unbalanced"},
		{`"a"b`, "after a closing double quote"},
		{`"a""`, "unbalanced"},
		{`a"`, "unbalanced"},
	}
	for _, c := range bad {
		s, tb, err := ParseAPIName(c.name)
		if err == nil {
			t.Errorf("ParseAPIName(%s) = %q, %q; want an error", c.name, s, tb)
			continue
		}
		if !strings.Contains(err.Error(), c.msg) {
			t.Errorf("ParseAPIName(%s): error %q should say %q", c.name, err, c.msg)
		}
	}
}

func FuzzParseAPIName(f *testing.F) {
	for _, s := range []string{"t", "s.t", `"a.b"`, `s."a""b"`, `"`, "a.b.c", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		s, tb, err := ParseAPIName(name)
		if err != nil {
			return
		}
		if s == "" || tb == "" {
			t.Fatalf("ParseAPIName(%q) = %q, %q: empty part", name, s, tb)
		}
		s2, tb2, err := ParseAPIName(APIName(s, tb))
		if err != nil || s2 != s || tb2 != tb {
			t.Fatalf("round trip of %q, %q via %q: %q, %q, %v", s, tb, APIName(s, tb), s2, tb2, err)
		}
	})
}
