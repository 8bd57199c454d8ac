package engine_test

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/shapelog/shapelog/engine/replication"
	"github.com/shapelog/shapelog/internal/pgtest"
)

// The export API's reads do no write-side work: they serve the tables the
// periodic reconcile keeps, read the catalog without the reconcile lock
// where they must be fresh, and reconcile (take the lock, maybe ALTER the
// publication) only for a table that is not published yet.

// reconciles counts the reconciles requests ask for while f runs.
func reconciles(f func()) int64 {
	before := replication.RequestedReconciles()
	f()
	return replication.RequestedReconciles() - before
}

// publishedFull reports whether table is in the test publication with
// REPLICA IDENTITY FULL.
func publishedFull(t *testing.T, conn *pgx.Conn, table string) bool {
	t.Helper()
	var ok bool
	err := conn.QueryRow(context.Background(), `SELECT c.relreplident = 'f' AND EXISTS (
		SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
		WHERE p.pubname = 'shapelog_test' AND pr.prrelid = c.oid)
		FROM pg_class c WHERE c.oid = $1::regclass`, table).Scan(&ok)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func schemaProps(t *testing.T, base string) map[string]map[string]any {
	t.Helper()
	r := get(t, base, "/api/json_schemas", nil)
	if r.Status != http.StatusOK {
		t.Fatalf("json_schemas: %d %s", r.Status, r.Body)
	}
	var schemas map[string]struct {
		Properties map[string]any `json:"properties"`
	}
	r.decode(t, &schemas)
	out := map[string]map[string]any{}
	for name, s := range schemas {
		out[name] = s.Properties
	}
	return out
}

// TestDeltasPagesDoNotReconcile: document_deltas pages that name a
// published table, and a snapshot of tables that did not change, never
// reconcile.
func TestDeltasPagesDoNotReconcile(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE items (id int PRIMARY KEY, title text)`)
	mustExec(t, conn, `CREATE TABLE other (id int PRIMARY KEY)`)
	mustExec(t, conn, `INSERT INTO items SELECT i, 'row ' || i FROM generate_series(1, 5) i`)
	e := startEngine(t, dbURL)

	var snap int64
	if n := reconciles(func() {
		_ = schemaProps(t, e.URL())
		_, snap = readSnapshot(t, e.URL(), url.Values{"tableName": {"items"}, "limit": {"2"}})
		_, _ = readSnapshot(t, e.URL(), url.Values{"limit": {"2"}})
	}); n != 0 {
		t.Errorf("json_schemas and snapshots of published tables reconciled %d times, want 0", n)
	}
	mustExec(t, conn, `INSERT INTO items SELECT i, 'row ' || i FROM generate_series(6, 30) i`)
	for i := 1; i <= 10; i++ { // a transaction, so a page, each
		mustExec(t, conn, `UPDATE items SET title = 'changed' WHERE id = $1`, i)
		mustExec(t, conn, `INSERT INTO other VALUES ($1)`, i)
	}
	var pages [][]doc
	if n := reconciles(func() {
		_ = waitDeltas(t, e.URL(), snap, url.Values{"tableName": {"items"}}, func(d []doc) bool { return len(d) >= 35 })
		pages, _ = deltaPages(t, e.URL(), snap, url.Values{"tableName": {"items"}, "limit": {"1"}})
	}); n != 0 {
		t.Errorf("document_deltas pages naming a published table reconciled %d times, want 0", n)
	}
	if len(pages) < 10 {
		t.Fatalf("read %d pages, want one a transaction of items (11)", len(pages))
	}
	for _, p := range pages {
		for _, d := range p {
			if d["_table"] != "items" {
				t.Fatalf("document_deltas?tableName=items returned %v", d)
			}
		}
	}
}

// TestJSONSchemasSeesNewTable: a table created just before json_schemas is
// in it, published with REPLICA IDENTITY FULL by one reconcile; json_schemas
// after that, and after a column is added, reconciles no more and shows
// the column.
func TestJSONSchemasSeesNewTable(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE first (id int PRIMARY KEY)`)
	e := startEngine(t, dbURL)

	mustExec(t, conn, `CREATE TABLE fresh (id int PRIMARY KEY, note text)`)
	var props map[string]map[string]any
	if n := reconciles(func() { props = schemaProps(t, e.URL()) }); n != 1 {
		t.Errorf("json_schemas with a new table reconciled %d times, want 1", n)
	}
	if props["fresh"] == nil || props["fresh"]["note"] == nil || props["first"] == nil {
		t.Fatalf("json_schemas right after CREATE TABLE: %v", props)
	}
	if !publishedFull(t, conn, "fresh") {
		t.Fatal("the new table is not published with REPLICA IDENTITY FULL")
	}

	mustExec(t, conn, `ALTER TABLE fresh ADD COLUMN added int`)
	if n := reconciles(func() { props = schemaProps(t, e.URL()) }); n != 0 {
		t.Errorf("json_schemas of published tables reconciled %d times, want 0", n)
	}
	if props["fresh"]["added"] == nil {
		t.Fatalf("json_schemas right after ADD COLUMN: %v", props["fresh"])
	}

	// The new table's changes come through, and its rows snapshot.
	mustExec(t, conn, `INSERT INTO fresh VALUES (1, 'n', 2)`)
	docs, _ := readSnapshot(t, e.URL(), url.Values{"tableName": {"fresh"}})
	if len(docs) != 1 || docs[0]["added"] != float64(2) {
		t.Fatalf("snapshot of the new table: %s", brief(docs))
	}
}

// TestFreshSnapshotHasNewColumn: a column added just before a new snapshot
// begins is in every page of it, whether it names the table or not,
// without a reconcile; a dropped one is gone.
func TestFreshSnapshotHasNewColumn(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE items (id int PRIMARY KEY, title text, gone text)`)
	mustExec(t, conn, `CREATE TABLE other (id int PRIMARY KEY)`)
	mustExec(t, conn, `INSERT INTO items SELECT i, 'row ' || i, 'x' FROM generate_series(1, 7) i`)
	mustExec(t, conn, `INSERT INTO other VALUES (1)`)
	e := startEngine(t, dbURL)
	if docs, _ := readSnapshot(t, e.URL(), url.Values{"tableName": {"items"}}); len(docs) != 7 {
		t.Fatalf("snapshot has %d docs, want 7", len(docs))
	}

	mustExec(t, conn, `ALTER TABLE items ADD COLUMN extra int NOT NULL DEFAULT 42, DROP COLUMN gone`)
	for _, params := range []url.Values{
		{"tableName": {"items"}, "limit": {"2"}},
		{"limit": {"2"}},
	} {
		var docs []doc
		if n := reconciles(func() { docs, _ = readSnapshot(t, e.URL(), params) }); n != 0 {
			t.Errorf("snapshot (%v) reconciled %d times, want 0", params, n)
		}
		items := 0
		for _, d := range docs {
			if d["_table"] != "items" {
				continue
			}
			items++
			if d["extra"] != float64(42) {
				t.Fatalf("snapshot (%v) right after ADD COLUMN: %v", params, d)
			}
			if _, ok := d["gone"]; ok {
				t.Fatalf("snapshot (%v) right after DROP COLUMN: %v", params, d)
			}
		}
		if items != 7 {
			t.Fatalf("snapshot (%v) has %d items, want 7: %s", params, items, brief(docs))
		}
	}

	// Renamed: the old name is gone, the new one found (by a reconcile).
	mustExec(t, conn, `ALTER TABLE items RENAME TO renamed`)
	r := get(t, e.URL(), "/api/list_snapshot", url.Values{"tableName": {"items"}})
	if r.Status != http.StatusBadRequest || r.errorCode(t) != "TableNotFound" {
		t.Fatalf("snapshot of a renamed table by its old name: %d %s", r.Status, r.Body)
	}
	if docs, _ := readSnapshot(t, e.URL(), url.Values{"tableName": {"renamed"}}); len(docs) != 7 || docs[0]["extra"] != float64(42) {
		t.Fatalf("snapshot of the renamed table: %s", brief(docs))
	}
}

// TestUnknownTableReconcilesOnce: a name no published table has gets
// TableNotFound after one reconcile (it might have been created since the
// last); a name no table can have gets its error without one; a table
// created just before document_deltas names it is found.
func TestUnknownTableReconcilesOnce(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE items (id int PRIMARY KEY)`)
	e := startEngine(t, dbURL)
	_, snap := readSnapshot(t, e.URL(), nil)
	cursor := strconv.FormatInt(snap, 10)

	for _, path := range []string{"/api/document_deltas", "/api/list_snapshot"} {
		var r apiResult
		if n := reconciles(func() {
			r = get(t, e.URL(), path, url.Values{"tableName": {"nope"}, "cursor": {cursor}})
		}); n != 1 {
			t.Errorf("%s of an unknown table reconciled %d times, want 1", path, n)
		}
		if r.Status != http.StatusBadRequest || r.errorCode(t) != "TableNotFound" {
			t.Fatalf("%s of an unknown table: %d %s", path, r.Status, r.Body)
		}
	}
	for name, code := range map[string]string{"pg_catalog.pg_class": "TableNotFound", "a.b.c": "BadQueryArgs"} {
		var r apiResult
		if n := reconciles(func() {
			r = get(t, e.URL(), "/api/document_deltas", url.Values{"tableName": {name}, "cursor": {cursor}})
		}); n != 0 {
			t.Errorf("document_deltas of %q reconciled %d times, want 0", name, n)
		}
		if r.Status != http.StatusBadRequest || r.errorCode(t) != code {
			t.Fatalf("document_deltas of %q: %d %s, want %s", name, r.Status, r.Body, code)
		}
	}

	mustExec(t, conn, `CREATE TABLE later (id int PRIMARY KEY)`)
	var r apiResult
	if n := reconciles(func() {
		r = get(t, e.URL(), "/api/document_deltas", url.Values{"tableName": {"later"}, "cursor": {cursor}})
	}); n != 1 {
		t.Errorf("document_deltas of a new table reconciled %d times, want 1", n)
	}
	if r.Status != http.StatusOK {
		t.Fatalf("document_deltas of a table created just before: %d %s", r.Status, r.Body)
	}
	if !publishedFull(t, conn, "later") {
		t.Fatal("the new table is not published with REPLICA IDENTITY FULL")
	}
	mustExec(t, conn, `INSERT INTO later VALUES (1)`)
	if n := reconciles(func() {
		_ = waitDeltas(t, e.URL(), snap, url.Values{"tableName": {"later"}}, func(d []doc) bool { return len(d) == 1 })
	}); n != 0 {
		t.Errorf("document_deltas of a table published since reconciled %d times, want 0", n)
	}
}
