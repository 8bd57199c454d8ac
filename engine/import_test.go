package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shapelog/shapelog/engine"
	"github.com/shapelog/shapelog/engine/client"
	"github.com/shapelog/shapelog/internal/pgtest"
)

func apiClient(t *testing.T, base string) *client.Client {
	t.Helper()
	c, err := client.New(base, testKey, client.Options{RetryMax: 3, RetryWaitMin: 10 * time.Millisecond, RetryWaitMax: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// importSetup gives an import test a database, an engine on it and a
// client of the engine.
func importSetup(t *testing.T) (*pgx.Conn, *client.Client, context.Context) {
	t.Helper()
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	e := startEngine(t, dbURL)
	return conn, apiClient(t, e.URL()), context.Background()
}

func msgs(table string, docs ...string) []client.Message {
	out := make([]client.Message, len(docs))
	for i, d := range docs {
		out[i] = client.Message{TableName: table, Data: json.RawMessage(d)}
	}
	return out
}

func wantCode(t *testing.T, err error, status int, code string) {
	t.Helper()
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != status || ce.Code != code {
		t.Fatalf("got %v, want %d %s", err, status, code)
	}
}

// rowsOf returns a table's rows as text, ordered.
func rowsOf(t *testing.T, conn *pgx.Conn, query string) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), query)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		parts := make([]string, len(vals))
		for i, v := range vals {
			if b, ok := v.([]byte); ok {
				parts[i] = fmt.Sprintf("%x", b)
			} else {
				parts[i] = fmt.Sprint(v)
			}
		}
		out = append(out, strings.Join(parts, "|"))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func columnTypes(t *testing.T, conn *pgx.Conn, table string) string {
	t.Helper()
	return strings.Join(rowsOf(t, conn, `SELECT attname || ' ' || format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = '`+table+`'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`), ", ")
}

const typesSchema = `{"type":"object","properties":{
	"id":{"type":"integer"},
	"s":{"type":["null","string"]},
	"d":{"type":"string","format":"date"},
	"ts":{"type":"string","format":"date-time","airbyte_type":"timestamp_without_timezone"},
	"tstz":{"type":"string","format":"date-time","airbyte_type":"timestamp_with_timezone"},
	"tm":{"type":"string","format":"time","airbyte_type":"time_without_timezone"},
	"n":{"type":"number"},
	"ni":{"type":"number","airbyte_type":"integer"},
	"b":{"type":"boolean"},
	"o":{"type":"object"},
	"a":{"type":"array","items":{"type":"integer"}},
	"u":{"type":["string","integer"]},
	"bin":{"type":"string","contentEncoding":"base64"},
	"wk":{"$ref":"WellKnownTypes.json#/definitions/TimestampWithTimezone"}}}`

func TestImportTypesAndAppend(t *testing.T) {
	conn, c, ctx := importSetup(t)
	req := client.ImportRequest{
		Tables: map[string]client.TableSpec{"typed": {JSONSchema: json.RawMessage(typesSchema)}},
		Messages: msgs("typed",
			`{"id":1,"s":"tab\t\"quote\" back\\slash ✓","d":"2024-02-29","ts":"2024-01-01T10:00:00.5","tstz":"2024-01-01T10:00:00+02:00","tm":"12:30:00","n":12345678901234567890.5,"ni":7,"b":true,"o":{"k":[1,null]},"a":[1,2],"u":"x","bin":"3q2+7w==","wk":"2024-01-01T00:00:00Z","_ab_cdc_lsn":5,"extra":"not in schema"}`,
			`{"id":1,"s":null,"u":5}`),
	}
	if err := c.ImportAirbyteRecords(ctx, req, ""); err != nil {
		t.Fatal(err)
	}
	types := columnTypes(t, conn, "typed")
	for _, want := range []string{"a jsonb", "b boolean", "bin bytea", "d date", "id bigint", "n numeric", "ni bigint", "o jsonb", "s text",
		"tm time without time zone", "ts timestamp without time zone", "tstz timestamp with time zone", "u jsonb", "wk timestamp with time zone", "extra text"} {
		if !strings.Contains(types, want) {
			t.Errorf("column %q missing from %s", want, types)
		}
	}
	if strings.Contains(types, "_ab_cdc") {
		t.Errorf("CDC metadata stored: %s", types)
	}
	got := rowsOf(t, conn, `SELECT id, s, d::text, ts::text, tstz::text, tm::text, n::text, ni, b, o::text, a::text, u::text, bin, extra FROM typed ORDER BY s NULLS LAST`)
	want := []string{
		"1|tab\t\"quote\" back\\slash ✓|2024-02-29|2024-01-01 10:00:00.5|2024-01-01 08:00:00+00|12:30:00|12345678901234567890.5|7|true|{\"k\": [1, null]}|[1, 2]|\"x\"|deadbeef|not in schema",
		"1|<nil>|<nil>|<nil>|<nil>|<nil>|<nil>|<nil>|<nil>|<nil>|<nil>|5|<nil>|<nil>",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("rows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestImportSchemaEvolution(t *testing.T) {
	conn, c, ctx := importSetup(t)
	v1 := client.TableSpec{JSONSchema: json.RawMessage(`{"type":"object","properties":{"id":{"type":"integer"},"qty":{"type":"integer"}}}`)}
	if err := c.ImportAirbyteRecords(ctx, client.ImportRequest{Tables: map[string]client.TableSpec{"evo": v1}, Messages: msgs("evo", `{"id":1,"qty":2}`)}, ""); err != nil {
		t.Fatal(err)
	}
	v2 := client.TableSpec{JSONSchema: json.RawMessage(`{"type":"object","properties":{"id":{"type":"integer"},"qty":{"type":"number"},"note":{"type":"string"},"when":{"type":"string","format":"date"}}}`)}
	if err := c.ImportAirbyteRecords(ctx, client.ImportRequest{Tables: map[string]client.TableSpec{"evo": v2}, Messages: msgs("evo", `{"id":2,"qty":2.5,"note":"n","when":"2024-01-01"}`)}, ""); err != nil {
		t.Fatal(err)
	}
	v3 := client.TableSpec{JSONSchema: json.RawMessage(`{"type":"object","properties":{"id":{"type":"integer"},"when":{"type":"string","format":"date-time"}}}`)}
	if err := c.ImportAirbyteRecords(ctx, client.ImportRequest{Tables: map[string]client.TableSpec{"evo": v3}, Messages: msgs("evo", `{"id":3,"when":"2024-01-02T03:04:05Z"}`)}, ""); err != nil {
		t.Fatal(err)
	}
	if got := columnTypes(t, conn, "evo"); got != "id bigint, qty numeric, note text, when timestamp with time zone" {
		t.Fatalf("columns after evolution: %s", got)
	}
	if got := rowsOf(t, conn, `SELECT id, qty::text, "when"::text FROM evo ORDER BY id`); strings.Join(got, ",") != "1|2|<nil>,2|2.5|2024-01-01 00:00:00+00,3|<nil>|2024-01-02 03:04:05+00" {
		t.Fatalf("rows: %v", got)
	}
}

func TestImportDedupAndDeletes(t *testing.T) {
	conn, c, ctx := importSetup(t)
	schema := json.RawMessage(`{"type":"object","properties":{"region":{"type":"string"},"id":{"type":"integer"},"v":{"type":"string"},"meta":{"type":"object"},"_ab_cdc_deleted_at":{"type":["null","string"]}}}`)
	composite := client.TableSpec{PrimaryKey: [][]string{{"region"}, {"id"}}, JSONSchema: schema}
	nested := client.TableSpec{PrimaryKey: [][]string{{"meta", "ref"}}, JSONSchema: schema}
	if err := c.AddPrimaryKeyIndexes(ctx, map[string][][]string{"comp": composite.PrimaryKey, "nest": nested.PrimaryKey}); err != nil {
		t.Fatal(err)
	}
	for {
		ready, err := c.PrimaryKeyIndexesReady(ctx, []string{"comp", "nest"})
		if err != nil {
			t.Fatal(err)
		}
		if ready {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	tables := map[string]client.TableSpec{"comp": composite, "nest": nested}
	batch1 := append(msgs("comp",
		`{"region":"eu","id":1,"v":"a"}`, `{"region":"us","id":1,"v":"b"}`, `{"region":"eu","id":1,"v":"a2"}`, `{"region":"eu","id":2,"v":"c"}`),
		msgs("nest", `{"meta":{"ref":"x"},"v":"1"}`, `{"meta":{"ref":"y"},"v":"2"}`)...)
	if err := c.ImportAirbyteRecords(ctx, client.ImportRequest{Tables: tables, Messages: batch1}, ""); err != nil {
		t.Fatal(err)
	}
	batch2 := append(msgs("comp",
		`{"region":"eu","id":2,"_ab_cdc_deleted_at":"2024-01-01T00:00:00Z"}`, `{"region":"us","id":1,"v":"b2"}`, `{"region":"zz","id":9,"_ab_cdc_deleted_at":"2024-01-01T00:00:00Z"}`),
		msgs("nest", `{"meta":{"ref":"x"},"v":"1b"}`, `{"meta":{"ref":"y"},"_ab_cdc_deleted_at":"2024-01-01T00:00:00Z"}`)...)
	if err := c.ImportAirbyteRecords(ctx, client.ImportRequest{Tables: tables, Messages: batch2}, ""); err != nil {
		t.Fatal(err)
	}
	if got := rowsOf(t, conn, `SELECT region, id, v FROM comp ORDER BY region, id`); strings.Join(got, ",") != "eu|1|a2,us|1|b2" {
		t.Fatalf("comp: %v", got)
	}
	if got := rowsOf(t, conn, `SELECT meta->>'ref', v FROM nest ORDER BY 1`); strings.Join(got, ",") != "x|1b" {
		t.Fatalf("nest: %v", got)
	}
	// A key field missing from a record rejects the batch.
	err := c.ImportAirbyteRecords(ctx, client.ImportRequest{Tables: tables, Messages: msgs("comp", `{"region":"eu","id":5}`, `{"region":"eu"}`)}, "")
	wantCode(t, err, 400, "MissingPrimaryKeyValue")
	if !strings.Contains(err.Error(), "message 1") || !strings.Contains(err.Error(), "id") {
		t.Fatalf("error does not name the message and field: %v", err)
	}
}

func TestImportRejectsWholeBatch(t *testing.T) {
	conn, c, ctx := importSetup(t)
	tables := map[string]client.TableSpec{"strict": {JSONSchema: json.RawMessage(`{"type":"object","properties":{"id":{"type":"integer"},"price":{"type":"number"}},"required":["id"]}`)}}
	if err := c.ImportAirbyteRecords(ctx, client.ImportRequest{Tables: tables, Messages: msgs("strict", `{"id":1,"price":1.5}`)}, ""); err != nil {
		t.Fatal(err)
	}
	err := c.ImportAirbyteRecords(ctx, client.ImportRequest{Tables: tables, Messages: msgs("strict", `{"id":2,"price":2}`, `{"id":3,"price":3}`, `{"id":4,"price":"cheap"}`)}, "")
	wantCode(t, err, 400, "InvalidRecord")
	if !strings.Contains(err.Error(), "message 2") || !strings.Contains(err.Error(), "/price") {
		t.Fatalf("error does not name the message and path: %v", err)
	}
	if got := rowsOf(t, conn, `SELECT id FROM strict ORDER BY id`); strings.Join(got, ",") != "1" {
		t.Fatalf("a rejected batch wrote rows: %v", got)
	}
	cases := []struct {
		name   string
		req    client.ImportRequest
		status int
		code   string
	}{
		{"unknown stream", client.ImportRequest{Tables: tables, Messages: msgs("nope", `{}`)}, 400, "MissingStream"},
		{"empty key", client.ImportRequest{Tables: map[string]client.TableSpec{"k": {PrimaryKey: [][]string{}}}}, 400, "EmptyPrimaryKey"},
		{"not an object", client.ImportRequest{Tables: tables, Messages: msgs("strict", `[1]`)}, 400, "InvalidRecord"},
		{"bad table name", client.ImportRequest{Tables: map[string]client.TableSpec{`a"b`: {}}}, 400, "InvalidTableName"},
		{"long field", client.ImportRequest{Tables: map[string]client.TableSpec{"free": {}}, Messages: msgs("free", `{"`+strings.Repeat("x", 64)+`":1}`)}, 400, "InvalidFieldName"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, c.ImportAirbyteRecords(ctx, tc.req, ""), tc.status, tc.code)
		})
	}
}

func TestImportEndpointsErrors(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	e := startEngine(t, dbURL, func(c *engine.Config) { c.MaxImportBytes = 4096 })
	c := apiClient(t, e.URL())
	ctx := context.Background()
	big := client.ImportRequest{Tables: map[string]client.TableSpec{"t": {}}, Messages: msgs("t", `{"x":"`+strings.Repeat("y", 5000)+`"}`)}
	wantCode(t, c.ImportAirbyteRecords(ctx, big, ""), 413, "RequestTooLarge")
	_, err := c.PrimaryKeyIndexesReady(ctx, []string{"never_indexed"})
	wantCode(t, err, 400, "MissingIndex")
	wantCode(t, c.AddPrimaryKeyIndexes(ctx, map[string][][]string{"t": {}}), 400, "EmptyPrimaryKey")
	post := func(path, ctype, body string, header ...string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, e.URL()+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Convex "+testKey)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e struct{ Code string }
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e.Code
	}
	for _, tc := range []struct {
		path, ctype, body string
		header            []string
		status            int
		code              string
	}{
		{"/api/streaming_import/replace_tables", "application/json", `{"tableNames":{"a":"b"}}`, nil, 400, "OverwriteNotSupported"},
		{"/api/streaming_import/import_airbyte_records", "text/plain", `{}`, nil, 400, "BadJsonBody"},
		{"/api/streaming_import/import_airbyte_records", "application/json", `{"tables":{"t":{}},"messages":[{"tableName":"t","data":{"a":1}}`, nil, 400, "BadJsonBody"},
		{"/api/streaming_import/import_airbyte_records", "application/json", `{"tables":{}}`, nil, 400, "BadJsonBody"},
		{"/api/streaming_import/import_airbyte_records", "application/json", `{"messages":[{"tableName":"t","data":{"a":1}}],"tables":{"t":{}},"messages":[]}`, nil, 400, "BadJsonBody"},
		{"/api/streaming_import/import_airbyte_records", "application/json", `{"tables":{"t":{}},"tables":{"u":{}},"messages":[]}`, nil, 400, "BadJsonBody"},
		{"/api/streaming_import/import_airbyte_records", "application/json", `{"tables":{},"messages":[]}`, []string{"Convex-Client", "nodash"}, 400, "InvalidClientVersion"},
	} {
		if status, code := post(tc.path, tc.ctype, tc.body, tc.header...); status != tc.status || code != tc.code {
			t.Errorf("%s %s: got %d %s, want %d %s", tc.path, tc.body, status, code, tc.status, tc.code)
		}
	}
	// Messages before tables (a client that marshals a map) work too.
	if status, code := post("/api/streaming_import/import_airbyte_records", "application/json", `{"messages":[{"tableName":"late","data":{"a":1}}],"tables":{"late":{"primaryKey":null,"jsonSchema":null}}}`); status != 200 {
		t.Fatalf("messages before tables: %d %s", status, code)
	}
}

func TestImportIdentifiersAndClear(t *testing.T) {
	conn, c, ctx := importSetup(t)
	name := `Weird Schema."Ta.ble ""x""; DROP TABLE t; --"`
	tables := map[string]client.TableSpec{name: {PrimaryKey: [][]string{{"Key Col"}}}}
	if err := c.ImportAirbyteRecords(ctx, client.ImportRequest{Tables: tables, Messages: msgs(name, `{"Key Col":"k1","ü ber":"v","quote\"d":1}`)}, ""); err != nil {
		t.Fatal(err)
	}
	if got := rowsOf(t, conn, `SELECT "Key Col", "ü ber", "quote""d"::text FROM "Weird Schema"."Ta.ble ""x""; DROP TABLE t; --"`); strings.Join(got, ",") != "k1|v|1" {
		t.Fatalf("rows: %v", got)
	}
	if err := c.ClearTables(ctx, []string{name, "brand_new"}); err != nil {
		t.Fatal(err)
	}
	if got := rowsOf(t, conn, `SELECT count(*) FROM "Weird Schema"."Ta.ble ""x""; DROP TABLE t; --"`); got[0] != "0" {
		t.Fatalf("not cleared: %v", got)
	}
	if got := rowsOf(t, conn, `SELECT to_regclass('brand_new') IS NOT NULL`); got[0] != "true" {
		t.Fatal("clear_tables did not create the missing table")
	}
}

func TestImportConcurrentIntoOneTable(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	e := startEngine(t, dbURL)
	c := apiClient(t, e.URL())
	tables := map[string]client.TableSpec{"shared": {PrimaryKey: [][]string{{"id"}}, JSONSchema: json.RawMessage(`{"type":"object","properties":{"id":{"type":"integer"},"w":{"type":"integer"}}}`)}}
	var wg sync.WaitGroup
	var failed atomic.Int64
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for b := 0; b < 5; b++ {
				var docs []string
				for i := 0; i < 50; i++ {
					docs = append(docs, fmt.Sprintf(`{"id":%d,"w":%d}`, w*1000+b*50+i, w))
				}
				if err := c.ImportAirbyteRecords(context.Background(), client.ImportRequest{Tables: tables, Messages: msgs("shared", docs...)}, ""); err != nil {
					t.Error(err)
					failed.Add(1)
				}
			}
		}(w)
	}
	wg.Wait()
	if got := rowsOf(t, conn, `SELECT count(*), count(DISTINCT id) FROM shared`); got[0] != "2000|2000" || failed.Load() > 0 {
		t.Fatalf("after concurrent imports: %v (%d failed)", got, failed.Load())
	}
}

// TestImportRetryAfterLostResponse: the engine commits, the connection
// drops before the response; the client's retry carries the same
// idempotency key and is a no-op instead of a second append.
func TestImportRetryAfterLostResponse(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	e := startEngine(t, dbURL)
	target, _ := url.Parse(e.URL())
	var calls atomic.Int64
	proxy := httputil.NewSingleHostReverseProxy(target)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			rec := &discardWriter{header: http.Header{}}
			proxy.ServeHTTP(rec, r) // the engine commits...
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close() // ...and the response is lost
			return
		}
		proxy.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	c := apiClient(t, "http://"+ln.Addr().String())
	req := client.ImportRequest{Tables: map[string]client.TableSpec{"appendonly": {}}, Messages: msgs("appendonly", `{"n":1}`, `{"n":2}`)}
	if err := c.ImportAirbyteRecords(context.Background(), req, ""); err != nil {
		t.Fatal(err)
	}
	if calls.Load() < 2 {
		t.Fatalf("the client did not retry (%d calls)", calls.Load())
	}
	if got := rowsOf(t, conn, `SELECT count(*) FROM appendonly`); got[0] != "2" {
		t.Fatalf("%s rows after a retried request, want 2", got[0])
	}
}

type discardWriter struct {
	header http.Header
	status int
}

func (d *discardWriter) Header() http.Header         { return d.header }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(s int)           { d.status = s }

// TestIndexBuildOnExistingData: a key index over existing rows is built
// concurrently; duplicate keys make the build fail, reported by readiness.
func TestIndexBuildOnExistingData(t *testing.T) {
	conn, c, ctx := importSetup(t)
	mustExec(t, conn, `CREATE TABLE existing (id bigint, v text); INSERT INTO existing SELECT g, 'v' FROM generate_series(1, 20000) g`)
	mustExec(t, conn, `CREATE TABLE dupes (id bigint); INSERT INTO dupes VALUES (1), (1)`)
	if err := c.AddPrimaryKeyIndexes(ctx, map[string][][]string{"existing": {{"id"}}, "dupes": {{"id"}}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ready, err := c.PrimaryKeyIndexesReady(ctx, []string{"existing"})
		if err != nil {
			t.Fatal(err)
		}
		if ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("index never became ready")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Adding the same key again is a no-op; dedup now works on the old rows.
	if err := c.AddPrimaryKeyIndexes(ctx, map[string][][]string{"existing": {{"id"}}}); err != nil {
		t.Fatal(err)
	}
	spec := client.TableSpec{PrimaryKey: [][]string{{"id"}}, JSONSchema: json.RawMessage(`{"type":"object","properties":{"id":{"type":"integer"},"v":{"type":"string"}}}`)}
	if err := c.ImportAirbyteRecords(ctx, client.ImportRequest{Tables: map[string]client.TableSpec{"existing": spec}, Messages: msgs("existing", `{"id":5,"v":"new"}`)}, ""); err != nil {
		t.Fatal(err)
	}
	if got := rowsOf(t, conn, `SELECT count(*), max(v) FROM existing`); got[0] != "20000|v" && got[0] != "20000|new" {
		t.Fatalf("existing: %v", got)
	}
	if got := rowsOf(t, conn, `SELECT v FROM existing WHERE id = 5`); len(got) != 1 || got[0] != "new" {
		t.Fatalf("upsert on existing rows: %v", got)
	}
	for {
		_, err := c.PrimaryKeyIndexesReady(ctx, []string{"dupes"})
		if err != nil {
			wantCode(t, err, 400, "IndexBuildFailed")
			if !strings.Contains(err.Error(), "duplicate") && !strings.Contains(err.Error(), "could not create unique index") {
				t.Fatalf("failure does not explain duplicates: %v", err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("duplicate keys never reported")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestImportEmptyRecords(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	e := startEngine(t, dbURL)
	c := apiClient(t, e.URL())
	if err := c.ImportAirbyteRecords(context.Background(), client.ImportRequest{Tables: map[string]client.TableSpec{"bare": {}}, Messages: msgs("bare", `{}`, `{}`)}, ""); err != nil {
		t.Fatal(err)
	}
	if got := rowsOf(t, conn, `SELECT count(*) FROM bare`); got[0] != "2" {
		t.Fatalf("%s rows, want 2", got[0])
	}
}

// TestImportUserTablesKeepTheirTypes: a table the importer did not create
// keeps its column types, empty or not, whatever the schema says; values
// are cast by PostgreSQL, and one it rejects fails the request with a 400
// naming the message and the field.
func TestImportUserTablesKeepTheirTypes(t *testing.T) {
	conn, c, ctx := importSetup(t)
	mustExec(t, conn, `CREATE TABLE ut (id bigint, b bytea, d date, ts timestamptz, u uuid, n numeric(10,2), j jsonb, k integer)`)
	before := columnTypes(t, conn, "ut")
	loose := client.TableSpec{JSONSchema: json.RawMessage(`{"type":"object","properties":{
		"id":{"type":"integer"},"b":{"type":["string","null"]},"d":{"type":"string"},"ts":{"type":["null","string"]},
		"u":{"type":"string"},"n":{"type":"number"},"j":{"type":"string"},"k":{"type":"number"},"extra":{"type":"string"}}}`)}
	tables := map[string]client.TableSpec{"ut": loose}
	if err := c.ImportAirbyteRecords(ctx, client.ImportRequest{Tables: tables, Messages: msgs("ut",
		`{"id":1,"b":"3q2+7w==","d":"2024-02-29","ts":"2024-01-01T10:00:00+02:00","u":"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11","n":1.25,"j":"s","k":3,"extra":"x"}`)}, ""); err != nil {
		t.Fatal(err)
	}
	if got := columnTypes(t, conn, "ut"); got != before+", extra text" {
		t.Fatalf("columns of a user table changed:\n%s\nwas\n%s", got, before)
	}
	// Now non-empty: still no retyping, even for a union or an object.
	tables["ut"] = client.TableSpec{JSONSchema: json.RawMessage(`{"type":"object","properties":{"id":{"type":"integer"},"d":{"type":["string","integer"]},"j":{"type":"object"},"k":{"type":"number"}}}`)}
	if err := c.ImportAirbyteRecords(ctx, client.ImportRequest{Tables: tables, Messages: msgs("ut", `{"id":2,"d":"2024-03-01","j":{"a":[1]},"k":4}`)}, ""); err != nil {
		t.Fatal(err)
	}
	if got := columnTypes(t, conn, "ut"); got != before+", extra text" {
		t.Fatalf("columns of a user table changed:\n%s\nwas\n%s", got, before)
	}
	if got := rowsOf(t, conn, `SELECT id, b, d::text, ts::text, u::text, n::text, j::text, k, extra FROM ut ORDER BY id`); strings.Join(got, "\n") !=
		"1|deadbeef|2024-02-29|2024-01-01 08:00:00+00|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11|1.25|\"s\"|3|x\n2||2024-03-01|<nil>|<nil>|<nil>|{\"a\": [1]}|4|<nil>" &&
		strings.Join(got, "\n") != "1|deadbeef|2024-02-29|2024-01-01 08:00:00+00|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11|1.25|\"s\"|3|x\n2|<nil>|2024-03-01|<nil>|<nil>|<nil>|{\"a\": [1]}|4|<nil>" {
		t.Fatalf("rows:\n%s", strings.Join(got, "\n"))
	}
	// Values PostgreSQL cannot cast: 400 naming message and field, nothing written.
	for _, tc := range []struct {
		docs  []string
		words []string
	}{
		{[]string{`{"id":3,"d":"2024-03-02"}`, `{"id":4,"d":"31st of never"}`}, []string{"message 1", "ut", "field d", "date"}},
		{[]string{`{"id":3,"k":2.5}`}, []string{"message 0", "field k", "integer"}},
		{[]string{`{"id":3}`, `{"id":3,"b":"not base64!"}`}, []string{"message 1", "field b", "base64"}},
		{[]string{`{"id":3,"u":"nope"}`}, []string{"message 0", "field u", "uuid"}},
	} {
		err := c.ImportAirbyteRecords(ctx, client.ImportRequest{Tables: tables, Messages: msgs("ut", tc.docs...)}, "")
		wantBadRequest(t, err, "InvalidValue", tc.words...)
	}
	// The same through the staging table of a dedup stream.
	if err := c.AddPrimaryKeyIndexes(ctx, map[string][][]string{"ut": {{"id"}}}); err != nil {
		t.Fatal(err)
	}
	waitIndexes(t, c, "ut")
	keyed := map[string]client.TableSpec{"ut": {PrimaryKey: [][]string{{"id"}}, JSONSchema: tables["ut"].JSONSchema}}
	err := c.ImportAirbyteRecords(ctx, client.ImportRequest{Tables: keyed, Messages: msgs("ut", `{"id":1,"d":"2024-05-01"}`, `{"id":2}`, `{"id":5,"d":"soon"}`)}, "")
	wantBadRequest(t, err, "InvalidValue", "message 2", "field d")
	if got := rowsOf(t, conn, `SELECT count(*), max(d)::text FROM ut`); got[0] != "2|2024-03-01" {
		t.Fatalf("a rejected request wrote rows: %v", got)
	}
	if got := columnTypes(t, conn, "ut"); got != before+", extra text" {
		t.Fatalf("columns of a user table changed:\n%s\nwas\n%s", got, before)
	}
}

// TestImportWidensOwnTablesOnlyWhenNeeded: a table the importer created is
// widened only when a declared type cannot be stored in the column, never
// narrowed; a string without a format fits any string column, and a
// nullable variant of a type is the same type.
func TestImportWidensOwnTablesOnlyWhenNeeded(t *testing.T) {
	conn, c, ctx := importSetup(t)
	spec := func(props string) map[string]client.TableSpec {
		return map[string]client.TableSpec{"own": {JSONSchema: json.RawMessage(`{"type":"object","properties":{` + props + `}}`)}}
	}
	imp := func(props string, docs ...string) {
		t.Helper()
		if err := c.ImportAirbyteRecords(ctx, client.ImportRequest{Tables: spec(props), Messages: msgs("own", docs...)}, ""); err != nil {
			t.Fatal(err)
		}
	}
	imp(`"id":{"type":"integer"},"d":{"type":"string","format":"date"},"bin":{"type":"string","contentEncoding":"base64"},"i":{"type":"integer"},
		"s":{"type":"string"},"t":{"type":"string","format":"date"},"tm":{"type":"string","format":"time"},"f":{"type":"number"}`,
		`{"id":1,"d":"2024-01-01","bin":"3q2+7w==","i":1,"s":"a","t":"2024-01-01","tm":"10:00:00","f":1.5}`)
	const v1 = "bin bytea, d date, f numeric, i bigint, id bigint, s text, t date, tm time without time zone" // declared: sorted
	if got := columnTypes(t, conn, "own"); got != v1 {
		t.Fatalf("columns: %s", got)
	}
	if got := rowsOf(t, conn, `SELECT obj_description('own'::regclass, 'pg_class') LIKE 'shapelog%'`); got[0] != "true" {
		t.Fatalf("the table does not say the importer created it: %v", got)
	}
	// Looser or nullable strings, and types that fit: nothing changes.
	imp(`"id":{"type":["integer","null"]},"d":{"type":["string","null"]},"bin":{"type":"string"},"i":{"type":["null","integer"]},
		"s":{"type":["null","string"]},"t":{"type":"string"},"tm":{"type":["string","null"],"format":"time"},"f":{"type":"integer"}`,
		`{"id":2,"d":"2024-01-02","bin":"AAE=","i":2,"s":"b","t":"2024-01-02","tm":"11:00:00","f":2}`)
	if got := columnTypes(t, conn, "own"); got != v1 {
		t.Fatalf("columns changed for compatible schemas: %s", got)
	}
	// Undeclared values that fit change nothing either.
	if err := c.ImportAirbyteRecords(ctx, client.ImportRequest{Tables: map[string]client.TableSpec{"own": {}},
		Messages: msgs("own", `{"id":3,"d":"2024-01-03","i":3,"f":3,"s":"c","bin":"AAI="}`)}, ""); err != nil {
		t.Fatal(err)
	}
	if got := columnTypes(t, conn, "own"); got != v1 {
		t.Fatalf("columns changed for undeclared values that fit: %s", got)
	}
	// Types that do not fit widen: integer → number, date → date-time
	// within the family, another string format → text, number → string.
	imp(`"id":{"type":"integer"},"i":{"type":"number"},"t":{"type":"string","format":"date-time"},"tm":{"type":"string","format":"date"},"f":{"type":"string"}`,
		`{"id":4,"i":4.5,"t":"2024-01-04T05:06:07Z","tm":"2024-01-04","f":"many"}`)
	const v2 = "bin bytea, d date, f text, i numeric, id bigint, s text, t timestamp with time zone, tm text"
	if got := columnTypes(t, conn, "own"); got != v2 {
		t.Fatalf("columns after widening: %s", got)
	}
	// Never narrowed back.
	imp(`"id":{"type":"integer"},"i":{"type":"integer"},"t":{"type":"string","format":"date"},"tm":{"type":"string","format":"time"},"f":{"type":"number"}`,
		`{"id":5,"i":5,"t":"2024-01-05","tm":"12:00:00","f":5}`)
	if got := columnTypes(t, conn, "own"); got != v2 {
		t.Fatalf("columns narrowed: %s", got)
	}
	if got := rowsOf(t, conn, `SELECT id, d::text, encode(bin, 'base64'), i::text, t::text, tm, f FROM own ORDER BY id`); strings.Join(got, "\n") != strings.Join([]string{
		"1|2024-01-01|3q2+7w==|1|2024-01-01 00:00:00+00|10:00:00|1.5",
		"2|2024-01-02|AAE=|2|2024-01-02 00:00:00+00|11:00:00|2",
		"3|2024-01-03|AAI=|3|<nil>|<nil>|3",
		"4|<nil>|<nil>|4.5|2024-01-04 05:06:07+00|2024-01-04|many",
		"5|<nil>|<nil>|5|2024-01-05 00:00:00+00|12:00:00|5",
	}, "\n") {
		t.Fatalf("rows:\n%s", strings.Join(got, "\n"))
	}
	// Emptied, the table still keeps its types.
	if err := c.ClearTables(ctx, []string{"own"}); err != nil {
		t.Fatal(err)
	}
	imp(`"id":{"type":"integer"},"d":{"type":"string"},"bin":{"type":["string","null"]}`, `{"id":6,"d":"2024-01-06","bin":"AAM="}`)
	if got := columnTypes(t, conn, "own"); got != v2 {
		t.Fatalf("columns of the emptied table changed: %s", got)
	}
	// Key columns add_primary_key_indexes had to guess take the declared
	// types from the first import.
	if err := c.AddPrimaryKeyIndexes(ctx, map[string][][]string{"keyed": {{"id"}, {"meta", "ref"}}}); err != nil {
		t.Fatal(err)
	}
	waitIndexes(t, c, "keyed")
	keyed := map[string]client.TableSpec{"keyed": {PrimaryKey: [][]string{{"id"}, {"meta", "ref"}}, JSONSchema: json.RawMessage(`{"type":"object","properties":{"id":{"type":"integer"},"meta":{"type":"object"},"v":{"type":"string"}}}`)}}
	if err := c.ImportAirbyteRecords(ctx, client.ImportRequest{Tables: keyed, Messages: msgs("keyed", `{"id":1,"meta":{"ref":"a"},"v":"x"}`, `{"id":1,"meta":{"ref":"a"},"v":"y"}`)}, ""); err != nil {
		t.Fatal(err)
	}
	if got := columnTypes(t, conn, "keyed"); got != "id bigint, meta jsonb, v text" {
		t.Fatalf("keyed columns: %s", got)
	}
	if got := rowsOf(t, conn, `SELECT id, v FROM keyed`); strings.Join(got, ",") != "1|y" {
		t.Fatalf("keyed rows: %v", got)
	}
	// Typed once, a key column is no longer provisional: emptied, the table
	// is not narrowed (smallint), only widened (a string makes text).
	if err := c.ClearTables(ctx, []string{"keyed"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ id, doc, want string }{
		{`{"type":"integer","$pgType":"smallint"}`, `{"id":7,"meta":{"ref":"a"}}`, "id bigint, meta jsonb, v text"},
		{`{"type":"string"}`, `{"id":"seven","meta":{"ref":"a"}}`, "id text, meta jsonb, v text"},
	} {
		keyed["keyed"] = client.TableSpec{PrimaryKey: [][]string{{"id"}, {"meta", "ref"}}, JSONSchema: json.RawMessage(`{"type":"object","properties":{"id":` + tc.id + `,"meta":{"type":"object"}}}`)}
		if err := c.ImportAirbyteRecords(ctx, client.ImportRequest{Tables: keyed, Messages: msgs("keyed", tc.doc)}, ""); err != nil {
			t.Fatal(err)
		}
		if got := columnTypes(t, conn, "keyed"); got != tc.want {
			t.Fatalf("keyed columns after %s: %s, want %s", tc.id, got, tc.want)
		}
	}
}

// TestAddIndexDoesNotBlockOtherCalls: while add_primary_key_indexes waits
// for an index it replaces to be rebuilt (here held up by an open
// transaction's snapshot), other index calls go ahead.
func TestAddIndexDoesNotBlockOtherCalls(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	e := startEngine(t, dbURL)
	c := apiClient(t, e.URL())
	ctx := context.Background()
	mustExec(t, conn, `CREATE TABLE slow (id bigint, v text); INSERT INTO slow SELECT g, 'v' || g FROM generate_series(1, 10) g; CREATE TABLE other (id bigint)`)
	if err := c.AddPrimaryKeyIndexes(ctx, map[string][][]string{"slow": {{"id"}}}); err != nil {
		t.Fatal(err)
	}
	waitIndexes(t, c, "slow")
	// A concurrent index build waits for every older snapshot to go.
	holder := connect(t, dbURL)
	tx, err := holder.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT 1`); err != nil {
		t.Fatal(err)
	}
	slowDone := make(chan error, 1)
	go func() { slowDone <- c.AddPrimaryKeyIndexes(ctx, map[string][][]string{"slow": {{"v"}}}) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if got := rowsOf(t, conn, `SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'CREATE UNIQUE INDEX CONCURRENTLY%slow%' AND wait_event_type = 'Lock'`); got[0] == "1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the index build never started waiting")
		}
		time.Sleep(20 * time.Millisecond)
	}
	quick, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ready, err := c.PrimaryKeyIndexesReady(quick, []string{"slow"})
	if err != nil || ready {
		t.Fatalf("readiness during the rebuild: %v %v", ready, err)
	}
	if err := c.AddPrimaryKeyIndexes(quick, map[string][][]string{"other": {{"id"}}}); err != nil {
		t.Fatalf("another table's index waited for the rebuild: %v", err)
	}
	select {
	case err := <-slowDone:
		t.Fatalf("the rebuilding add_primary_key_indexes returned before its build was done: %v", err)
	default:
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-slowDone; err != nil {
		t.Fatal(err)
	}
	waitIndexes(t, c, "slow", "other")
	if got := rowsOf(t, conn, `SELECT indexdef FROM pg_indexes WHERE tablename = 'slow'`); len(got) != 1 || !strings.Contains(got[0], "(v)") {
		t.Fatalf("slow's index: %v", got)
	}
}

// TestImportIntegralNumbersIntoIntegerColumns: JSON Schema's "integer"
// takes 1.0 and 2e3; integer columns store them.
func TestImportIntegralNumbersIntoIntegerColumns(t *testing.T) {
	conn, c, ctx := importSetup(t)
	mustExec(t, conn, `CREATE TABLE ints (s smallint, k integer)`)
	tables := map[string]client.TableSpec{
		"own":  {JSONSchema: json.RawMessage(`{"type":"object","properties":{"i":{"type":"integer"}}}`)},
		"ints": {},
	}
	if err := c.ImportAirbyteRecords(ctx, client.ImportRequest{Tables: tables, Messages: append(msgs("own", `{"i":1.0}`, `{"i":2e3}`, `{"i":-7.50e1}`),
		msgs("ints", `{"s":3.0,"k":4E2}`)...)}, ""); err != nil {
		t.Fatal(err)
	}
	if got := rowsOf(t, conn, `SELECT i FROM own ORDER BY i`); strings.Join(got, ",") != "-75,1,2000" {
		t.Fatalf("own: %v", got)
	}
	if got := rowsOf(t, conn, `SELECT s, k FROM ints`); strings.Join(got, ",") != "3|400" {
		t.Fatalf("ints: %v", got)
	}
	err := c.ImportAirbyteRecords(ctx, client.ImportRequest{Tables: tables, Messages: msgs("ints", `{"s":1}`, `{"k":2.5}`)}, "")
	wantBadRequest(t, err, "InvalidValue", "message 1", "field k")
}
