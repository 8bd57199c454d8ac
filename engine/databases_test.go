package engine_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shapelog/shapelog/engine"
	"github.com/shapelog/shapelog/internal/pgtest"
)

// adminDatabase calls /v1/admin/database and returns the status and body.
func adminDatabase(t *testing.T, method, target, body, auth string) (int, string) {
	t.Helper()
	status, b := sendJSON(t, method, target, auth, body)
	return status, string(b)
}

func slotExists(t *testing.T, conn *pgx.Conn, slot string) bool {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

func TestDatabasesAddServeAndRemove(t *testing.T) {
	urlA, urlB := pgtest.NewDatabase(t), pgtest.NewDatabase(t)
	connA, connB := connect(t, urlA), connect(t, urlB)
	for i, conn := range []*pgx.Conn{connA, connB} {
		mustExec(t, conn, `CREATE TABLE t (id int PRIMARY KEY, db text)`)
		mustExec(t, conn, `INSERT INTO t VALUES (1, $1)`, string(rune('a'+i)))
	}
	dir := t.TempDir()
	storage := func(c *engine.Config) { c.StorageDir = dir }
	e := startShapeEngine(t, urlA, storage)
	admin := e.URL() + "/v1/admin/database"
	auth := "Convex " + testKey
	rowsOf := func(c *shapeClient) string {
		var dbs []string
		for _, row := range c.rows {
			dbs = append(dbs, str(row["db"]))
		}
		return strings.Join(dbs, ",")
	}

	// One database: database_id is optional.
	c := newShapeClient(t, e.URL(), url.Values{"table": {"t"}})
	c.sync()
	if got := rowsOf(c); got != "a" {
		t.Fatalf("engine's own database: rows %q", got)
	}

	// Adding needs the access key and a well-formed request.
	spec := `{"database_id": "tenant-b", "DATABASE_URL": "` + urlB + `", "DATABASE_USE_IPV6": false}`
	if status, _ := adminDatabase(t, http.MethodPost, admin, spec, ""); status != http.StatusForbidden {
		t.Errorf("without the key: %d, want 403", status)
	}
	for body, want := range map[string]string{
		`{"database_id": "x", "database_url": "` + urlB + `", "databse_use_ipv6": true}`: `unknown field \"databse_use_ipv6\"`,
		`{"database_id": "x"}`:                                   "database_url can't be blank",
		`{"database_id": "x", "database_url": "::"}`:             "database_url is invalid",
		`{"database_id": "a b", "database_url": "` + urlB + `"}`: "database_id must be",
		`not json`: "request body is not a database definition",
		`{"database_id": "default", "database_url": "` + urlB + `"}`: "Database default already exists.",
		`{"database_id": "again", "database_url": "` + urlA + `"}`:   "already in use by another tenant (default)",
	} {
		status, got := adminDatabase(t, http.MethodPost, admin, body, auth)
		if status != http.StatusBadRequest || !strings.Contains(got, want) {
			t.Errorf("POST %s: %d %s, want 400 with %q", body, status, got, want)
		}
	}
	// A server nobody listens on is refused, and nothing is kept.
	port, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	down := `{"database_id": "down", "database_url": "postgres://nobody@127.0.0.1:` + strconv.Itoa(port) + `/x?connect_timeout=2"}`
	if status, got := adminDatabase(t, http.MethodPost, admin, down, auth); status != http.StatusBadRequest || !strings.Contains(got, "Cannot serve database down") {
		t.Errorf("unreachable database: %d %s", status, got)
	}
	if _, err := os.Stat(filepath.Join(dir, "databases", "down")); !os.IsNotExist(err) {
		t.Errorf("a refused database left storage behind: %v", err)
	}

	status, got := adminDatabase(t, http.MethodPost, admin, spec, auth)
	if status != http.StatusOK || got != "\"tenant-b\"\n" {
		t.Fatalf("adding tenant-b: %d %s", status, got)
	}
	if status, got := adminDatabase(t, http.MethodPost, admin, spec, auth); status != http.StatusBadRequest || !strings.Contains(got, "Database tenant-b already exists.") {
		t.Errorf("adding tenant-b twice: %d %s", status, got)
	}
	slot := "shapelog_test_tenant_b"
	if !slotExists(t, connB, slot) {
		t.Errorf("no slot %s for the added database", slot)
	}

	// Two databases: shape requests must say which.
	resp, body := shapeGet(t, e.URL(), url.Values{"table": {"t"}, "offset": {"-1"}, "secret": {testKey}}, nil)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "Database ID was not provided and there are multiple databases") {
		t.Errorf("no database_id with two databases: %d %s", resp.StatusCode, body)
	}
	resp, body = shapeGet(t, e.URL(), url.Values{"table": {"t"}, "offset": {"-1"}, "secret": {testKey}, "database_id": {"nope"}}, nil)
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "Database nope not found.") {
		t.Errorf("unknown database_id: %d %s", resp.StatusCode, body)
	}
	c.params.Set("database_id", "default")
	mustExec(t, connA, `INSERT INTO t VALUES (2, 'a')`)
	c.liveUntil(func(rows map[string]map[string]*string) bool { return len(rows) == 2 })

	b := newShapeClient(t, e.URL(), url.Values{"table": {"t"}, "database_id": {"tenant-b"}})
	b.sync()
	if got := rowsOf(b); got != "b" {
		t.Fatalf("tenant-b: rows %q", got)
	}
	mustExec(t, connB, `INSERT INTO t VALUES (3, 'b')`)
	b.liveUntil(func(rows map[string]map[string]*string) bool { return len(rows) == 2 })
	if got := rowsOf(b); strings.Contains(got, "a") {
		t.Errorf("tenant-b's shape has rows of the engine's database: %q", got)
	}
	// Its health is its own.
	if r := getWith(t, e.URL(), "/v1/health", url.Values{"database_id": {"tenant-b"}}, ""); r.Status != http.StatusOK || !strings.Contains(string(r.Body), "active") {
		t.Errorf("tenant-b health: %d %s", r.Status, r.Body)
	}
	// The engine's Convex export is about its own database only.
	if docs, _ := readSnapshot(t, e.URL(), url.Values{"tableName": {"t"}}); len(docs) != 2 {
		t.Errorf("export of the engine's database: %d documents, want 2", len(docs))
	}

	// Added databases survive a restart, shapes included.
	e.Close(5 * time.Second)
	mustExec(t, connB, `INSERT INTO t VALUES (4, 'b')`)
	e = startShapeEngine(t, urlA, storage)
	b.base = e.URL()
	handle := b.handle
	b.liveUntil(func(rows map[string]map[string]*string) bool { return len(rows) == 3 })
	if b.handle != handle || b.refetched != 0 {
		t.Errorf("restart rotated tenant-b's shape: %s → %s", handle, b.handle)
	}

	// Removing drops the slot, the publication and the storage.
	admin = e.URL() + "/v1/admin/database"
	if status, got := adminDatabase(t, http.MethodDelete, admin+"/default", "", auth); status != http.StatusBadRequest || !strings.Contains(got, "cannot be removed") {
		t.Errorf("removing the engine's database: %d %s", status, got)
	}
	// A live request parked on tenant-b's shape while it is removed.
	parked, err := net.Dial("tcp", e.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer parked.Close()
	live := url.Values{"table": {"t"}, "database_id": {"tenant-b"}, "offset": {b.offset}, "handle": {b.handle}, "live": {"true"}, "secret": {testKey}}
	if _, err := parked.Write([]byte("GET /v1/shape?" + live.Encode() + " HTTP/1.1\r\nHost: engine\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if status, got := adminDatabase(t, http.MethodDelete, admin+"/tenant-b", "", auth); status != http.StatusOK || got != "\"tenant-b\"\n" {
		t.Fatalf("removing tenant-b: %d %s", status, got)
	}
	// Its long poll ends on closed storage: an error answer or a closed
	// connection, and the engine lives on.
	_ = parked.SetReadDeadline(time.Now().Add(10 * time.Second))
	if resp, err := http.ReadResponse(bufio.NewReader(parked), nil); err == nil && resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("live request parked on a removed database: %d", resp.StatusCode)
	}
	if slotExists(t, connB, slot) {
		t.Errorf("slot %s survived the removal", slot)
	}
	var pubs int
	if err := connB.QueryRow(context.Background(), "SELECT count(*) FROM pg_publication").Scan(&pubs); err != nil || pubs != 0 {
		t.Errorf("publications left in the removed database: %d (%v)", pubs, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "databases", "tenant-b")); !os.IsNotExist(err) {
		t.Errorf("storage of the removed database remains: %v", err)
	}
	if status, got := adminDatabase(t, http.MethodDelete, admin+"/tenant-b", "", auth); status != http.StatusNotFound || !strings.Contains(got, "Database tenant-b not found.") {
		t.Errorf("removing tenant-b twice: %d %s", status, got)
	}
	resp, body = shapeGet(t, e.URL(), url.Values{"table": {"t"}, "offset": {"-1"}, "secret": {testKey}}, nil)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("one database again, no database_id: %d %s", resp.StatusCode, body)
	}
	var registry []map[string]any
	raw, err := os.ReadFile(filepath.Join(dir, "databases.json"))
	if err != nil || json.Unmarshal(raw, &registry) != nil || len(registry) != 0 {
		t.Errorf("registry after removal: %s (%v)", raw, err)
	}

	// A damaged registry does not keep the engine's own database down.
	e.Close(5 * time.Second)
	if err := os.WriteFile(filepath.Join(dir, "databases.json"), []byte(`[{"database_id": "x", "datab`), 0o600); err != nil {
		t.Fatal(err)
	}
	startShapeEngine(t, urlA, storage)
	if _, err := os.Stat(filepath.Join(dir, "databases.json.unreadable")); err != nil {
		t.Errorf("the damaged registry was not set aside: %v", err)
	}
}
