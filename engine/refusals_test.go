package engine_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shapelog/shapelog/engine"
	"github.com/shapelog/shapelog/internal/pgtest"
)

// waitingPageQueries counts the engine's snapshot page queries that are
// waiting for a lock.
func waitingPageQueries(t *testing.T, dbURL string) int {
	t.Helper()
	conn := connect(t, dbURL)
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
		WHERE application_name = 'shapelog snapshot pages' AND wait_event_type = 'Lock'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSnapshotQueryCancelledWhenClientLeaves: a snapshot page stuck behind
// a lock stops in PostgreSQL as soon as its client hangs up, rather than
// holding a backend until the lock goes.
func TestSnapshotQueryCancelledWhenClientLeaves(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE items (id int PRIMARY KEY, v text)`)
	mustExec(t, conn, `INSERT INTO items SELECT g, 'v' FROM generate_series(1, 100) g`)
	e := startEngine(t, dbURL)
	readSnapshot(t, e.URL(), nil) // publishes the table

	locker := connect(t, dbURL)
	mustExec(t, locker, `BEGIN`)
	mustExec(t, locker, `LOCK TABLE items IN ACCESS EXCLUSIVE MODE`)
	defer func() { _, _ = locker.Exec(context.Background(), `ROLLBACK`) }()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.URL()+"/api/list_snapshot?tableName=items", nil)
		req.Header.Set("Authorization", "Convex "+testKey)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for waitingPageQueries(t, dbURL) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the page query never waited for the lock")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("request ended with %v, want it cancelled", err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for waitingPageQueries(t, dbURL) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the page query still waits in PostgreSQL 5 s after its client left")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestShapeRefusals: shapes on reserved schemas and where clauses that
// PostgreSQL refuses at run time are the client's errors (400, naming the
// cause), never a 409/503 loop that clients retry forever.
func TestShapeRefusals(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	mustExec(t, conn, `INSERT INTO t VALUES (1, 'a'), (2, 'b')`)
	e := startShapeEngine(t, dbURL)
	for _, tc := range []struct{ table, where, want string }{
		{"pg_catalog.pg_authid", "", "reserved"},
		{"pg_catalog.pg_class", "", "reserved"},
		{"information_schema.tables", "", "reserved"},
		{"shapelog.import_keys", "", "engine's own tables"},
		{`"pg_toast"."x"`, "", "reserved"},
		{"t", "id / 0 = 1", "division by zero"},
		{"t", "v::int = 1", "invalid input syntax"},
	} {
		q := url.Values{"table": {tc.table}, "offset": {"-1"}, "secret": {testKey}}
		if tc.where != "" {
			q.Set("where", tc.where)
		}
		for attempt := range 2 { // the same answer every time: nothing to retry
			resp, body := shapeGet(t, e.URL(), q, nil)
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), tc.want) {
				t.Errorf("%s where %q (attempt %d): %d %s, want 400 naming %q", tc.table, tc.where, attempt+1, resp.StatusCode, body, tc.want)
			}
		}
	}
}

// TestShapeSecretUnderInsecure: --insecure opens /v1/shape as it opens /api,
// even with an access key set, as docs/http-api.md says.
func TestShapeSecretUnderInsecure(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	for _, insecure := range []bool{false, true} {
		e := startShapeEngine(t, dbURL, func(c *engine.Config) { c.Insecure = insecure })
		resp, body := shapeGet(t, e.URL(), url.Values{"table": {"t"}, "offset": {"-1"}}, nil)
		if want := map[bool]int{false: http.StatusUnauthorized, true: http.StatusOK}[insecure]; resp.StatusCode != want {
			t.Errorf("insecure=%v without secret: %d %s, want %d", insecure, resp.StatusCode, body, want)
		}
		e.Close(5 * time.Second)
	}
}

// TestShapeOffsetBetweenEntries: an offset whose LSN falls between two
// logged transactions is served from the next one on, as Electric does,
// not answered with 409.
func TestShapeOffsetBetweenEntries(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	mustExec(t, conn, `INSERT INTO t VALUES (1, 'a')`)
	e := startShapeEngine(t, dbURL)
	c := newShapeClient(t, e.URL(), url.Values{"table": {"t"}})
	c.sync()
	mustExec(t, conn, `INSERT INTO t VALUES (2, 'b')`)
	mustExec(t, conn, `INSERT INTO t VALUES (3, 'c')`)
	lsnOf := map[string]uint64{}
	for len(lsnOf) < 2 {
		msgs, _ := c.step(true)
		for _, m := range msgs {
			if m.Key != "" {
				n, err := strconv.ParseUint(m.Headers["lsn"].(string), 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				lsnOf[*m.Value["id"]] = n
			}
		}
	}
	for _, tc := range []struct {
		offset string
		want   []string
	}{
		{fmt.Sprintf("%d_0", lsnOf["3"]-1), []string{"3"}}, // between the two inserts
		{fmt.Sprintf("%d_0", lsnOf["2"]), []string{"3"}},   // exactly after the first
	} {
		resp, body := shapeGet(t, e.URL(), url.Values{"table": {"t"}, "offset": {tc.offset}, "handle": {c.handle}, "secret": {testKey}}, nil)
		var msgs []shapeMsg
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &msgs) != nil {
			t.Fatalf("offset %s: %d %s", tc.offset, resp.StatusCode, body)
		}
		var got []string
		for _, m := range msgs {
			if m.Key != "" {
				got = append(got, *m.Value["id"])
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("offset %s: rows %v, want %v", tc.offset, got, tc.want)
		}
	}
}

// TestShapeOnDroppedTable: a shape whose table was dropped neither blocks
// shapes on other tables (publishing them used to fail on its OID) nor
// lingers: its clients are told to refetch, then that the table is gone.
func TestShapeOnDroppedTable(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE doomed (id int PRIMARY KEY)`)
	mustExec(t, conn, `INSERT INTO doomed VALUES (1)`)
	e := startShapeEngine(t, dbURL)
	old := newShapeClient(t, e.URL(), url.Values{"table": {"doomed"}})
	old.sync()
	mustExec(t, conn, `DROP TABLE doomed`)
	mustExec(t, conn, `CREATE TABLE fresh (id int PRIMARY KEY)`)
	mustExec(t, conn, `INSERT INTO fresh VALUES (7)`)

	c := newShapeClient(t, e.URL(), url.Values{"table": {"fresh"}})
	c.sync()
	if len(c.rows) != 1 || c.refetched > 0 {
		t.Fatalf("shape on a new table: rows %v after %d refetches", c.rows, c.refetched)
	}
	mustExec(t, conn, `INSERT INTO fresh VALUES (8)`)
	c.liveUntil(func(rows map[string]map[string]*string) bool { return len(rows) == 2 })

	resp, body := shapeGet(t, e.URL(), url.Values{"table": {"doomed"}, "offset": {old.offset}, "handle": {old.handle}, "secret": {testKey}}, nil)
	if resp.StatusCode != http.StatusConflict && resp.StatusCode != http.StatusBadRequest {
		t.Errorf("the dropped table's shape: %d %s, want 409 (refetch) or 400", resp.StatusCode, body)
	}
	resp, body = shapeGet(t, e.URL(), url.Values{"table": {"doomed"}, "offset": {"-1"}, "secret": {testKey}}, nil)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "does not exist") {
		t.Errorf("a new shape on the dropped table: %d %s, want 400 naming it", resp.StatusCode, body)
	}
}

// TestSnapshotStatementTimeout: a snapshot page that cannot finish within
// --statement-timeout (here: stuck behind a lock) ends with a retryable 503
// rather than holding a backend for as long as the lock lasts.
func TestSnapshotStatementTimeout(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE items (id int PRIMARY KEY, v text)`)
	mustExec(t, conn, `INSERT INTO items VALUES (1, 'a')`)
	e := startEngine(t, dbURL, func(c *engine.Config) { c.StatementTimeout = time.Second })
	readSnapshot(t, e.URL(), nil)

	locker := connect(t, dbURL)
	mustExec(t, locker, `BEGIN`)
	mustExec(t, locker, `LOCK TABLE items IN ACCESS EXCLUSIVE MODE`)
	res := get(t, e.URL(), "/api/list_snapshot", url.Values{"tableName": {"items"}})
	if res.Status != http.StatusServiceUnavailable || res.errorCode(t) != "QueryTimeout" {
		t.Fatalf("page behind a lock: %d %s, want 503 QueryTimeout", res.Status, res.Body)
	}
	mustExec(t, locker, `ROLLBACK`)
	if docs, _ := readSnapshot(t, e.URL(), url.Values{"tableName": {"items"}}); len(docs) != 1 {
		t.Fatalf("after the lock: %d rows", len(docs))
	}
}

// TestImportBodyCutShort: a body that ends before its Content-Length (the
// client stopped sending) is the client's error, not a 500.
func TestImportBodyCutShort(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	e := startEngine(t, dbURL)
	c, err := net.Dial("tcp", strings.TrimPrefix(e.URL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	body := `{"tables":{"t":{"jsonSchema":{"type":"object"}}},"messages":[{"tableName":"t","data":{"id":`
	fmt.Fprintf(c, "POST /api/streaming_import/import_airbyte_records HTTP/1.1\r\nHost: x\r\nAuthorization: Convex %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", testKey, len(body)+100, body)
	_ = c.(*net.TCPConn).CloseWrite()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "ended before") {
		t.Fatalf("body cut short: %d %s, want 400", resp.StatusCode, b)
	}
}
