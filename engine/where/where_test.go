package where_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/shapelog/shapelog/engine/catalog"
	"github.com/shapelog/shapelog/engine/where"
	"github.com/shapelog/shapelog/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// fixture is a table with one column of each supported kind and rows with
// NULLs, unicode, quotes and edge values.
func fixture(t *testing.T) (context.Context, *pgx.Conn, *catalog.Table) {
	t.Helper()
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range catalog.SessionSettings {
		cfg.RuntimeParams[k] = v
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	_, err = conn.Exec(ctx, `CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
	CREATE TABLE w (id int PRIMARY KEY, big bigint, f float8, n numeric, title text, code char(4), done bool, day date,
		at timestamptz, local timestamp, tm time, u uuid, nums int4[], tags text[], m mood, "Mixed Case" text);
	INSERT INTO w SELECT g, g * 1000000000000, g / 3.0, g * 1.5, 'title ' || g, 'c' || (g % 3), g % 2 = 0,
		date '2024-01-01' + g, timestamptz '2024-01-01 00:00:00+00' + g * interval '7 hours', timestamp '2024-01-01' + g * interval '5 hours',
		time '00:00' + g * interval '37 minutes', ('00000000-0000-0000-0000-0000000000' || lpad(g::text, 2, '0'))::uuid,
		ARRAY[g, g + 1], ARRAY['t' || (g % 4), 'x'], (ARRAY['sad', 'ok', 'happy'])[g % 3 + 1]::mood, 'MC ' || g
	FROM generate_series(1, 40) g;
	INSERT INTO w (id) VALUES (100);
	INSERT INTO w (id, title, f, tags, nums) VALUES (101, 'O''Brien "q" ünïcødé %_\', 'NaN', '{}', '{NULL,3}'), (102, '', '-Infinity', '{"a b",NULL}', '{}')`)
	if err != nil {
		t.Fatal(err)
	}
	var oid uint32
	if err := conn.QueryRow(ctx, `SELECT 'w'::regclass::oid`).Scan(&oid); err != nil {
		t.Fatal(err)
	}
	table, err := catalog.LoadTable(ctx, conn, catalog.NewTypes(), oid)
	if err != nil {
		t.Fatal(err)
	}
	return ctx, conn, table
}

// TestMatchAgreesWithPostgres evaluates clauses in Go on every row's text
// values and compares with PostgreSQL running the normalized SQL.
func TestMatchAgreesWithPostgres(t *testing.T) {
	ctx, conn, table := fixture(t)
	cols := make([]string, len(table.Columns))
	for i, c := range table.Columns {
		cols[i] = pgx.Identifier{c.Name}.Sanitize()
	}
	rows, err := conn.Query(ctx, "SELECT "+strings.Join(cols, ", ")+" FROM w ORDER BY id", pgx.QueryResultFormats{pgx.TextFormatCode})
	if err != nil {
		t.Fatal(err)
	}
	var data [][][]byte
	var ids []string
	for rows.Next() {
		raw := rows.RawValues()
		row := make([][]byte, len(raw))
		for i, v := range raw {
			if v != nil {
				row[i] = append([]byte{}, v...)
			}
		}
		data = append(data, row)
		ids = append(ids, string(row[0]))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	clauses := []struct {
		expr   string
		params map[string]string
	}{
		{"id = 5", nil},
		{"id > $1 AND id <= $2", map[string]string{"1": "3", "2": "9"}},
		{"id <> 5 AND NOT (id < 30)", nil},
		{"big >= 20000000000000", nil},
		{"f > 5.5 OR f IS NULL", nil},
		{"f < 1", nil},
		{"n BETWEEN 3 AND 12.5", nil},
		{"n NOT BETWEEN SYMMETRIC 30 AND 3", nil},
		{"title = 'title 7'", nil},
		{"title LIKE 'title 1%'", nil},
		{"title ILIKE $1", map[string]string{"1": "TITLE _"}},
		{"title NOT LIKE '%1%'", nil},
		{`title LIKE '%\%\_\\'`, nil},
		{"title ~~ '%ünï%'", nil},
		{"lower(title) = 'title 3' OR upper(title) = 'TITLE 4'", nil},
		{"length(title) > 8", nil},
		{"title || '!' = 'title 2!'", nil},
		{"concat(title, id) = 'title 22'", nil},
		{"coalesce(title, 'none') = 'none'", nil},
		{"title IS NULL", nil},
		{"title IS NOT NULL AND done", nil},
		{"done IS NOT TRUE", nil},
		{"done IS UNKNOWN", nil},
		{"done = false", nil},
		{"code = 'c1'", nil},
		{"code IN ('c0', 'c2')", nil},
		{"id IN (1, 2, 3, NULL)", nil},
		{"id NOT IN (1, 2, NULL)", nil},
		{"id NOT IN (1, 2)", nil},
		{"day > '2024-01-20'", nil},
		{"day = $1", map[string]string{"1": "2024-01-05"}},
		{"at < '2024-01-03 12:00:00+00'", nil},
		{"at >= '2024-01-05T00:00:00Z'", nil},
		{"local BETWEEN '2024-01-02' AND '2024-01-04 10:00'", nil},
		{"at > local", nil},
		{"day < at", nil},
		{"tm > '12:00'", nil},
		{"u = '00000000-0000-0000-0000-000000000017'", nil},
		{"u IN ($1, $2)", map[string]string{"1": "00000000-0000-0000-0000-000000000003", "2": "00000000000000000000000000000004"}},
		{"nums @> '{5}'", nil},
		{"nums <@ ARRAY[1, 2, 3, 4]", nil},
		{"nums && '{7,40,3}'", nil},
		{"nums = '{10,11}'", nil},
		{"'t1' = ANY(tags)", nil},
		{"3 = ANY(nums)", nil},
		{"id > ALL('{1,2,30}')", nil},
		{"tags @> ARRAY['x']", nil},
		{"m = 'happy'", nil},
		{"m::text IN ('sad', 'ok')", nil},
		{`"Mixed Case" = 'MC 9'`, nil},
		{"id % 7 = 0 AND id / 2 > 5", nil},
		{"-id < -35", nil},
		{"id * 2 + 1 = 11 OR f * 3 > 50", nil},
		{"id::text = '12'", nil},
		{"title::text LIKE 'title 3%'", nil},
		{"big::float8 > 1e13", nil},
		{"id IS DISTINCT FROM 5 AND title IS NOT DISTINCT FROM 'title 6'", nil},
		{"greatest(id, 20) = 20 AND least(id, 5) = 5", nil},
		{"(id < 5 OR id > 35) AND NOT done", nil},
		{"f = 'NaN'", nil},
		{"f < 0", nil},
		{"true", nil},
		{"NULL::bool", nil},
	}
	for _, tc := range clauses {
		f, err := where.Parse(tc.expr, tc.params, table.Columns)
		if err != nil {
			t.Errorf("%s: %v", tc.expr, err)
			continue
		}
		want := map[string]bool{}
		pgRows, err := conn.Query(ctx, "SELECT id::text FROM w WHERE "+f.SQL())
		if err != nil {
			t.Errorf("%s → %s: %v", tc.expr, f.SQL(), err)
			continue
		}
		for pgRows.Next() {
			var id string
			_ = pgRows.Scan(&id)
			want[id] = true
		}
		pgRows.Close()
		for i, row := range data {
			got, err := f.Match(row)
			if err != nil {
				t.Errorf("%s on row %s: %v", tc.expr, ids[i], err)
				break
			}
			if got != want[ids[i]] {
				t.Errorf("%s (SQL %s) on row %s: Go %v, PostgreSQL %v", tc.expr, f.SQL(), ids[i], got, want[ids[i]])
			}
		}
	}
}

func TestParseErrors(t *testing.T) {
	_, _, table := fixture(t)
	for _, tc := range []struct{ expr, want string }{
		{"nope = 1", "unknown reference nope"},
		{"w.id = 1", "unknown reference w.id"},
		{"id = 1; DROP TABLE w", "single"},
		{"true) OR (1=1", "syntax error"},
		{"id = 1 -- ", ""},
		{"id IN (SELECT 1)", "subqueries are not supported"},
		{"now() > at", "unknown or unsupported function now/0"},
		{"random() > 0.5", "unknown or unsupported function random/0"},
		{"count(*) > 1", "aggregation is not supported"},
		{"title > 5", "operator does not exist: text > int8"},
		{"id = 'abc'", "invalid input syntax for type int8"},
		{"id = $1", "parameter $1 has no value"},
		{"title", "must be a boolean expression"},
		{"id + title", "operator does not exist"},
		{"u > 5", "uuid"},
		{"m > 'x' AND id::money > 0", "unsupported type: money"},
		{"id = 1 UNION SELECT 1", "single boolean expression"},
		{"title SIMILAR TO 'x'", "unsupported"},
		{"B'101' = B'101'", ""},
	} {
		f, err := where.Parse(tc.expr, nil, table.Columns)
		if tc.want == "" {
			if err == nil && strings.Contains(f.SQL(), "--") {
				t.Errorf("%q: SQL %q carries a comment", tc.expr, f.SQL())
			}
			continue
		}
		var we *where.Error
		if !errors.As(err, &we) || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "At location ") {
			t.Errorf("%q: got %v, want an *Error containing %q", tc.expr, err, tc.want)
		}
	}
	f, err := where.Parse("title = $1", map[string]string{"1": "x'; DROP TABLE w; --"}, table.Columns)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.SQL(); got != `("title" = 'x''; DROP TABLE w; --'::text)` {
		t.Errorf("parameter SQL: %s", got)
	}
	if cols := f.Columns(); fmt.Sprint(cols) != "[4]" {
		t.Errorf("columns: %v", cols)
	}
	if _, err := f.Match([][]byte{nil, nil, nil, nil, []byte("x'; DROP TABLE w; --")}); err != nil {
		t.Error(err)
	}
	div, err := where.Parse("10 / (id - 5) > 1", nil, table.Columns)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := div.Match([][]byte{[]byte("5")}); err == nil {
		t.Error("division by zero: no error")
	}
}

func BenchmarkMatch(b *testing.B) {
	cols := []catalog.Column{
		{Name: "id", Type: &catalog.Type{Kind: catalog.KindInt4}},
		{Name: "title", Type: &catalog.Type{Kind: catalog.KindText}},
		{Name: "done", Type: &catalog.Type{Kind: catalog.KindBool}},
	}
	row := [][]byte{[]byte("12345"), []byte("some title"), []byte("t")}
	for _, expr := range []string{"id = 5", "id > 100 AND title LIKE 'some%' AND done"} {
		f, err := where.Parse(expr, nil, cols)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(expr, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = f.Match(row)
			}
		})
	}
}
