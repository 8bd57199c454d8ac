package engine_test

import (
	"bytes"
	"encoding/json"
	"net/url"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v5"

	"github.com/shapelog/shapelog/internal/pgtest"
)

// TestDocumentsMatchSchemas checks the json_schemas contract: every document
// list_snapshot and document_deltas emit validates against the schema
// json_schemas gives for its table, in both formats.
func TestDocumentsMatchSchemas(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')`)
	mustExec(t, conn, `CREATE DOMAIN posint AS int CHECK (VALUE > 0)`)
	mustExec(t, conn, `CREATE TABLE every (
		id bigint PRIMARY KEY, i2 smallint, i4 int NOT NULL, n numeric, f4 real, f8 double precision,
		b boolean, t text, vc varchar(10), c char(3), u uuid, d date, tm time, ttz timetz, ts timestamp,
		tstz timestamptz, iv interval, by bytea, j json, jb jsonb, ia int[], ta text[], m mood, p posint,
		"_id" text)`)
	mustExec(t, conn, `INSERT INTO every VALUES
		(1, 1, 2, 12345678901234567890.123, 1.5, 'NaN', true, 'tab	"q"', 'v', 'ab', gen_random_uuid(), '2024-02-29',
		 '12:00', '12:00+02', '2024-01-01 10:00:00.5', '2024-01-01 10:00:00+00', '1 day 2 hours', '\xdeadbeef',
		 '{"a": [1, null]}', '{"b": {"c": "d"}}', '{1,NULL,3}', '{"x y",NULL,"NULL"}', 'happy', 5, 'shadow'),
		(-9223372036854775808, NULL, 0, NULL, '-Infinity', '-0', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
		 NULL, NULL, NULL, NULL, NULL, NULL, '{}', '{}', NULL, NULL, NULL)`)
	e := startEngine(t, dbURL)
	for _, format := range []string{"json", "convex_json"} {
		t.Run(format, func(t *testing.T) {
			snapDocs, snap := readSnapshot(t, e.URL(), url.Values{"format": {format}})
			mustExec(t, conn, `UPDATE every SET t = 'changed', jb = '[1, 2]' WHERE id = 1`)
			mustExec(t, conn, `DELETE FROM every WHERE id < 0`)
			mustExec(t, conn, `INSERT INTO every (id, i4) VALUES (-9223372036854775808, 1)`)
			deltas := waitDeltas(t, e.URL(), snap, url.Values{"format": {format}}, func(d []doc) bool { return len(d) >= 3 })
			for _, delta := range []bool{false, true} {
				r := get(t, e.URL(), "/api/json_schemas", url.Values{"format": {format}, "deltaSchema": {map[bool]string{false: "false", true: "true"}[delta]}})
				var schemas map[string]json.RawMessage
				r.decode(t, &schemas)
				c := jsonschema.NewCompiler()
				c.AssertFormat = true
				if err := c.AddResource("every.json", bytes.NewReader(schemas["every"])); err != nil {
					t.Fatal(err)
				}
				schema, err := c.Compile("every.json")
				if err != nil {
					t.Fatalf("schema does not compile: %v\n%s", err, schemas["every"])
				}
				docs := snapDocs
				if delta {
					docs = deltas
				}
				for _, d := range docs {
					if err := schema.Validate(d); err != nil {
						b, _ := json.Marshal(d)
						t.Errorf("delta=%v: %s\ndoes not match its schema: %v", delta, b, err)
					}
				}
			}
			if snapDocs[0]["_id_"] == nil && snapDocs[1]["_id_"] == nil {
				t.Errorf("a column named _id must be exported as _id_: %s", brief(snapDocs))
			}
			mustExec(t, conn, `DELETE FROM every WHERE id < 0`)
			mustExec(t, conn, `INSERT INTO every (id, i4, i2, f4, f8, ia, ta) VALUES (-9223372036854775808, 0, NULL, '-Infinity', '-0', '{}', '{}')`)
		})
	}
}

// TestTableCreatedLater: a table created after the engine started is
// published on demand, snapshotted and streamed.
func TestTableCreatedLater(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	e := startEngine(t, dbURL)
	mustExec(t, conn, `CREATE TABLE later (id int PRIMARY KEY, v text)`)
	mustExec(t, conn, `INSERT INTO later VALUES (1, 'before snapshot')`)
	docs, snap := readSnapshot(t, e.URL(), url.Values{"tableName": {"later"}})
	if len(docs) != 1 || docs[0]["v"] != "before snapshot" {
		t.Fatalf("snapshot of the new table: %s", brief(docs))
	}
	mustExec(t, conn, `UPDATE later SET v = 'after' WHERE id = 1`)
	deltas := waitDeltas(t, e.URL(), snap, url.Values{"tableName": {"later"}}, func(d []doc) bool { return len(d) == 1 })
	if deltas[0]["v"] != "after" {
		t.Fatalf("delta: %s", brief(deltas))
	}
	var ident string
	if err := conn.QueryRow(t.Context(), `SELECT relreplident::text FROM pg_class WHERE relname = 'later'`).Scan(&ident); err != nil || ident != "f" {
		t.Fatalf("replica identity %q (%v), want f", ident, err)
	}
}
