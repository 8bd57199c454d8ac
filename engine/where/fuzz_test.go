package where

import (
	"errors"
	"slices"
	"strings"
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

// isLimit reports whether err is one of the size and complexity bounds.
func isLimit(err error) bool {
	var e *Error
	return errors.As(err, &e) && strings.Contains(e.Reason, "; the limit is ")
}

// reparse checks that the SQL a filter renders parses in pg_query as one
// statement and in Parse again, without its COLLATE "C" (unless the
// rendering, which adds casts and parentheses, outgrows a bound), to a
// filter that renders the same SQL and reads the same columns.
// It returns the reparsed filter, or nil.
func reparse(t *testing.T, expr string, flt *Filter, cols []catalog.Column) *Filter {
	t.Helper()
	sql := flt.SQL()
	tree, err := pg_query.Parse(prefix + sql)
	if err != nil || len(tree.Stmts) != 1 {
		t.Fatalf("%q rendered %q, which does not parse: %v", expr, sql, err)
	}
	again, err := Parse(withoutCollate(t, sql), nil, cols)
	if isLimit(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("%q rendered %q, which Parse rejects: %v", expr, sql, err)
	}
	if again.SQL() != sql {
		t.Fatalf("%q rendered %q, which renders %q", expr, sql, again.SQL())
	}
	if !slices.Equal(again.Columns(), flt.Columns()) {
		t.Fatalf("%q reads columns %v, its SQL %q reads %v", expr, flt.Columns(), sql, again.Columns())
	}
	return again
}

// withoutCollate removes the COLLATE "C" that SQL adds to text
// comparisons: Parse does not take COLLATE, and without it Match compares
// byte-wise all the same.
func withoutCollate(t *testing.T, sql string) string {
	t.Helper()
	scan, err := pg_query.Scan(sql)
	if err != nil {
		t.Fatalf("%q does not scan: %v", sql, err)
	}
	var b strings.Builder
	at := 0
	for i, tok := range scan.Tokens {
		if tok.Token == pg_query.Token_COLLATE && i+1 < len(scan.Tokens) {
			b.WriteString(sql[at:tok.Start])
			at = int(scan.Tokens[i+1].End)
		}
	}
	b.WriteString(sql[at:])
	return b.String()
}

// sameMatch checks that two filters for one clause agree on a row where
// both evaluate. Where one fails the row holds a value PostgreSQL would not
// output (a float8 of ""), which one reads as text and the other parses.
func sameMatch(t *testing.T, expr string, a, b *Filter, row [][]byte) {
	t.Helper()
	ra, ea := a.Match(row)
	rb, eb := b.Match(row)
	if ea == nil && eb == nil && ra != rb {
		t.Fatalf("%q on %q: %v; its SQL %q: %v", expr, row, ra, b.SQL(), rb)
	}
}

// FuzzParse checks that Parse never panics and returns only *Error; that
// what it accepts keeps within the bounds, renders SQL that pg_query
// parses as one statement and Parse accepts again with the same SQL and
// columns; and that Match never panics and agrees with the reparsed SQL.
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
		if len(expr) > MaxLength {
			t.Fatalf("%q (%d bytes) accepted", expr, len(expr))
		}
		for i, c := range flt.Columns() {
			if c < 0 || c >= len(fuzzCols) || (i > 0 && c <= flt.Columns()[i-1]) {
				t.Fatalf("%q: columns %v", expr, flt.Columns())
			}
		}
		again := reparse(t, expr, flt, fuzzCols)
		row := [][]byte{[]byte(id), []byte(param), []byte(id), []byte(at), []byte(iv), []byte(nums)}
		_, _ = flt.Match(row)
		if again != nil {
			sameMatch(t, expr, flt, again, row)
			sameMatch(t, expr, flt, again, make([][]byte, len(fuzzCols))) // all NULL
		}
	})
}

// matchCols are columns of most supported kinds, for FuzzMatch.
var matchCols = []catalog.Column{
	{Name: "id", Type: &catalog.Type{Name: "integer", Kind: catalog.KindInt4}},
	{Name: "big", Type: &catalog.Type{Name: "bigint", Kind: catalog.KindInt8}},
	{Name: "small", Type: &catalog.Type{Name: "smallint", Kind: catalog.KindInt2}},
	{Name: "f", Type: &catalog.Type{Name: "double precision", Kind: catalog.KindFloat8}},
	{Name: "f4", Type: &catalog.Type{Name: "real", Kind: catalog.KindFloat4}},
	{Name: "n", Type: &catalog.Type{Name: "numeric", Kind: catalog.KindNumeric}},
	{Name: "title", Type: &catalog.Type{Name: "text", Kind: catalog.KindText}},
	{Name: "code", Type: &catalog.Type{Name: "character", Kind: catalog.KindText}},
	{Name: "done", Type: &catalog.Type{Name: "boolean", Kind: catalog.KindBool}},
	{Name: "day", Type: &catalog.Type{Name: "date", Kind: catalog.KindDate}},
	{Name: "at", Type: &catalog.Type{Name: "timestamp with time zone", Kind: catalog.KindTimestampTZ}},
	{Name: "local", Type: &catalog.Type{Name: "timestamp without time zone", Kind: catalog.KindTimestamp}},
	{Name: "tm", Type: &catalog.Type{Name: "time without time zone", Kind: catalog.KindTime}},
	{Name: "iv", Type: &catalog.Type{Name: "interval", Kind: catalog.KindInterval}},
	{Name: "u", Type: &catalog.Type{Name: "uuid", Kind: catalog.KindUUID}},
	{Name: "nums", Type: &catalog.Type{Name: "integer[]", Kind: catalog.KindArray, Elem: &catalog.Type{Name: "integer", Kind: catalog.KindInt4}}},
	{Name: "tags", Type: &catalog.Type{Name: "text[]", Kind: catalog.KindArray, Elem: &catalog.Type{Name: "text", Kind: catalog.KindText}}},
	{Name: "doc", Type: &catalog.Type{Name: "jsonb", Kind: catalog.KindJSONB}},
}

// matchClauses cover every kind of node Match evaluates.
var matchClauses = []string{
	"id = 5 AND big > 3 OR small <= -1",
	"id % 7 = 0 AND id / 2 > 5 AND -id * 2 < big - small",
	"big / 1000000000000 = id OR big * big > 0",
	"f / 2 > 1 OR f4 * 7 >= 20 OR n BETWEEN 3 AND 12.5",
	"n NOT BETWEEN SYMMETRIC 30 AND 3 OR f::int = 3",
	"greatest(f, n, 3) > 10 OR least(id, small) < 0 OR coalesce(f4, f) = 1",
	"title LIKE 'ti_le 1%' OR title NOT ILIKE '%É\\%' OR title LIKE $1",
	"lower(title) = 'a' OR upper(title) = 'B' OR length(title) > 3 OR char_length(code) = 2",
	"title || '!' = 'x!' OR concat(title, '-', f, day) LIKE '%-0.%'",
	"title IN ('a', 'b', NULL) OR code = 'c1' OR code < 'c'",
	"id::text = '12' OR f::text LIKE '1e%' OR nums::text = '{1,2}' OR doc::text LIKE '%g%'",
	"done IS NOT FALSE AND done IS NOT UNKNOWN OR done::int = 1 OR (done = false) IS TRUE",
	"id IN (1.5, 2, 3) OR id NOT IN (1, 2) OR title IS NULL OR title IS DISTINCT FROM code",
	"day = '2024-01-05 10:00' OR at >= '2024-01-05T00:00:00Z' OR local = '-infinity'",
	"day = local::date OR tm > '12:00' OR day + 3 = '2024-01-10' OR day - '2024-01-01' > 10",
	"day + interval '1 month' = '2024-02-29' OR at + iv > '2024-03-05' OR at - local > '0'",
	"(at - local)::text LIKE '%DT%' OR (day - interval '1 year')::text LIKE '2023-%' OR day + tm > local",
	"iv = 'P30D' OR iv <> '5 hours' OR - iv > '0' OR iv + iv < '1 day' OR iv IS NULL",
	"u = 'a0000000-0000-0000-0000-000000000000' OR u::text LIKE 'a%'",
	"nums && '{7,40,3}' OR nums = ARRAY[1, 2] OR nums @> ARRAY[id] OR nums <@ '{1,2,3}'",
	"'t1' = ANY(tags) OR id > ALL('{1,2,30}') OR id = ANY(nums) OR 'x' <> ALL(tags)",
	"tags @> '{\"with,comma\",NULL}' OR tags = '{}' OR tags && $2",
	"at::date = day OR local::timestamptz = at OR at::timestamp > local OR day::timestamp = local",
	"f = 'NaN' OR f > 1e299 OR f4 = 'Infinity' OR n = 'NaN'",
}

// FuzzMatch evaluates fixed clauses on arbitrary rows: Match must not
// panic, must give the same answer twice, and must agree with the filter
// its SQL parses to.
func FuzzMatch(f *testing.F) {
	f.Add(uint8(0), "5\x003\x00-1\x001.5\x002\x003\x00title 1\x00c1\x00t\x002024-01-02\x002024-01-02 03:04:05+00\x002024-01-02 03:04:05\x0012:00:00\x00P1D\x00a0000000-0000-0000-0000-000000000000\x00{1,2}\x00{t1,x}\x00{\"g\": 1}", uint32(0), "x", "{t1}")
	f.Add(uint8(13), "\x00\x00\x00NaN\x00Infinity\x00NaN\x00\x00\x00f\x00infinity\x00-infinity\x00infinity\x0024:00:00\x00-P1Y2M3DT4H5M6.5S\x00\x00{NULL,3}\x00{\"a b\",NULL}\x00", uint32(0b101), "%", "{}")
	f.Fuzz(func(t *testing.T, clause uint8, values string, nulls uint32, p1, p2 string) {
		expr := matchClauses[int(clause)%len(matchClauses)]
		flt, err := Parse(expr, map[string]string{"1": "%", "2": "{t1}"}, matchCols)
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		again := reparse(t, expr, flt, matchCols)
		vals := strings.Split(values, "\x00")
		row := make([][]byte, len(matchCols))
		for i := range row {
			if i < len(vals) && nulls&(1<<i) == 0 {
				row[i] = []byte(vals[i])
			}
		}
		r1, e1 := flt.Match(row)
		r2, e2 := flt.Match(row)
		if r1 != r2 || (e1 == nil) != (e2 == nil) {
			t.Fatalf("%s on %q: %v, %v then %v, %v", expr, row, r1, e1, r2, e2)
		}
		if again != nil {
			sameMatch(t, expr, flt, again, row)
		}
		// The parameters too: a LIKE pattern or array from the client.
		if withParams, err := Parse(expr, map[string]string{"1": p1, "2": p2}, matchCols); err == nil {
			if again := reparse(t, expr, withParams, matchCols); again != nil {
				sameMatch(t, expr, withParams, again, row)
			}
		}
	})
}
