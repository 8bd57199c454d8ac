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

// fixture is a table with one column of each supported kind (and a few
// unsupported ones read through ::text) and rows with NULLs, unicode,
// quotes and edge values. title gets an ICU collation when the server has
// one, so that text ordering and case folding are not those of the test
// cluster's C locale.
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
	collate := ""
	var icu string
	if conn.QueryRow(ctx, `SELECT collname FROM pg_collation WHERE collname = 'und-x-icu'`).Scan(&icu) == nil {
		collate = `COLLATE "und-x-icu"`
	}
	_, err = conn.Exec(ctx, `CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
	CREATE TABLE w (id int PRIMARY KEY, big bigint, f float8, n numeric, title text `+collate+`, code char(4), done bool, day date,
		at timestamptz, local timestamp, tm time, u uuid, nums int4[], tags text[], m mood, "Mixed Case" text,
		f4 real, iv interval, vc varchar(10), addr inet, doc jsonb, small int2);
	INSERT INTO w SELECT g, g * 1000000000000, g / 3.0, g * 1.5, 'title ' || g, 'c' || (g % 3), g % 2 = 0,
		date '2024-01-01' + g, timestamptz '2024-01-01 00:00:00+00' + g * interval '7 hours', timestamp '2024-01-01' + g * interval '5 hours',
		time '00:00' + g * interval '37 minutes', ('00000000-0000-0000-0000-0000000000' || lpad(g::text, 2, '0'))::uuid,
		ARRAY[g, g + 1], ARRAY['t' || (g % 4), 'x'], (ARRAY['sad', 'ok', 'happy'])[g % 3 + 1]::mood, 'MC ' || g,
		g / 7.0, g * interval '5 hours' + (g % 3) * interval '1 mon' - (g % 4) * interval '1 day', 'v' || g,
		('10.0.' || g || '.1/' || (16 + g % 17))::inet, jsonb_build_object('g', g), g - 20
	FROM generate_series(1, 40) g;
	INSERT INTO w (id) VALUES (100);
	INSERT INTO w (id, title, f, tags, nums) VALUES (101, 'O''Brien "q" ünïcødé %_\', 'NaN', '{}', '{NULL,3}'), (102, '', '-Infinity', '{"a b",NULL}', '{}');
	INSERT INTO w (id, title, f, n, big, f4, code, day, at, local, iv, tags, nums, small) VALUES
		(103, 'Zebra', '-0', 'NaN', -9000000000000000000, 0.1, 'ab', '0044-03-15 BC', 'infinity', '-infinity', '-1 mons +2 days -03:00:00',
			'{"with,comma","quo\"te",NULL,"NULL"}', '{1,2}', -32768),
		(104, 'élan', 1e300, 123456789.123456789, 9000000000000000000, 3.4e38, 'ab  ', '2024-01-31', '2024-02-29 23:59:59.999999+00',
			'2024-01-31 12:00', '1 year 2 mons 3 days 04:05:06.5', '{" lead",trail }', '{-5,0,5}', 32767),
		(105, 'ÉCOLE', 1e-300, 0.1, 0, 1e-30, 'Zz', '2023-12-31', '1999-12-31 23:00:00-05', '2000-01-01 00:00:00', '30 days', '{É,é,e}', '{7,NULL,7}', 0),
		(106, 'apple', 123456789012345678, -1.5, -1, -2.5, 'é', '2024-02-29', '2024-03-31 00:00:00+00', '2024-03-31 23:59:59.5', '1 mon', '{apple}', '{40,41}', 1),
		(107, 'Éa zA', 0.1, 1e20, 1, 0, 'AB', '2000-02-29', '1970-01-01 00:00:00+00', '1970-01-01', '720 hours', '{}', '{}', 2)`)
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
	type clause struct {
		expr   string
		params map[string]string
	}
	p := func(vals ...string) map[string]string {
		m := map[string]string{}
		for i, v := range vals {
			m[fmt.Sprint(i+1)] = v
		}
		return m
	}
	clauses := []clause{
		// numbers
		{"id = 5", nil},
		{"id > $1 AND id <= $2", p("3", "9")},
		{"id <> 5 AND NOT (id < 30)", nil},
		{"id != 7 AND id < 10", nil},
		{"5 < id AND 9 >= id AND 7 <> id", nil},
		{"'title 3' <= title AND 'title 4' > title", nil},
		{"small <= -19 OR -1 = small", nil},
		{"big >= 20000000000000", nil},
		{"big < 0 OR big > 8000000000000000000", nil},
		{"f > 5.5 OR f IS NULL", nil},
		{"f < 1", nil},
		{"f = 'NaN'", nil},
		{"f > 1e299 OR f < -1e299", nil},
		{"f < 0", nil},
		{"f = 0", nil},
		{"f = 0.1", nil},
		{"n BETWEEN 3 AND 12.5", nil},
		{"n NOT BETWEEN SYMMETRIC 30 AND 3", nil},
		{"n = 0.1 OR n = 123456789.123456789", nil},
		{"n > 1e19 OR n = 'NaN'", nil},
		{"n = $1", p("1.5")},
		{"f4 = 0.1", nil},
		{"f4 > 2 AND f4 < 4", nil},
		{"f4 > 1e38 OR f4 < -2", nil},
		{"f4 * 7 >= 20", nil},
		{"small < -10 OR small > 32000", nil},
		{"small * 1000 < -5000", nil},
		{"id % 7 = 0 AND id / 2 > 5", nil},
		{"-id < -35", nil},
		{"id * 2 + 1 = 11 OR f * 3 > 50", nil},
		{"big / 1000000000000 = id", nil},
		{"id / 3 = 2", nil},
		{"(id - 20) % 6 = -1", nil},
		{"f / 2 > 1", nil},
		{"id::float8 / 4 = 2.5", nil},
		{"big::float8 > 1e13", nil},
		{"f::int = 3", nil},
		{"n::int8 % 2 = 1", nil},
		{"greatest(id, 20) = 20 AND least(id, 5) = 5", nil},
		{"greatest(f, n, 3) > 10", nil},
		{"coalesce(f4, -1) < 0", nil},
		// text
		{"title = 'title 7'", nil},
		{"title = $1", p("O'Brien \"q\" ünïcødé %_\\")},
		{"title < 'b'", nil},
		{"title > 'Z'", nil},
		{"title >= 'title 3' AND title < 'title 4'", nil},
		{"title BETWEEN 'A' AND 'a'", nil},
		{"greatest(title, 'm') = 'm'", nil},
		{"least(title, 'T') = title", nil},
		{"title LIKE 'title 1%'", nil},
		{"title ILIKE $1", p("TITLE _")},
		{"title NOT LIKE '%1%'", nil},
		{`title LIKE '%\%\_\\'`, nil},
		{"title ~~ '%ünï%'", nil},
		{"title !~~ 'title%'", nil},
		{"title ~~* 'T%1'", nil},
		{"title !~~* '%E%'", nil},
		{"title NOT ILIKE 'title%'", nil},
		{"title LIKE '%%%_%e'", nil},
		{"title LIKE '_'", nil},
		{"title LIKE ''", nil},
		{"like(title, '%7')", nil},
		{"ilike(title, '%ZEB%')", nil},
		{"lower(title) = 'title 3' OR upper(title) = 'TITLE 4'", nil},
		{"length(title) > 8", nil},
		{"length(title) = 5", nil},
		{"title || '!' = 'title 2!'", nil},
		{"title || id = 'title 22'", nil},
		{"concat(title, id) = 'title 22'", nil},
		{"concat(title, '-', f) LIKE '%-0.%'", nil},
		{"coalesce(title, 'none') = 'none'", nil},
		{"title IN ('title 1', 'title 2', 'title 3', 'title 4', 'title 5', 'title 6', 'title 7', 'title 8', 'élan')", nil},
		{"title NOT IN ('title 1', 'title 2', 'title 3', 'title 4', 'title 5', 'title 6', 'title 7', 'title 8', NULL)", nil},
		{"vc = 'v5' OR vc LIKE 'v3%'", nil},
		{"vc > 'v4'", nil},
		{"code = 'c1'", nil},
		{"code IN ('c0', 'c2')", nil},
		{"code = 'ab'", nil},
		{"code < 'c'", nil},
		{"code || '|' = 'ab|'", nil},
		{"m = 'happy'", nil},
		{"m <> 'sad'", nil},
		{"m::text IN ('sad', 'ok')", nil},
		{"m::text > 'ok'", nil},
		{`"Mixed Case" = 'MC 9'`, nil},
		{"id::text = '12'", nil},
		{"title::text LIKE 'title 3%'", nil},
		{"f::text LIKE '%.3%'", nil},
		{"f::text = '1e+300' OR f::text = '-0' OR f::text = 'NaN'", nil},
		{"n::text LIKE '%.5'", nil},
		{"(f * 1000000)::text LIKE '%e+%'", nil},
		{"(f * 1000000000000000)::text LIKE '%e+15'", nil},
		{"(id * 1.5)::text = '15'", nil},
		{"(f / 1000000)::text LIKE '%e-%'", nil},
		{"f4::text LIKE '0.%'", nil},
		{"done::text = 'true'", nil},
		{"addr::text = '10.0.5.1/21'", nil},
		{"addr::text LIKE '10.0.1%'", nil},
		{"doc::text = '{\"g\": 5}'", nil},
		{"iv::text LIKE '%H'", nil},
		{"nums::text = '{1,2}'", nil},
		{"tags::text LIKE '%,x}'", nil},
		{"u::text LIKE '%17'", nil},
		{"day::text LIKE '%-05'", nil},
		{"at::text LIKE '%+00'", nil},
		{"local::text LIKE '%:30:00'", nil},
		// bool and NULL logic
		{"title IS NULL", nil},
		{"title IS NOT NULL AND done", nil},
		{"done IS NOT TRUE", nil},
		{"done IS NOT FALSE", nil},
		{"done IS UNKNOWN", nil},
		{"done IS NOT UNKNOWN AND id > 35", nil},
		{"done = false", nil},
		{"done <> true", nil},
		{"NOT done", nil},
		{"done OR id > 35", nil},
		{"(done AND f > 3) IS NOT TRUE", nil},
		{"NOT (done OR f > 3)", nil},
		{"done::int = 1", nil},
		{"id IN (1, 2, 3, NULL)", nil},
		{"id NOT IN (1, 2, NULL)", nil},
		{"id NOT IN (1, 2)", nil},
		{"id IN (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 100)", nil},
		{"id NOT IN (1, 2, 3, 4, 5, 6, 7, 8, 9, NULL)", nil},
		{"id IN (1.5, 2, 3)", nil},
		{"id IS DISTINCT FROM 5 AND title IS NOT DISTINCT FROM 'title 6'", nil},
		{"f IS DISTINCT FROM NULL", nil},
		{"(id < 5 OR id > 35) AND NOT done", nil},
		{"true", nil},
		{"NULL::bool", nil},
		{"NULL IS NULL", nil},
		{"1 = 1 AND id = 3", nil},
		// date and time
		{"day > '2024-01-20'", nil},
		{"day = $1", p("2024-01-05")},
		{"day = '2024-01-05 10:00'", nil},
		{"day < '0001-01-01'", nil},
		{"at < '2024-01-03 12:00:00+00'", nil},
		{"at >= '2024-01-05T00:00:00Z'", nil},
		{"at > '2024-01-05 03:00:00+05:30'", nil},
		{"at = 'infinity'", nil},
		{"at < '2000-01-01'", nil},
		{"local BETWEEN '2024-01-02' AND '2024-01-04 10:00'", nil},
		{"local < '2024-01-02 00:00:00+09'", nil},
		{"local = '-infinity'", nil},
		{"at > local", nil},
		{"day < at", nil},
		{"day = local::date", nil},
		{"at::date = '2024-01-03'", nil},
		{"local::timestamptz < '2024-01-02'", nil},
		{"tm > '12:00'", nil},
		{"tm = '24:00:00' OR tm < '01:00'", nil},
		{"tm BETWEEN '03:00' AND '04:30:00.5'", nil},
		{"day + 3 = '2024-01-10'", nil},
		{"3 + day = '2024-01-10'", nil},
		{"day - 1 < '2024-01-05'", nil},
		{"day - '2024-01-01' > 10", nil},
		{"day - day = 0", nil},
		{"day + tm > '2024-01-05 12:00'", nil},
		{"day + interval '1 month' = '2024-02-29'", nil},
		{"local + '1 mon' < '2024-02-02'", nil},
		{"local - interval '1 month' < '2023-12-02'", nil},
		{"at + iv > '2024-03-05'", nil},
		{"at - iv < '2024-01-01'", nil},
		{"iv + at > '2024-03-05'", nil},
		{"at - local > '0'", nil},
		{"at - local = '1 day 01:00:00'", nil},
		{"at - '2024-01-01' < '2 days'", nil},
		{"(at - local)::text LIKE '%DT%'", nil},
		{"(local + '1 mon 2 days')::text LIKE '%-02-%'", nil},
		{"(day + 1)::text = '2024-01-05'", nil},
		{"(day - interval '1 year')::text LIKE '2023-%'", nil},
		// intervals
		{"iv = '30 days'", nil},
		{"iv = interval '1 month'", nil},
		{"iv = 'P30D'", nil},
		{"iv > '1 mon'", nil},
		{"iv < 'PT6H'", nil},
		{"iv <> '5 hours'", nil},
		{"iv >= '1 year'", nil},
		{"iv = '-1 mons +2 days -03:00:00'", nil},
		{"iv = '1 day ago'", nil},
		{"iv BETWEEN '1 day' AND '3 days'", nil},
		{"iv + '1 hour' = '11 hours'", nil},
		{"- iv > '0'", nil},
		{"(iv - '1 day')::text LIKE 'P-%'", nil},
		{"iv IN ('5 hours', '10 hours', '1 mon 15:00:00')", nil},
		{"iv IS NULL", nil},
		// uuid
		{"u = '00000000-0000-0000-0000-000000000017'", nil},
		{"u IN ($1, $2)", p("00000000-0000-0000-0000-000000000003", "{00000000000000000000000000000004}")},
		{"u > '00000000-0000-0000-0000-000000000035'", nil},
		{"u = 'A0000000-0000-0000-0000-000000000000'", nil},
		// arrays
		{"nums @> '{5}'", nil},
		{"nums <@ ARRAY[1, 2, 3, 4]", nil},
		{"nums && '{7,40,3}'", nil},
		{"nums = '{10,11}'", nil},
		{"nums <> '{}'", nil},
		{"nums = ARRAY[1, 2]", nil},
		{"nums IS DISTINCT FROM '{1,2}'", nil},
		{"nums IS NOT DISTINCT FROM '{7,NULL,7}'", nil},
		{"nums = '{NULL,3}'", nil},
		{"nums @> '{NULL}'", nil},
		{"nums <@ '{}'", nil},
		{"'t1' = ANY(tags)", nil},
		{"3 = ANY(nums)", nil},
		{"7 <> ALL(nums)", nil},
		{"id > ALL('{1,2,30}')", nil},
		{"id = ANY(ARRAY[1, 2, NULL])", nil},
		{"id = ANY($1)", p("{4,5,6}")},
		{"'b' > ANY(tags)", nil},
		{"'É' <= ALL(tags)", nil},
		{"tags @> ARRAY['x']", nil},
		{"tags = '{\"with,comma\",\"quo\\\"te\",NULL,\"NULL\"}'", nil},
		{"tags @> '{NULL}'", nil},
		{"tags @> '{\" lead\",trail}'", nil},
		{"tags && $1", p("{apple,t3}")},
		{"tags = '{}'", nil},
	}
	// Unicode case folding agrees with PostgreSQL only under a
	// Unicode-aware collation (ICU here); the C locale folds ASCII only.
	var icu bool
	_ = conn.QueryRow(ctx, `SELECT c.collprovider = 'i' FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation
		WHERE a.attrelid = 'w'::regclass AND a.attname = 'title'`).Scan(&icu)
	if icu {
		clauses = append(clauses,
			clause{"lower(title) LIKE 'é%'", nil},
			clause{"upper(title) = 'ÉLAN'", nil},
			clause{"title ILIKE '%É%'", nil},
			clause{"title ILIKE 'éa%'", nil},
		)
	}
	t.Logf("%d clauses on %d rows (ICU collation on title: %v)", len(clauses), len(data), icu)
	for _, tc := range clauses {
		f, err := where.Parse(tc.expr, tc.params, table.Columns)
		if err != nil {
			t.Errorf("%s: %v", tc.expr, err)
			continue
		}
		want := map[string]bool{}
		pgRows, err := conn.Query(ctx, "SELECT id::text FROM w WHERE "+f.SQL())
		if err == nil {
			for pgRows.Next() {
				var id string
				_ = pgRows.Scan(&id)
				want[id] = true
			}
			pgRows.Close()
			err = pgRows.Err()
		}
		var goErr error
		pgErr := err // PostgreSQL stops at the first failing row: then only expect Match to fail too
		for i, row := range data {
			got, err := f.Match(row)
			if err != nil {
				goErr = fmt.Errorf("row %s: %w", ids[i], err)
				continue
			}
			if pgErr == nil && got != want[ids[i]] {
				t.Errorf("%s (SQL %s) on row %s: Go %v, PostgreSQL %v", tc.expr, f.SQL(), ids[i], got, want[ids[i]])
			}
		}
		switch {
		case err != nil && goErr == nil:
			t.Errorf("%s → %s: PostgreSQL failed (%v), Match did not", tc.expr, f.SQL(), err)
		case err == nil && goErr != nil:
			t.Errorf("%s → %s: Match failed (%v), PostgreSQL did not", tc.expr, f.SQL(), goErr)
		}
	}
	if len(clauses) < 40 || len(data) < 45 {
		t.Fatalf("%d clauses on %d rows: the fixture shrank", len(clauses), len(data))
	}
}

func TestParseErrors(t *testing.T) {
	ctx, conn, table := fixture(t)
	for _, tc := range []struct {
		expr string
		loc  int // -1: any
		want string
	}{
		{"nope = 1", 0, "unknown reference nope"},
		{"id = 1 AND Nope = 2", 11, "unknown reference nope"},
		{`"ID" = 1`, 0, "unknown reference ID"},
		{"w.id = 1", 0, "unknown reference w.id"},
		{"public.w.id = 1", 0, "unknown reference public.w.id"},
		{"id = 1; DROP TABLE w", 0, "single"},
		{"id = 1; SELECT 1", 0, "single"},
		{"true) OR (1=1", 4, "syntax error at or near \")\""},
		{"true)) UNION SELECT (1", -1, "syntax error"},
		{"id = 1 UNION SELECT 1", 0, "single boolean expression"},
		{"id = 1 ORDER BY 1", 0, "single boolean expression"},
		{"id = 1 GROUP BY id", 0, "single boolean expression"},
		{"id = 1 LIMIT 1", 0, "single boolean expression"},
		{"id = 1 FOR UPDATE", 0, "single boolean expression"},
		{"id = 1 /* unterminated", -1, "unterminated /* comment"},
		{"id = 1 */ OR true", -1, "syntax error"},
		{"'unterminated", -1, "unterminated quoted string"},
		{"id = 1\x00 OR true", 0, "NUL"},
		{"", -1, "syntax error"},
		{"id IN (SELECT 1)", 3, "subqueries are not supported"},
		{"EXISTS (SELECT 1 FROM pg_sleep(10))", 0, "subqueries are not supported"},
		{"id = (SELECT max(id) FROM w)", 5, "subqueries are not supported"},
		{"now() > at", 0, "unknown or unsupported function now/0"},
		{"at > now()", 5, "unknown or unsupported function now/0"},
		{"random() > 0.5", 0, "unknown or unsupported function random/0"},
		{"pg_sleep(10) IS NULL", 0, "unknown or unsupported function pg_sleep/1"},
		{"lower(title, 1) = 'x'", 0, "unknown or unsupported function lower/2"},
		{"count(*) > 1", 0, "aggregation is not supported in this context"},
		{"max(id) > 1", 0, "aggregation is not supported in this context"},
		{"title > 5", 6, "operator does not exist: text > int8"},
		{"id = 'abc'", 3, "invalid input syntax for type int8"},
		{"day = '2024-02-30'", -1, "invalid input syntax for type date"},
		{"day = 'today'", -1, "invalid input syntax for type date"},
		{"at > 'now'", -1, "invalid input syntax for type timestamptz"},
		{"id = $1", 5, "parameter $1 has no value"},
		{"id = $2", 5, "parameter $2 has no value"},
		{"title", 0, "where clause must be a boolean expression, not text"},
		{"id + 1", 0, "where clause must be a boolean expression, not int8"},
		{"id + title", 3, "operator does not exist"},
		{"u > 5", -1, "uuid"},
		{"id::money > 0", 2, "unsupported type: money"},
		{"doc = '{}'", 0, "unsupported type: jsonb"},
		{"addr = '10.0.0.1'", 0, "unsupported type: inet"},
		{"f % 2 = 0", -1, "operator does not exist: float8 % float8"},
		{"iv * 2 > '1 day'", -1, "operator does not exist"},
		{"title SIMILAR TO 'x'", -1, "unsupported operator SIMILAR TO"},
		{"title ~ 'x'", -1, "unsupported operator ~"},
		{"B'101' = B'101'", -1, "unsupported"},
		{"(id, id) = (1, 1)", -1, "unsupported expression in where clause: RowExpr"},
		{"title COLLATE \"C\" = 'x'", -1, "unsupported expression in where clause: CollateClause"},
		{"title LIKE 'abc\\'", -1, "LIKE pattern must not end with escape character"},
		{"nums[1] = 1", -1, "unsupported"},
		{"CASE WHEN id = 1 THEN true END", -1, "unsupported expression in where clause: CaseExpr"},
		{"iv = interval '1' day", -1, "interval fields"},
		{"1 + '1'", -1, "must be a boolean"},
	} {
		_, err := where.Parse(tc.expr, nil, table.Columns)
		var we *where.Error
		if !errors.As(err, &we) || !strings.Contains(we.Reason, tc.want) || !strings.HasPrefix(err.Error(), "At location ") ||
			(tc.loc >= 0 && we.Location != tc.loc) {
			t.Errorf("%q: got %v, want an *Error at %d containing %q", tc.expr, err, tc.loc, tc.want)
		}
	}

	// A comment ends nothing: the clause is rendered from the parse tree.
	f, err := where.Parse("id = 1 -- ) OR true", nil, table.Columns)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.SQL(); got != `("id" = '1'::int8)` {
		t.Errorf("comment: SQL %q", got)
	}

	// Parameters and literals only ever reach PostgreSQL as typed
	// constants, whatever they hold.
	for _, tc := range []struct {
		expr  string
		param string
		want  string
	}{
		{"title = $1", "x'; DROP TABLE w; --", `("title" = 'x''; DROP TABLE w; --'::text)`},
		{"title = $1", `\'; DROP TABLE w; --`, `("title" = E'\\''; DROP TABLE w; --'::text)`},
		{"title = $1", "x') OR ('1'='1", `("title" = 'x'') OR (''1''=''1'::text)`},
		{"title = $1", "$$; DROP TABLE w; $$", `("title" = '$$; DROP TABLE w; $$'::text)`},
		{"title = 'a''b' OR title = $1", "*/ OR true /*", `(("title" = 'a''b'::text) OR ("title" = '*/ OR true /*'::text))`},
		{`"Mixed Case" = $1`, `"; DROP TABLE w; --`, `("Mixed Case" = '"; DROP TABLE w; --'::text)`},
		{"tags @> $1", `{"'); DROP TABLE w; --"}`, `(("tags")::text[] @> '{"''); DROP TABLE w; --"}'::text[])`},
	} {
		f, err := where.Parse(tc.expr, map[string]string{"1": tc.param}, table.Columns)
		if err != nil {
			t.Errorf("%s with %q: %v", tc.expr, tc.param, err)
			continue
		}
		if got := f.SQL(); got != tc.want {
			t.Errorf("%s with %q: SQL %s, want %s", tc.expr, tc.param, got, tc.want)
		}
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM w WHERE "+f.SQL()).Scan(&n); err != nil || n != 0 {
			t.Errorf("%s with %q: %d rows, %v", tc.expr, tc.param, n, err)
		}
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM w").Scan(&n); err != nil || n < 45 {
		t.Errorf("table w after the injection attempts: %d rows, %v", n, err)
	}
	for _, bad := range []string{"a\x00b", "\xff"} {
		if _, err := where.Parse("title = $1", map[string]string{"1": bad}, table.Columns); err == nil {
			t.Errorf("parameter %q accepted", bad)
		}
	}

	// Unused parameters are fine; columns are reported sorted.
	f, err = where.Parse("title = $2 AND id > 1 OR done", map[string]string{"1": "x", "2": "y", "3": "z"}, table.Columns)
	if err != nil {
		t.Fatal(err)
	}
	if cols := f.Columns(); fmt.Sprint(cols) != "[0 4 6]" {
		t.Errorf("columns: %v", cols)
	}
	if _, err := f.Match([][]byte{nil, nil, nil, nil, []byte("x'; DROP TABLE w; --")}); err != nil {
		t.Error(err)
	}

	// Runtime failures are Match errors.
	for _, expr := range []string{"10 / (id - 5) > 1", "id % (id - 5) = 0", "f / (id - 5) > 1", "big * big > 0", "title::int > 0"} {
		f, err := where.Parse(expr, nil, table.Columns)
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		row := make([][]byte, len(table.Columns))
		row[0], row[1], row[2], row[4] = []byte("5"), []byte("9000000000000000000"), []byte("1.5"), []byte("x")
		if _, err := f.Match(row); err == nil {
			t.Errorf("%s: no error", expr)
		}
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

// TestErrorLocationsCountCharacters: every error locates itself in
// characters of the client's clause, whether PostgreSQL's parser or the
// type checker found it, also after multi-byte characters.
func TestErrorLocationsCountCharacters(t *testing.T) {
	cols := []catalog.Column{
		{Name: "título", Type: &catalog.Type{Name: "text", Kind: catalog.KindText}},
		{Name: "id", Type: &catalog.Type{Name: "integer", Kind: catalog.KindInt4}},
	}
	for expr, want := range map[string]int{
		`"título" = 'ñ' AND titl = 'x'`: 19, // unknown reference
		`"título" = 'ñ' AND id = 'x'`:   22, // invalid input (at the operator)
		`"título" = 'ñ' AND )`:          19, // syntax error
		`id = 1 AND title = `:           19,
	} {
		_, err := where.Parse(expr, nil, cols)
		var e *where.Error
		if !errors.As(err, &e) || e.Location != want {
			t.Errorf("%s: %v, want location %d", expr, err, want)
		}
	}
}
