package engine_test

import (
	"bytes"
	"encoding/json"
	"net/url"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v5"

	"github.com/shapelog/shapelog/internal/connectortest"
	"github.com/shapelog/shapelog/internal/pgtest"
)

// deltaSchemas compiles json_schemas?deltaSchema=true in format, by table.
func deltaSchemas(t *testing.T, base, format string) map[string]*jsonschema.Schema {
	t.Helper()
	r := get(t, base, "/api/json_schemas", url.Values{"format": {format}, "deltaSchema": {"true"}})
	var raw map[string]json.RawMessage
	r.decode(t, &raw)
	out := map[string]*jsonschema.Schema{}
	for table, s := range raw {
		c := jsonschema.NewCompiler()
		c.Draft = jsonschema.Draft7
		c.AssertFormat = true
		if err := c.AddResource(table+".json", bytes.NewReader(s)); err != nil {
			t.Fatal(err)
		}
		compiled, err := c.Compile(table + ".json")
		if err != nil {
			t.Fatalf("the delta schema of %s does not compile: %v\n%s", table, err, s)
		}
		out[table] = compiled
	}
	return out
}

// TestDeltasMatchDeltaSchema: every document document_deltas emits —
// inserts, updates, key changes, deletes and the markers TRUNCATEs leave,
// alone or amid other changes — validates against the delta schema
// json_schemas publishes for its table, in both formats; and the schema
// still refuses a document without its key that is no TRUNCATE marker.
func TestDeltasMatchDeltaSchema(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE kv (id int PRIMARY KEY, v text NOT NULL, n bigint)`)
	mustExec(t, conn, `CREATE TABLE pair (a text, b int, c jsonb, "_truncated" bool, PRIMARY KEY (a, b))`)
	mustExec(t, conn, `CREATE TABLE bag (x int, y text)`)
	e := startEngine(t, dbURL)
	for _, format := range []string{"json", "convex_json"} {
		t.Run(format, func(t *testing.T) {
			_, snap := readSnapshot(t, e.URL(), url.Values{"format": {format}})
			for _, sql := range []string{
				`INSERT INTO kv VALUES (1, 'one', 10), (2, 'two', NULL), (3, 'three', 9007199254740993)`,
				`INSERT INTO pair VALUES ('a', 1, '{"k": [1]}', true), ('b', 2, NULL, NULL)`,
				`INSERT INTO bag VALUES (1, 'x'), (NULL, NULL)`,
				`UPDATE kv SET v = 'uno' WHERE id = 1`,
				`UPDATE kv SET id = 4 WHERE id = 2`,
				`UPDATE pair SET b = 3 WHERE a = 'a'`,
				`DELETE FROM kv WHERE id = 3`,
				`DELETE FROM bag WHERE x IS NULL`,
				`TRUNCATE kv`,
				`TRUNCATE pair, bag`,
				`BEGIN; INSERT INTO kv VALUES (5, 'five', 5); TRUNCATE kv; INSERT INTO kv VALUES (6, 'six', 6); INSERT INTO pair VALUES ('c', 1, '[]', false); COMMIT`,
			} {
				mustExec(t, conn, sql)
			}
			connectortest.CatchUp(t, e, conn)
			deltas, _ := readDeltas(t, e.URL(), snap, url.Values{"format": {format}})
			schemas := deltaSchemas(t, e.URL(), format)
			markers := map[any]int{}
			for _, d := range deltas {
				if d["_truncated"] == true {
					markers[d["_table"]]++
				}
				s := schemas[d["_table"].(string)]
				if s == nil {
					t.Fatalf("no schema for %v", d["_table"])
				}
				if err := s.Validate(d); err != nil {
					b, _ := json.Marshal(d)
					t.Errorf("%s\ndoes not match its delta schema: %v", b, err)
				}
			}
			if markers["kv"] != 2 || markers["pair"] != 1 || markers["bag"] != 1 {
				t.Errorf("TRUNCATE markers by table: %v; want kv 2, pair 1, bag 1", markers)
			}
			for _, bad := range []string{
				`{"_table":"kv","_ts":1,"_id":"\"public\".\"kv\"","_deleted":true}`,
				`{"_table":"kv","_ts":1,"_id":"\"public\".\"kv\"","_deleted":false,"_truncated":true}`,
				`{"_table":"kv","_ts":1,"_id":"\"public\".\"kv\"/\"1\"","_deleted":false,"v":"no id"}`,
			} {
				var d any
				_ = json.Unmarshal([]byte(bad), &d)
				if err := schemas["kv"].Validate(d); err == nil {
					t.Errorf("the delta schema of kv accepts %s", bad)
				}
			}
			// A column named _truncated is exported as _truncated_, so
			// it is never taken for the marker.
			for _, d := range deltas {
				if d["_id"] == `"public"."pair"/"a"/"1"` && d["_deleted"] == false && (d["_truncated_"] != true || d["_truncated"] != nil) {
					t.Errorf("column _truncated not exported as _truncated_: %v", d)
				}
			}
		})
	}
}
