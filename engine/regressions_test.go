package engine_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shapelog/shapelog/engine/client"
	"github.com/shapelog/shapelog/internal/pgtest"
)

// Regressions from a review of the first version.

// A client that gives up on a list_snapshot request (timeout, disconnect)
// while the engine waits on PostgreSQL must not destroy the snapshot: its
// retry continues it.
func TestSnapshotSurvivesClientCancel(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE a_first (id int PRIMARY KEY)`)
	mustExec(t, conn, `CREATE TABLE b_second (id int PRIMARY KEY)`)
	mustExec(t, conn, `INSERT INTO a_first VALUES (1)`)
	mustExec(t, conn, `INSERT INTO b_second VALUES (1)`)
	e := startEngine(t, dbURL)

	r := get(t, e.URL(), "/api/list_snapshot", nil)
	var p1 snapshotPage
	r.decode(t, &p1)
	if !p1.HasMore {
		t.Fatalf("expected a second table: %s", r.Body)
	}
	// Someone holds a lock on the next table for a moment (ALTER TABLE, an import's evolve...).
	locker := connect(t, dbURL)
	mustExec(t, locker, `BEGIN`)
	names := []string{"a_first", "b_second"}
	if strings.Contains(string(r.Body), `"_table":"b_second"`) {
		names = []string{"b_second", "a_first"}
	}
	mustExec(t, locker, `LOCK TABLE `+names[1]+` IN ACCESS EXCLUSIVE MODE`)
	q := url.Values{"snapshot": {strconv.FormatInt(p1.Snapshot, 10)}, "cursor": {*p1.Cursor}}
	req, _ := http.NewRequest(http.MethodGet, e.URL()+"/api/list_snapshot?"+q.Encode(), nil)
	req.Header.Set("Authorization", "Convex "+testKey)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if resp, err := http.DefaultClient.Do(req.WithContext(ctx)); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("expected the request to time out: %d %s", resp.StatusCode, b)
	}
	time.Sleep(200 * time.Millisecond)
	mustExec(t, locker, `COMMIT`)
	r = get(t, e.URL(), "/api/list_snapshot", q)
	if r.Status != http.StatusOK {
		t.Fatalf("retry after a client timeout: %d %s", r.Status, r.Body)
	}
}

// Dedup replaces the document: a column the newer record does not carry
// becomes NULL.
func TestDedupReplacesWholeRow(t *testing.T) {
	conn, c, ctx := importSetup(t)
	spec := client.TableSpec{PrimaryKey: [][]string{{"id"}}}
	tables := map[string]client.TableSpec{"st": spec}
	if err := c.ImportAirbyteRecords(ctx, client.ImportRequest{Tables: tables, Messages: msgs("st", `{"id":1,"a":"old"}`)}, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.ImportAirbyteRecords(ctx, client.ImportRequest{Tables: tables, Messages: msgs("st", `{"id":1,"b":"new"}`)}, ""); err != nil {
		t.Fatal(err)
	}
	got := rowsOf(t, conn, `SELECT id::text, a, b FROM st`)
	if strings.Join(got, ",") != "1|<nil>|new" {
		t.Fatalf("row after replacing {id:1,a:old} with {id:1,b:new}: %v", got)
	}
}

// A value the loader rejects (bad base64 for a bytea column) is the
// client's fault: 400 InvalidValue, not the aborted COPY's 500.
func TestBadBase64Is400(t *testing.T) {
	_, c, ctx := importSetup(t)
	s := client.TableSpec{JSONSchema: json.RawMessage(`{"type":"object","properties":{"bin":{"type":"string","contentEncoding":"base64"}}}`)}
	err := c.ImportAirbyteRecords(ctx, client.ImportRequest{Tables: map[string]client.TableSpec{"b64": s}, Messages: msgs("b64", `{"bin":"not base64!"}`)}, "")
	wantCode(t, err, 400, "InvalidValue")
}
