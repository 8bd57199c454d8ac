package importer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/shapelog/shapelog/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func liveSetup(t *testing.T) (*Importer, *pgxpool.Pool) {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return New(pool, zerolog.Nop()), pool
}

// body builds a request: tables is the "tables" object's members, records
// are "table:data" pairs.
func body(tables string, records ...string) string {
	msgs := make([]string, len(records))
	for i, r := range records {
		table, data, _ := strings.Cut(r, ":")
		msgs[i] = fmt.Sprintf(`{"tableName":%q,"data":%s}`, table, data)
	}
	return `{"tables":{` + tables + `},"messages":[` + strings.Join(msgs, ",") + `]}`
}

func rows(t *testing.T, pool *pgxpool.Pool, query string) string {
	t.Helper()
	rs, err := pool.Query(context.Background(), query)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	var out []string
	for rs.Next() {
		vals, err := rs.Values()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, strings.TrimSuffix(fmt.Sprintln(vals...), "\n"))
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(out, "; ")
}

// importCounting is Import, also saying how many records were copied live
// and how many spooled.
func importCounting(t *testing.T, im *Importer, b string) (copied, spooled int) {
	t.Helper()
	l := &live{im: im, ctx: context.Background()}
	defer l.abort()
	req, err := parseRequestInto(strings.NewReader(b), l)
	if err != nil {
		t.Fatal(err)
	}
	defer req.close()
	if _, err := l.finish(req, nil); err != nil {
		t.Fatal(err)
	}
	for _, s := range req.streams {
		spooled += s.spool.n
	}
	return l.n, spooled
}

func wantError(t *testing.T, err error, code, contains string) {
	t.Helper()
	var ie *Error
	if !errors.As(err, &ie) || ie.Code != code || !strings.Contains(ie.Message, contains) {
		t.Fatalf("got %v, want %s mentioning %q", err, code, contains)
	}
}

func TestLiveAppendWithLateUndeclaredField(t *testing.T) {
	im, pool := liveSetup(t)
	b := body(`"t":{"primaryKey":null,"jsonSchema":{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"string"}}}}`,
		`t:{"a":1,"b":"x\ty"}`, `t:{"a":2}`, `t:{"a":3,"extra":1.5}`, `t:{"a":4,"b":"z"}`, `t:{"a":5,"extra":"s"}`)
	if copied, spooled := importCounting(t, im, b); copied != 2 || spooled != 3 {
		t.Errorf("%d records copied, %d spooled; want 2 and 3", copied, spooled)
	}
	// extra saw a number then a string: text, with the number as written.
	if got, want := rows(t, pool, `SELECT a, coalesce(b, '-'), coalesce(extra, '-') FROM t ORDER BY a`), "1 x\ty -; 2 - -; 3 - 1.5; 4 z -; 5 - s"; got != want {
		t.Errorf("rows %q, want %q", got, want)
	}
	if got := rows(t, pool, `SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 't'::regclass AND attname = 'extra'`); got != "text" {
		t.Errorf("extra is %s, want text", got)
	}
}

func TestLiveDedupAcrossTheSpoolBoundary(t *testing.T) {
	im, pool := liveSetup(t)
	ctx := context.Background()
	// Table d is copied directly until key 1 comes again, then everything
	// goes through the staging table from the spool; table s, whose direct
	// copy is paused, is staged live until the new column x.
	for name, want := range map[string][2]int{"d": {3, 7}, "s": {4, 3}} {
		if name == "s" {
			im.pauseInsertFirst(`"public"."s"`)
		}
		tables := `"` + name + `":{"primaryKey":[["id"]],"jsonSchema":{"type":"object","properties":{"id":{"type":"integer"},"v":{"type":"string"}}}}`
		rec := func(data string) string { return name + ":" + data }
		b := body(tables, rec(`{"id":1,"v":"a"}`), rec(`{"id":2,"v":"b"}`), rec(`{"id":3,"v":"c"}`), rec(`{"id":1,"v":"a2"}`),
			rec(`{"id":2,"v":"b2","x":7}`), rec(`{"id":3,"_ab_cdc_deleted_at":"2024-01-01T00:00:00Z"}`), rec(`{"id":4,"v":"d"}`))
		if copied, spooled := importCounting(t, im, b); copied != want[0] || spooled != want[1] {
			t.Errorf("%s: %d records copied, %d spooled; want %d and %d", name, copied, spooled, want[0], want[1])
		}
		if got, want := rows(t, pool, `SELECT id, v, coalesce(x::text, '-') FROM `+name+` ORDER BY id`), "1 a2 -; 2 b2 7; 4 d -"; got != want {
			t.Errorf("%s: rows %q, want %q", name, got, want)
		}
		// A second request replaces whole rows: x goes back to NULL.
		b = body(tables, rec(`{"id":2,"v":"b3"}`), rec(`{"id":4,"_ab_cdc_deleted_at":"2024-01-02T00:00:00Z"}`))
		if _, _, err := im.Import(ctx, strings.NewReader(b), ""); err != nil {
			t.Fatal(err)
		}
		if got, want := rows(t, pool, `SELECT id, v, coalesce(x::text, '-') FROM `+name+` ORDER BY id`), "1 a2 -; 2 b3 -"; got != want {
			t.Errorf("%s: rows %q, want %q", name, got, want)
		}
	}
}

func TestLiveFailuresWriteNothing(t *testing.T) {
	im, pool := liveSetup(t)
	ctx := context.Background()
	tables := `"t":{"primaryKey":null,"jsonSchema":{"type":"object","properties":{"a":{"type":"integer"}}}}`
	recs := make([]string, 0, 3000)
	for i := 0; i < 3000; i++ {
		recs = append(recs, fmt.Sprintf(`t:{"a":%d}`, i))
	}
	// An invalid record after thousands have been copied.
	bad := append(append([]string(nil), recs...), `t:{"a":"nope"}`)
	_, _, err := im.Import(ctx, strings.NewReader(body(tables, bad...)), "k1")
	wantError(t, err, "InvalidRecord", "message 3000")
	if got := rows(t, pool, `SELECT count(*) FROM pg_class WHERE relname = 't'`); got != "0" {
		t.Errorf("table created by a rejected request")
	}

	// A value PostgreSQL refuses, in a table the importer did not create.
	if _, err := pool.Exec(ctx, `CREATE TABLE u (a integer, s date)`); err != nil {
		t.Fatal(err)
	}
	utables := `"u":{"primaryKey":null,"jsonSchema":{"type":"object","properties":{"a":{"type":"integer"},"s":{"type":"string"}}}}`
	refused := append(append([]string(nil), `u:{"a":1,"s":"2024-01-01"}`), `u:{"a":2,"s":"not a date"}`, `u:{"a":3}`)
	_, _, err = im.Import(ctx, strings.NewReader(body(utables, refused...)), "")
	wantError(t, err, "InvalidValue", "message 1 (table u), field s")
	// ... but an invalid record later in the body is what gets reported.
	_, _, err = im.Import(ctx, strings.NewReader(body(utables, append(refused, `u:{"a":true}`)...)), "")
	wantError(t, err, "InvalidRecord", "message 3")
	if got := rows(t, pool, `SELECT count(*) FROM u`); got != "0" {
		t.Errorf("u has %s rows after failed requests", got)
	}

	// The key of the rejected request was not recorded: its retry lands.
	if _, dup, err := im.Import(ctx, strings.NewReader(body(tables, recs...)), "k1"); err != nil || dup {
		t.Fatal(dup, err)
	}
	if _, dup, err := im.Import(ctx, strings.NewReader(body(tables, recs...)), "k1"); err != nil || !dup {
		t.Fatal(dup, err)
	}
	if got := rows(t, pool, `SELECT count(*), sum(a)::text FROM t`); got != "3000 4498500" {
		t.Errorf("t: %s", got)
	}
}

func TestLiveInterleavedStreams(t *testing.T) {
	im, pool := liveSetup(t)
	schema := `{"type":"object","properties":{"a":{"type":"integer"}}}`
	tables := `"p":{"primaryKey":null,"jsonSchema":` + schema + `},"q":{"primaryKey":[["a"]],"jsonSchema":` + schema + `},"r":{"primaryKey":null,"jsonSchema":null}`
	var recs []string
	for i := 0; i < 1000; i++ {
		recs = append(recs, fmt.Sprintf(`p:{"a":%d}`, i), fmt.Sprintf(`q:{"a":%d}`, i%10), fmt.Sprintf(`r:{"b":%d}`, i))
	}
	if copied, spooled := importCounting(t, im, body(tables, recs...)); copied != 1000 || spooled != 2000 {
		t.Errorf("%d records copied, %d spooled; want 1000 and 2000", copied, spooled)
	}
	if got, want := rows(t, pool, `SELECT (SELECT count(*) FROM p), (SELECT count(*) FROM q), (SELECT count(*) FROM r)`), "1000 10 1000"; got != want {
		t.Errorf("counts %s, want %s", got, want)
	}
}

func TestDedupPlainUpsertAndItsFallback(t *testing.T) {
	im, pool := liveSetup(t)
	ctx := context.Background()
	tables := `"n":{"primaryKey":[["id"]],"jsonSchema":{"type":"object","properties":{"id":{"type":"number"},"v":{"type":"string"}}}}`
	paused := func() int {
		im.insertFirstMu.Lock()
		defer im.insertFirstMu.Unlock()
		return im.insertFirst[`"public"."n"`]
	}
	// New keys: copied straight into the table.
	if _, _, err := im.Import(ctx, strings.NewReader(body(tables, `n:{"id":1,"v":"a"}`, `n:{"id":2,"v":"b"}`)), ""); err != nil {
		t.Fatal(err)
	}
	if n := paused(); n != 0 {
		t.Fatalf("a load of new keys paused the plain insert (%d)", n)
	}
	// Distinct keys, no deletes, one already there: the copy into the table
	// is rolled back, the plain upsert updates it, and the next requests
	// skip the attempt.
	if _, _, err := im.Import(ctx, strings.NewReader(body(tables, `n:{"id":2,"v":"b2"}`, `n:{"id":3,"v":"c"}`)), ""); err != nil {
		t.Fatal(err)
	}
	if n := paused(); n != insertFirstPause {
		t.Fatalf("after a key already there, the direct copy is paused for %d requests, want %d", n, insertFirstPause)
	}
	// 4 and 4.0 are one numeric key the engine cannot tell apart: PostgreSQL
	// refuses the plain upsert and the full merge keeps the last.
	if _, _, err := im.Import(ctx, strings.NewReader(body(tables, `n:{"id":4,"v":"d"}`, `n:{"id":4.0,"v":"d2"}`, `n:{"id":1,"v":"a2"}`)), ""); err != nil {
		t.Fatal(err)
	}
	if got, want := rows(t, pool, `SELECT id::text, v FROM n ORDER BY id`), "1 a2; 2 b2; 3 c; 4.0 d2"; got != want {
		t.Errorf("rows %q, want %q", got, want)
	}
	// With the pause over, the copy into the table is tried again and
	// refuses 5 and 5.0.
	im.insertFirstMu.Lock()
	clear(im.insertFirst)
	im.insertFirstMu.Unlock()
	if _, _, err := im.Import(ctx, strings.NewReader(body(tables, `n:{"id":5,"v":"e"}`, `n:{"id":5.0,"v":"e2"}`)), ""); err != nil {
		t.Fatal(err)
	}
	if got, want := rows(t, pool, `SELECT id::text, v FROM n WHERE id = 5`), "5.0 e2"; got != want {
		t.Errorf("rows %q, want %q", got, want)
	}
}

func TestKeySet(t *testing.T) {
	s := &stream{key: []keyPath{{"a"}, {"b"}}, colIndex: map[string]int{"a": 0, "b": 1}}
	rec := func(a, b string) []field {
		return []field{{col: 0, kind: kindNumber, value: []byte(a)}, {col: 1, kind: kindString, value: []byte(b)}}
	}
	var k keySet
	k.note(s, false, rec("1", "x"))
	k.note(s, false, rec("1", "y"))
	k.note(s, false, rec("11", ""))
	if !k.plain() {
		t.Fatal("distinct keys taken for repeats")
	}
	k.note(s, false, rec("1", "y"))
	if k.plain() {
		t.Fatal("a repeated key was missed")
	}
	var d keySet
	d.note(s, true, rec("1", "x"))
	if d.plain() {
		t.Fatal("a delete was missed")
	}
}

func TestLiveDedupLargeRequests(t *testing.T) {
	im, pool := liveSetup(t)
	ctx := context.Background()
	tables := `"c":{"primaryKey":[["id"]],"jsonSchema":{"type":"object","properties":{"id":{"type":"integer"},"v":{"type":"integer"}}}}`
	// Many blocks of distinct keys: a plain upsert.
	var recs []string
	for i := 0; i < 3*2000+17; i++ {
		recs = append(recs, fmt.Sprintf(`c:{"id":%d,"v":%d}`, i, i))
	}
	if copied, _ := importCounting(t, im, body(tables, recs...)); copied != len(recs) {
		t.Fatalf("%d records copied, want %d", copied, len(recs))
	}
	// Keys repeated across blocks, with deletes: the last wins.
	want := map[int]int{}
	for i := 0; i < 3*2000+17; i++ {
		want[i] = i
	}
	recs = recs[:0]
	for i := 0; i < 4*2000; i++ {
		id := (i * 7) % 1500
		if i%5 == 0 {
			recs = append(recs, fmt.Sprintf(`c:{"id":%d,"_ab_cdc_deleted_at":"2024-01-01"}`, id))
			delete(want, id)
		} else {
			recs = append(recs, fmt.Sprintf(`c:{"id":%d,"v":%d}`, id, -i))
			want[id] = -i
		}
	}
	if _, _, err := im.Import(ctx, strings.NewReader(body(tables, recs...)), ""); err != nil {
		t.Fatal(err)
	}
	sum := 0
	for id, v := range want {
		sum += id*100000 + v
	}
	if got, exp := rows(t, pool, `SELECT count(*), sum(id * 100000 + v)::text FROM c`), fmt.Sprintf("%d %d", len(want), sum); got != exp {
		t.Errorf("got %s, want %s", got, exp)
	}
	// A value PostgreSQL refuses far into the COPY names its message.
	if _, err := pool.Exec(ctx, `CREATE TABLE c2 (id bigint, v smallint)`); err != nil {
		t.Fatal(err)
	}
	recs = recs[:0]
	for i := 0; i < 3*2000; i++ {
		v := i % 1000
		if i == 2*2000+5 {
			v = 2000000
		}
		recs = append(recs, fmt.Sprintf(`c2:{"id":%d,"v":%d}`, i, v))
	}
	_, _, err := im.Import(ctx, strings.NewReader(body(strings.Replace(tables, `"c"`, `"c2"`, 1), recs...)), "")
	wantError(t, err, "InvalidValue", fmt.Sprintf("message %d (table c2), field v", 2*2000+5))
	if got := rows(t, pool, `SELECT count(*) FROM c2`); got != "0" {
		t.Errorf("c2 has %s rows", got)
	}
}
