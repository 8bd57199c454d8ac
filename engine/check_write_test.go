package engine_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/shapelog/shapelog/internal/pgtest"
)

// check_write proves an import could write into a schema, refuses with 403
// naming the schema where the engine's role may not, and leaves nothing
// behind either way.
func TestCheckWrite(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	admin := connect(t, dbURL)
	mustExec(t, admin, `DO $$ BEGIN CREATE ROLE importer_role LOGIN REPLICATION; EXCEPTION WHEN duplicate_object THEN NULL; END $$`)
	var db string
	if err := admin.QueryRow(context.Background(), "SELECT current_database()").Scan(&db); err != nil {
		t.Fatal(err)
	}
	mustExec(t, admin, "GRANT CREATE ON DATABASE "+pgx.Identifier{db}.Sanitize()+" TO importer_role")
	mustExec(t, admin, `CREATE SCHEMA locked; CREATE SCHEMA "Open.Mixed"; GRANT USAGE, CREATE ON SCHEMA "Open.Mixed" TO importer_role`)
	relations := func() string {
		var s string
		if err := admin.QueryRow(context.Background(), `SELECT string_agg(nspname || '.' || coalesce(relname, ''), ',' ORDER BY 1)
			FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname NOT LIKE 'pg\_%'
			WHERE nspname NOT LIKE 'pg\_%' AND nspname <> 'information_schema'`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	e := startEngine(t, strings.Replace(dbURL, "postgres@", "importer_role@", 1))
	before := relations()
	for _, c := range []struct {
		body   string
		status int
		want   string
	}{
		{`{"schemas":["Open.Mixed","brand_new"]}`, 200, ""},
		{`{"schemas":["locked"]}`, 403, "permission denied for schema locked"},
		{`{"schemas":["public","locked"]}`, 403, "PermissionDenied"},
		{`{"schemas":["shapelog"]}`, 400, "InvalidTableName"},
		{`{"schemas":[]}`, 400, "BadJsonBody"},
		{`{"schemas":`, 400, "BadJsonBody"},
	} {
		status, body := sendJSON(t, "PUT", e.URL()+"/api/streaming_import/check_write", "Convex "+testKey, c.body)
		if status != c.status || !strings.Contains(string(body), c.want) {
			t.Errorf("%s: %d %s, want %d %s", c.body, status, body, c.status, c.want)
		}
	}
	if after := relations(); after != before {
		t.Errorf("check_write left something behind:\nbefore %s\nafter  %s", before, after)
	}
}
