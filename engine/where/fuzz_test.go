package where

import (
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/shapelog/shapelog/engine/catalog"
)

var fuzzCols = []catalog.Column{
	{Name: "id", Type: &catalog.Type{Name: "integer", Kind: catalog.KindInt4}},
	{Name: "title", Type: &catalog.Type{Name: "text", Kind: catalog.KindText}},
	{Name: "f", Type: &catalog.Type{Name: "double precision", Kind: catalog.KindFloat8}},
	{Name: "at", Type: &catalog.Type{Name: "timestamp with time zone", Kind: catalog.KindTimestampTZ}},
	{Name: "iv", Type: &catalog.Type{Name: "interval", Kind: catalog.KindInterval}},
	{Name: "nums", Type: &catalog.Type{Name: "integer[]", Kind: catalog.KindArray, Elem: &catalog.Type{Name: "integer", Kind: catalog.KindInt4}}},
}

// FuzzParse checks that Parse never panics, that what it accepts renders
// SQL that parses back as one expression which Parse accepts again, and
// that Match never panics.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"id = 5", "title LIKE $1 AND f > 1.5", "at - iv > '2024-01-01'", "id IN (1, 2, NULL)",
		"3 = ANY(nums) OR nums @> '{1}'", "NOT (f IS NULL) AND title::text ILIKE '%\\%'", "iv = '1 day ago'", "true) OR (1=1"} {
		f.Add(s, "x", "1", "2024-01-02 03:04:05+00", "P1D", "{1,NULL}")
	}
	f.Fuzz(func(t *testing.T, expr, param, id, at, iv, nums string) {
		flt, err := Parse(expr, map[string]string{"1": param}, fuzzCols)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("%q: error %T", expr, err)
			}
			return
		}
		sql := flt.SQL()
		tree, err := pg_query.Parse("SELECT 1 WHERE " + sql)
		if err != nil || len(tree.Stmts) != 1 {
			t.Fatalf("%q rendered %q, which does not parse: %v", expr, sql, err)
		}
		if _, err := Parse(sql, nil, fuzzCols); err != nil {
			t.Fatalf("%q rendered %q, which Parse rejects: %v", expr, sql, err)
		}
		_, _ = flt.Match([][]byte{[]byte(id), []byte(param), []byte(id), []byte(at), []byte(iv), []byte(nums)})
	})
}
