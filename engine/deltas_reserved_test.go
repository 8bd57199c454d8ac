package engine_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/shapelog/shapelog/engine"
	"github.com/shapelog/shapelog/engine/catalog"
	"github.com/shapelog/shapelog/internal/connectortest"
	"github.com/shapelog/shapelog/internal/pgtest"
)

// TestExportsNeverReachEngineTables: even with the engine's own schema in
// its table selection, json_schemas, list_snapshot and document_deltas
// neither list nor name a table there, nor in PostgreSQL's system schemas.
func TestExportsNeverReachEngineTables(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE SCHEMA IF NOT EXISTS `+catalog.EngineSchema)
	mustExec(t, conn, `CREATE TABLE `+catalog.EngineSchema+`.secret (id int PRIMARY KEY, v text)`)
	mustExec(t, conn, `INSERT INTO `+catalog.EngineSchema+`.secret VALUES (1, 'hidden')`)
	mustExec(t, conn, `CREATE TABLE open (id int PRIMARY KEY, v text)`)
	mustExec(t, conn, `INSERT INTO open VALUES (1, 'visible')`)
	e := startEngine(t, dbURL, func(c *engine.Config) {
		c.Filter = catalog.Filter{Schemas: []string{"public", catalog.EngineSchema}}
	})
	reserved := func(s string) bool {
		return strings.Contains(s, catalog.EngineSchema+".") || strings.Contains(s, `"`+catalog.EngineSchema+`"`)
	}

	for _, delta := range []string{"false", "true"} {
		r := get(t, e.URL(), "/api/json_schemas", url.Values{"deltaSchema": {delta}})
		var schemas map[string]json.RawMessage
		r.decode(t, &schemas)
		if schemas["open"] == nil {
			t.Fatalf("json_schemas lacks table open: %s", r.Body)
		}
		for name := range schemas {
			if reserved(name) {
				t.Errorf("json_schemas lists %s", name)
			}
		}
	}
	docs, snap := readSnapshot(t, e.URL(), nil)
	if len(docs) != 1 || docs[0]["v"] != "visible" {
		t.Errorf("list_snapshot of every table: %s", brief(docs))
	}
	mustExec(t, conn, `INSERT INTO `+catalog.EngineSchema+`.secret VALUES (2, 'hidden too')`)
	mustExec(t, conn, `TRUNCATE `+catalog.EngineSchema+`.secret`)
	mustExec(t, conn, `INSERT INTO open VALUES (2, 'visible too')`)
	connectortest.CatchUp(t, e, conn)
	deltas, _ := readDeltas(t, e.URL(), snap, nil)
	if len(deltas) != 1 || deltas[0]["v"] != "visible too" {
		t.Errorf("document_deltas of every table: %s", brief(deltas))
	}
	for _, name := range []string{catalog.EngineSchema + ".secret", `"` + catalog.EngineSchema + `"."secret"`, "pg_catalog.pg_class", "information_schema.sql_features", "pg_toast.x"} {
		for _, path := range []string{"/api/list_snapshot", "/api/document_deltas"} {
			r := get(t, e.URL(), path, url.Values{"tableName": {name}, "cursor": {"0"}})
			if r.Status != http.StatusBadRequest || r.errorCode(t) != "TableNotFound" || !strings.Contains(string(r.Body), "reserved") {
				t.Errorf("%s of %s: %d %s; want 400 TableNotFound saying the schema is reserved", path, name, r.Status, r.Body)
			}
		}
	}
}
