package engine_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shapelog/shapelog/engine/client"
	"github.com/shapelog/shapelog/internal/pgtest"
)

// hardeningSetup gives a test a database, a connection to it and the URL
// of an engine on it.
func hardeningSetup(t *testing.T) (*pgx.Conn, string) {
	t.Helper()
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	return conn, startEngine(t, dbURL).URL()
}

// importBody posts an import_airbyte_records body with the test key.
func importBody(t *testing.T, base, body string) apiResult {
	t.Helper()
	status, b := sendJSON(t, http.MethodPost, base+"/api/streaming_import/import_airbyte_records", "Convex "+testKey, body)
	return apiResult{Status: status, Body: b}
}

// want400 checks a 400 with code whose message names every one of words.
func (r apiResult) want400(t *testing.T, code string, words ...string) {
	t.Helper()
	var e struct{ Code, Message string }
	if r.Status != http.StatusBadRequest || json.Unmarshal(r.Body, &e) != nil || e.Code != code {
		t.Fatalf("got %d %s, want 400 %s", r.Status, r.Body, code)
	}
	for _, w := range words {
		if !strings.Contains(e.Message, w) {
			t.Errorf("message %q does not name %q", e.Message, w)
		}
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestImportRefusesReservedSchemas: no endpoint that takes a table name
// reaches into the engine's own schema or PostgreSQL's system schemas; each
// is a 400 naming the table and the schema, and nothing is written.
func TestImportRefusesReservedSchemas(t *testing.T) {
	conn, base := hardeningSetup(t)
	// The engine's idempotency table exists: an import with a key made it.
	if r := importBody(t, base, `{"tables":{"ok":{}},"messages":[{"tableName":"ok","data":{"a":1}}]}`); r.Status != http.StatusOK {
		t.Fatalf("import: %d %s", r.Status, r.Body)
	}
	status, body := sendJSONWithKey(t, base, "seed-key", `{"tables":{"ok":{}},"messages":[]}`)
	if status != http.StatusOK {
		t.Fatalf("import with key: %d %s", status, body)
	}
	reserved := map[string]string{
		"shapelog.import_keys":      "shapelog",
		"shapelog.other":            "shapelog",
		`"shapelog"."import_keys"`:  "shapelog",
		"pg_catalog.pg_class":       "pg_catalog",
		"pg_catalog.x":              "pg_catalog",
		"information_schema.x":      "information_schema",
		"information_schema.tables": "information_schema",
		"pg_toast.x":                "pg_toast",
		"pg_temp.x":                 "pg_temp",
		"pg_temp_3.x":               "pg_temp_3",
		"pg_toast_temp_1.x":         "pg_toast_temp_1",
		`"pg_catalog"."x"`:          "pg_catalog",
		"pg_anything_at_all.x":      "pg_anything_at_all",
		`"pg_temp"."a.b"`:           "pg_temp",
	}
	for name, schema := range reserved {
		q := jsonString(name)
		calls := []struct{ method, path, body string }{
			{http.MethodPost, "import_airbyte_records", `{"tables":{` + q + `:{}},"messages":[{"tableName":` + q + `,"data":{"key":"x"}}]}`},
			{http.MethodPut, "clear_tables", `{"tableNames":[` + q + `]}`},
			{http.MethodPut, "add_primary_key_indexes", `{"indexes":{` + q + `:[["key"]]}}`},
			{http.MethodGet, "primary_key_indexes_ready", `{"tables":[` + q + `]}`},
			{http.MethodPut, "delete_other_generations", `{"tables":{` + q + `:1}}`},
		}
		for _, c := range calls {
			status, b := sendJSON(t, c.method, base+"/api/streaming_import/"+c.path, "Convex "+testKey, c.body)
			apiResult{Status: status, Body: b}.want400(t, "InvalidTableName", strconv.Quote(name), strconv.Quote(schema), "reserved")
		}
	}
	if got := rowsOf(t, conn, `SELECT key FROM shapelog.import_keys`); len(got) != 1 || got[0] != "seed-key" {
		t.Fatalf("shapelog.import_keys = %v, want only seed-key", got)
	}
	if got := rowsOf(t, conn, `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname IN ('shapelog', 'information_schema', 'pg_catalog') AND c.relname IN ('x', 'other')`); got[0] != "0" {
		t.Fatalf("%s tables were created in reserved schemas", got[0])
	}
	// Names that only look like reserved ones are ordinary schemas.
	for _, name := range []string{"pg.t", "shapelog_data.t", "PG_CATALOG.t", "public.pg_class"} {
		q := jsonString(name)
		if r := importBody(t, base, `{"tables":{`+q+`:{}},"messages":[{"tableName":`+q+`,"data":{"a":1}}]}`); r.Status != http.StatusOK {
			t.Fatalf("import into %s: %d %s", name, r.Status, r.Body)
		}
	}
	if got := rowsOf(t, conn, `SELECT count(*) FROM pg.t, shapelog_data.t, "PG_CATALOG".t, public.pg_class`); got[0] != "1" {
		t.Fatalf("imports into look-alike schemas: %v", got)
	}
}

// sendJSONWithKey posts an import body with an Idempotency-Key.
func sendJSONWithKey(t *testing.T, base, key, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, base+"/api/streaming_import/import_airbyte_records", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Convex "+testKey)
	req.Header.Set("Idempotency-Key", key)
	resp, b := roundTrip(t, req)
	return resp.StatusCode, b
}

// TestImportRefusesNULAndInvalidUTF8: what PostgreSQL cannot store as it
// was sent (a NUL in a name or a text value, bytes that are not UTF-8) is
// a 400 naming the table name or the field, never silently changed data
// or a 500.
func TestImportRefusesNULAndInvalidUTF8(t *testing.T) {
	conn, base := hardeningSetup(t)
	textSchema := `{"type":"object","properties":{"s":{"type":"string"},"j":{"type":"object"}}}`
	cases := []struct {
		name, body, code string
		words            []string
	}{
		{"NUL in a declared table name", `{"tables":{"a\u0000b":{}},"messages":[]}`, "InvalidTableName", []string{"NUL", `"a\x00b"`}},
		{"NUL in a schema name", `{"tables":{"s\u0000.t":{}},"messages":[]}`, "InvalidTableName", []string{"NUL"}},
		{"invalid UTF-8 in a declared table name", "{\"tables\":{\"t\xff\":{}},\"messages\":[]}", "BadJsonBody", []string{"`tables`", `"/t\xff"`, "UTF-8"}},
		{"invalid UTF-8 in a message's table name", "{\"tables\":{\"t\":{}},\"messages\":[{\"tableName\":\"t\xff\",\"data\":{}}]}", "BadJsonBody", []string{"message 0", `"/tableName"`, "UTF-8"}},
		{"invalid UTF-8 in a jsonSchema", "{\"tables\":{\"t\":{\"jsonSchema\":{\"description\":\"\xc3\"}}},\"messages\":[]}", "BadJsonBody", []string{`"/t/jsonSchema/description"`, "UTF-8"}},
		{"invalid UTF-8 in a value", "{\"tables\":{\"t\":{}},\"messages\":[{\"tableName\":\"t\",\"data\":{\"a\":1}},{\"tableName\":\"t\",\"data\":{\"a\":2,\"s\":\"x\xffy\"}}]}", "InvalidRecord", []string{"message 1", "table t", `"/s"`, "UTF-8"}},
		{"invalid UTF-8 in a nested value", "{\"tables\":{\"t\":{\"jsonSchema\":" + textSchema + "}},\"messages\":[{\"tableName\":\"t\",\"data\":{\"j\":{\"k\":[\"ok\",\"\xfe\"]}}}]}", "InvalidRecord", []string{"message 0", `"/j/k/1"`, "UTF-8"}},
		{"invalid UTF-8 in a field name", "{\"tables\":{\"t\":{}},\"messages\":[{\"tableName\":\"t\",\"data\":{\"f\xff\":1}}]}", "InvalidRecord", []string{"message 0", `"/f\xff"`, "UTF-8"}},
		{"invalid UTF-8 after an escape", "{\"tables\":{\"t\":{}},\"messages\":[{\"tableName\":\"t\",\"data\":{\"s\":\"\\n\xe2\x82\"}}]}", "InvalidRecord", []string{`"/s"`, "UTF-8"}},
		{"NUL in a text value", `{"tables":{"t":{"jsonSchema":` + textSchema + `}},"messages":[{"tableName":"t","data":{"s":"a\u0000b"}}]}`, "InvalidValue", []string{"message 0", "field s", "NUL"}},
		{"NUL in an undeclared text value", `{"tables":{"t":{}},"messages":[{"tableName":"t","data":{"u":"ok"}},{"tableName":"t","data":{"u":"\u0000"}}]}`, "InvalidValue", []string{"message 1", "field u", "NUL"}},
		{"NUL in a dedup stream's text value", `{"tables":{"k":{"primaryKey":[["id"]]}},"messages":[{"tableName":"k","data":{"id":1,"s":"\u0000"}}]}`, "InvalidValue", []string{"message 0", "field s", "NUL"}},
		{"NUL in a jsonb value", `{"tables":{"t":{"jsonSchema":` + textSchema + `}},"messages":[{"tableName":"t","data":{"j":{"k":"\u0000"}}}]}`, "InvalidValue", []string{"message 0", "field j", "\\u0000"}},
		{"NUL in a text array", `{"tables":{"t":{"jsonSchema":{"type":"object","properties":{"a":{"type":"array","items":{"type":"string"}}}}}},"messages":[{"tableName":"t","data":{"a":["x","\u0000"]}}]}`, "InvalidValue", []string{"message 0", "field a"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			importBody(t, base, c.body).want400(t, c.code, c.words...)
		})
	}
	if got := rowsOf(t, conn, `SELECT count(*) FROM pg_class WHERE relname IN ('t', 'k', 'ab', 'a') AND relkind = 'r'`); got[0] != "0" {
		t.Fatalf("%s tables were created by refused requests", got[0])
	}
	// Valid UTF-8 and escapes still arrive exactly as sent.
	body := `{"tables":{"ok":{}},"messages":[{"tableName":"ok","data":{"s":"café \u00e9 \ud83d\ude00 ☃","k\u00e9":"v"}}]}`
	if r := importBody(t, base, body); r.Status != http.StatusOK {
		t.Fatalf("import: %d %s", r.Status, r.Body)
	}
	if got := rowsOf(t, conn, `SELECT s, "ké" FROM ok`); len(got) != 1 || got[0] != "café é 😀 ☃|v" {
		t.Fatalf("rows = %q", got)
	}
}

// TestImportIdempotencyKeyReuse: a retry (same key, same body) is a no-op
// 200; the key with another body is a 422 that writes nothing. Keys the
// engine recorded before it kept body hashes (the column is added to an
// existing table) still make their retries no-ops.
func TestImportIdempotencyKeyReuse(t *testing.T) {
	conn, base := hardeningSetup(t)
	// The engine's table as an older engine left it, with one key.
	mustExec(t, conn, `CREATE SCHEMA shapelog; CREATE TABLE shapelog.import_keys (key text PRIMARY KEY, imported_at timestamptz NOT NULL DEFAULT now());
		INSERT INTO shapelog.import_keys (key) VALUES ('old')`)
	bodyA := `{"tables":{"t":{}},"messages":[{"tableName":"t","data":{"n":1}}]}`
	bodyB := `{"tables":{"t":{}},"messages":[{"tableName":"t","data":{"n":2}}]}`
	send := func(key, body string, want int) {
		t.Helper()
		status, b := sendJSONWithKey(t, base, key, body)
		if status != want {
			t.Fatalf("key %s: %d %s, want %d", key, status, b, want)
		}
		if want == http.StatusUnprocessableEntity {
			var e struct{ Code, Message string }
			if json.Unmarshal(b, &e) != nil || e.Code != "IdempotencyKeyReused" || !strings.Contains(e.Message, key) || !strings.Contains(e.Message, "different body") {
				t.Fatalf("key %s: %s", key, b)
			}
		}
	}
	rows := func(want string) {
		t.Helper()
		if got := strings.Join(rowsOf(t, conn, `SELECT n::text FROM t ORDER BY n`), ","); got != want {
			t.Fatalf("rows %q, want %q", got, want)
		}
	}
	send("k1", bodyA, http.StatusOK)
	rows("1")
	send("k1", bodyA, http.StatusOK) // a retry
	rows("1")
	send("k1", bodyB, http.StatusUnprocessableEntity)
	send("k1", bodyA+" ", http.StatusUnprocessableEntity) // bytes, not meaning
	rows("1")
	send("old", bodyB, http.StatusOK) // recorded without a hash: a retry
	rows("1")
	send("k2", bodyB, http.StatusOK)
	rows("1,2")
	sum := sha256.Sum256([]byte(bodyA))
	if got := rowsOf(t, conn, `SELECT key, body_sha256 = '\x`+hex.EncodeToString(sum[:])+`' FROM shapelog.import_keys WHERE key IN ('k1', 'old') ORDER BY key`); strings.Join(got, ",") != "k1|true,old|<nil>" {
		t.Fatalf("stored hashes: %v", got)
	}
	// An invalid body with a used key is still reported as invalid.
	status, b := sendJSONWithKey(t, base, "k1", `{"tables":{"t":{}},"messages":[{"tableName":"nope","data":{}}]}`)
	if status != http.StatusBadRequest {
		t.Fatalf("invalid body with a used key: %d %s", status, b)
	}
}

// TestImportLosingPostgreSQLIsRetryable: when PostgreSQL goes away in the
// middle of an import's COPY, the request fails with 503
// DatabaseUnavailable, which clients retry, not with a 400 blaming the
// body; nothing is written, and the request sent again lands whole. Two
// ways to lose it: the connection just ends (a crashed server, as the
// engine sees it through a proxy that cuts it; the end reads as an
// unexpected EOF, which once passed for a truncated body), and the backend
// is terminated (an error PostgreSQL sends first).
func TestImportLosingPostgreSQLIsRetryable(t *testing.T) {
	for _, how := range []string{"connection cut", "backend terminated"} {
		t.Run(how, func(t *testing.T) {
			dbURL := pgtest.NewDatabase(t)
			conn := connect(t, dbURL)
			u, err := url.Parse(dbURL)
			if err != nil {
				t.Fatal(err)
			}
			proxy := pgtest.StartProxy(t, u.Host)
			u.Host = proxy.Addr()
			e := startEngine(t, u.String())
			lose := func() bool {
				var copying bool
				err := conn.QueryRow(context.Background(), `SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE 'COPY%lost%' AND pid <> pg_backend_pid()`).Scan(&copying)
				if err != nil || !copying {
					return false
				}
				if how == "connection cut" {
					proxy.Cut()
					return true
				}
				var terminated bool
				err = conn.QueryRow(context.Background(), `SELECT coalesce(bool_or(pg_terminate_backend(pid)), false) FROM pg_stat_activity
					WHERE query LIKE 'COPY%lost%' AND pid <> pg_backend_pid()`).Scan(&terminated)
				return err == nil && terminated
			}
			importWhileLosing(t, e.URL(), conn, lose)
		})
	}
}

// importWhileLosing sends half of an import, calls lose until it says
// PostgreSQL went away under the import's COPY, sends the rest, and checks
// the answer, that nothing was written, and that the request sent again
// lands whole.
func importWhileLosing(t *testing.T, engineURL string, conn *pgx.Conn, lose func() bool) {
	docs := make([]string, 40000)
	for i := range docs {
		docs[i] = fmt.Sprintf(`{"n":%d,"s":"row %d"}`, i, i)
	}
	spec := client.TableSpec{JSONSchema: json.RawMessage(`{"type":"object","properties":{"n":{"type":"integer"},"s":{"type":"string"}}}`)}
	request := client.ImportRequest{Tables: map[string]client.TableSpec{"lost": spec}, Messages: msgs("lost", docs...)}
	body, err := json.Marshal(request)
	if err != nil {
		t.Fatal(err)
	}
	half := bytes.Index(body, []byte(`{"n":20000,`))
	pr, pw := io.Pipe()
	defer pw.CloseWithError(io.ErrClosedPipe) // a failed test must not leave the import waiting
	req, _ := http.NewRequest(http.MethodPost, engineURL+"/api/streaming_import/import_airbyte_records", pr)
	req.Header.Set("Authorization", "Convex "+testKey)
	req.Header.Set("Content-Type", "application/json")
	answered := make(chan *http.Response, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("import: %v", err)
		}
		answered <- resp
	}()
	if _, err := pw.Write(body[:half]); err != nil {
		t.Fatal(err)
	}
	lost := false
	for deadline := time.Now().Add(10 * time.Second); !lost && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		lost = lose()
	}
	if !lost {
		t.Fatal("the import's COPY never showed in pg_stat_activity")
	}
	go func() { _, _ = pw.Write(body[half:]); pw.Close() }()
	resp := <-answered
	if resp == nil {
		return
	}
	defer resp.Body.Close()
	var got struct{ Code, Message string }
	_ = json.NewDecoder(resp.Body).Decode(&got)
	if resp.StatusCode != http.StatusServiceUnavailable || got.Code != "DatabaseUnavailable" {
		t.Fatalf("got %d %s (%s), want 503 DatabaseUnavailable", resp.StatusCode, got.Code, got.Message)
	}
	if got := rowsOf(t, conn, `SELECT to_regclass('lost') IS NULL`); got[0] != "true" {
		t.Errorf("the failed request left its table behind")
	}
	if err := apiClient(t, engineURL).ImportAirbyteRecords(context.Background(), request, ""); err != nil {
		t.Fatal(err)
	}
	if n := rowsOf(t, conn, `SELECT count(*) FROM lost`); n[0] != "40000" {
		t.Errorf("%s rows after the request was sent again, want 40000", n[0])
	}
}
