package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shapelog/shapelog/internal/pgtest"
)

func TestSnapshotThenDeltas(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE items (id int PRIMARY KEY, title text, big text)`)
	mustExec(t, conn, `CREATE TABLE "MixedCase" ("Key A" int, "key""b" text, v jsonb, PRIMARY KEY ("key""b", "Key A"))`)
	mustExec(t, conn, `CREATE TABLE nokey (a int, b text)`)
	mustExec(t, conn, `CREATE TABLE "x""; DROP TABLE items; --" (id int PRIMARY KEY)`)
	mustExec(t, conn, `INSERT INTO items VALUES (1, 'one', repeat('x', 20000)), (2, 'two/slash', NULL)`)
	mustExec(t, conn, `INSERT INTO "MixedCase" VALUES (1, 'a"b', '{"k": [1, 2]}')`)
	mustExec(t, conn, `INSERT INTO nokey VALUES (1, 'dup'), (1, 'dup'), (NULL, NULL)`)
	mustExec(t, conn, `INSERT INTO "x""; DROP TABLE items; --" VALUES (7)`)
	e := startEngine(t, dbURL)

	docs, snap := readSnapshot(t, e.URL(), nil)
	byID := map[string]doc{}
	for _, d := range docs {
		byID[d["_id"].(string)] = d
		if d["_ts"].(float64) != float64(snap) {
			t.Errorf("snapshot doc _ts %v, want snapshot %d", d["_ts"], snap)
		}
	}
	if d := byID[`"public"."items"/"1"`]; d == nil || d["title"] != "one" || len(d["big"].(string)) != 20000 || d["_table"] != "items" {
		t.Fatalf("items/1 = %v", d)
	}
	if d := byID[`"public"."MixedCase"/"a"b"/"1"`]; d == nil || d["Key A"] != float64(1) {
		t.Fatalf("MixedCase doc missing or wrong: %s", brief(docs))
	}
	if d := byID[`"public"."x""; DROP TABLE items; --"/"7"`]; d == nil && len(docs) != 7 {
		t.Fatalf("hostile table name: %s", brief(docs))
	}
	if len(docs) != 7 {
		t.Fatalf("snapshot has %d docs, want 7: %s", len(docs), brief(docs))
	}

	// Changes after the snapshot: update leaving the TOASTed column alone,
	// a key change, a delete, a truncate.
	mustExec(t, conn, `UPDATE items SET title = 'uno' WHERE id = 1`)
	mustExec(t, conn, `UPDATE items SET id = 3 WHERE id = 2`)
	mustExec(t, conn, `DELETE FROM "MixedCase"`)
	mustExec(t, conn, `INSERT INTO nokey VALUES (2, 'new')`)
	mustExec(t, conn, `TRUNCATE nokey`)
	deltas := waitDeltas(t, e.URL(), snap, nil, func(d []doc) bool { return len(d) >= 6 })
	var ops []string
	for _, d := range deltas {
		ops = append(ops, fmt.Sprintf("%v:%v:%v", d["_table"], d["_id"], d["_deleted"]))
		if d["_id"] == `"public"."items"/"1"` {
			if big, _ := d["big"].(string); len(big) != 20000 {
				t.Errorf("unchanged TOAST value not filled in: big has %d chars", len(big))
			}
		}
	}
	want := []string{
		`items:"public"."items"/"1":false`,
		`items:"public"."items"/"2":true`,
		`items:"public"."items"/"3":false`,
		`MixedCase:"public"."MixedCase"/"a"b"/"1":true`,
		`nokey:"public"."nokey"/"2"/"new":false`,
		`nokey:"public"."nokey":true`,
	}
	if strings.Join(ops, "\n") != strings.Join(want, "\n") {
		t.Fatalf("deltas:\n%s\nwant:\n%s", strings.Join(ops, "\n"), strings.Join(want, "\n"))
	}
	state := map[string]doc{}
	apply(state, docs)
	apply(state, deltas)
	if len(state) != 3 { // items 1, 3 and the x table row
		t.Fatalf("state after deltas has %d rows: %v", len(state), state)
	}
	// Per-table deltas see only their table.
	only, _ := readDeltas(t, e.URL(), snap, url.Values{"tableName": {"MixedCase"}})
	if len(only) != 1 || only[0]["Key A"] != float64(1) || only[0]["key\"b"] != "a\"b" {
		t.Fatalf("MixedCase deltas: %s", brief(only))
	}
}

// TestSnapshotConsistentUnderWrites is the core contract: with writers busy
// during the whole snapshot, snapshot + deltas reproduce the table exactly
// and no change is applied twice.
func TestSnapshotConsistentUnderWrites(t *testing.T) { snapshotConsistentUnderWrites(t, false) }

// TestSnapshotConsistentUnderAsyncCommits: with synchronous_commit = off
// for the database, commits become visible before they are flushed; pages
// wait for the inserted WAL position then, and every event is still
// exactly once.
func TestSnapshotConsistentUnderAsyncCommits(t *testing.T) { snapshotConsistentUnderWrites(t, true) }

func snapshotConsistentUnderWrites(t *testing.T, asyncCommit bool) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE acct (id int PRIMARY KEY, balance bigint NOT NULL, note text)`)
	mustExec(t, conn, `CREATE TABLE events (id bigserial PRIMARY KEY, acct int, delta int)`)
	mustExec(t, conn, `INSERT INTO acct SELECT g, 0, 'n' || g FROM generate_series(1, 20000) g`)
	if asyncCommit {
		mustExec(t, conn, `DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET synchronous_commit = off', current_database()); END $$`)
	}
	e := startEngine(t, dbURL)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var writes atomic.Int64
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func(seed int64) {
			defer wg.Done()
			c, err := pgx.Connect(context.Background(), dbURL)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close(context.Background())
			rng := rand.New(rand.NewSource(seed))
			for ctx.Err() == nil {
				id := rng.Intn(24000) + 1
				d := rng.Intn(100) - 50
				var sql string
				switch rng.Intn(4) {
				case 0:
					sql = `WITH d AS (DELETE FROM acct WHERE id = $1 RETURNING id) INSERT INTO events (acct, delta) SELECT $1, $2 FROM d`
				case 1:
					sql = `WITH i AS (INSERT INTO acct VALUES ($1, $2, 'ins') ON CONFLICT DO NOTHING RETURNING id) INSERT INTO events (acct, delta) SELECT $1, $2 FROM i`
				default:
					sql = `WITH u AS (UPDATE acct SET balance = balance + $2 WHERE id = $1 RETURNING id) INSERT INTO events (acct, delta) SELECT $1, $2 FROM u`
				}
				if _, err := c.Exec(context.Background(), sql, id, d); err != nil {
					t.Error(err)
					return
				}
				writes.Add(1)
			}
		}(int64(w))
	}
	time.Sleep(200 * time.Millisecond)
	// Small pages make the snapshot span many requests and much writing.
	docs, snap := readSnapshot(t, e.URL(), nil)
	time.Sleep(200 * time.Millisecond)
	cancel()
	wg.Wait()
	if writes.Load() < 100 {
		t.Fatalf("only %d writes happened during the test", writes.Load())
	}
	var maxEvent int64
	if err := conn.QueryRow(context.Background(), `SELECT coalesce(max(id), 0) FROM events`).Scan(&maxEvent); err != nil {
		t.Fatal(err)
	}
	deltas := waitDeltas(t, e.URL(), snap, nil, func(d []doc) bool {
		for _, x := range d {
			if x["_table"] == "events" && x["id"] == fmt.Sprint(maxEvent) {
				return true
			}
		}
		return false
	})
	// Every event exactly once across snapshot and deltas.
	seen := map[string]int{}
	for _, d := range append(append([]doc{}, docs...), deltas...) {
		if d["_table"] == "events" && d["_deleted"] != true {
			seen[d["_id"].(string)]++
		}
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("event %s seen %d times", id, n)
		}
	}
	if int64(len(seen)) != maxEvent {
		t.Fatalf("saw %d events, database has %d", len(seen), maxEvent)
	}
	state := map[string]doc{}
	apply(state, docs)
	apply(state, deltas)
	rows, err := conn.Query(context.Background(), `SELECT id, balance::text, note FROM acct ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for rows.Next() {
		var id int
		var bal, note string
		if err := rows.Scan(&id, &bal, &note); err != nil {
			t.Fatal(err)
		}
		want[fmt.Sprintf(`"public"."acct"/"%d"`, id)] = bal + "/" + note
	}
	got := map[string]string{}
	for id, d := range state {
		if d["_table"] == "acct" {
			got[id] = fmt.Sprint(d["balance"]) + "/" + fmt.Sprint(d["note"])
		}
	}
	if len(got) != len(want) {
		t.Fatalf("replica has %d accounts, database %d", len(got), len(want))
	}
	var diffs []string
	for id, w := range want {
		if got[id] != w {
			diffs = append(diffs, fmt.Sprintf("%s: replica %q, database %q", id, got[id], w))
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 0 {
		t.Fatalf("%d rows differ, e.g. %v", len(diffs), diffs[:min(5, len(diffs))])
	}
	t.Logf("%d writes during the test; snapshot %d docs, deltas %d docs", writes.Load(), len(docs), len(deltas))
}

func TestExportErrors(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	e := startEngine(t, dbURL)
	base := e.URL()
	cases := []struct {
		name, path string
		params     url.Values
		auth       string
		status     int
		code       string
	}{
		{"no auth", "/api/json_schemas", nil, "", 403, "BadDeployKey"},
		{"bearer", "/api/json_schemas", nil, "Bearer abc", 403, "BadDeployKey"},
		{"wrong key", "/api/json_schemas", nil, "Convex nope", 401, "BadAdminKey"},
		{"malformed header", "/api/json_schemas", nil, "Basic dXNlcg==", 400, "InvalidAdminKey"},
		{"bad format", "/api/json_schemas", url.Values{"format": {"xml"}}, "", 400, "BadFormat"},
		{"no cursor", "/api/document_deltas", nil, "", 400, "DocumentDeltasCursorRequired"},
		{"bad cursor", "/api/document_deltas", url.Values{"cursor": {"abc"}}, "", 400, "BadQueryArgs"},
		{"future cursor", "/api/document_deltas", url.Values{"cursor": {"9000000000000000000"}}, "", 400, "CursorTooNew"},
		{"unknown table", "/api/document_deltas", url.Values{"cursor": {"1"}, "tableName": {"nope"}}, "", 400, "TableNotFound"},
		{"bad snapshot cursor", "/api/list_snapshot", url.Values{"cursor": {"garbage"}}, "", 400, "InvalidListSnapshotCursor"},
		{"forged ctid", "/api/list_snapshot", url.Values{"cursor": {`{"snapshot":"x","table":0,"after":"'; DROP TABLE t; --"}`}}, "", 400, "InvalidListSnapshotCursor"},
		{"future snapshot", "/api/list_snapshot", url.Values{"snapshot": {"9000000000000000000"}}, "", 400, "SnapshotTooNew"},
		{"future cursor ts", "/api/list_snapshot", url.Values{"cursor": {`{"v":2,"ts":9000000000000000000,"table":"t"}`}}, "", 400, "SnapshotTooNew"},
		{"old snapshot", "/api/list_snapshot", url.Values{"snapshot": {"1"}}, "", 400, "SnapshotTooOld"},
		{"lost snapshot", "/api/list_snapshot", url.Values{"snapshot": {"1"}, "cursor": {`{"snapshot":"gone","table":0}`}}, "", 400, "SnapshotTooOld"},
		{"bad snapshot", "/api/list_snapshot", url.Values{"snapshot": {"-5"}}, "", 400, "BadQueryArgs"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			auth := c.auth
			if auth == "" && !strings.HasPrefix(c.name, "no auth") {
				auth = "Convex " + testKey
			}
			r := getWith(t, base, c.path, c.params, auth)
			if r.Status != c.status || r.errorCode(t) != c.code {
				t.Fatalf("got %d %s, want %d %s", r.Status, r.Body, c.status, c.code)
			}
		})
	}
	// Changes pruned away: the old cursor expires.
	mustExec(t, conn, `INSERT INTO t VALUES (1)`)
	_, snap := readSnapshot(t, base, nil)
	// A key in a cursor that the key's type refuses.
	forged := fmt.Sprintf(`{"v":2,"ts":%d,"table":"t","key":["x"]}`, snap)
	if r := get(t, base, "/api/list_snapshot", url.Values{"tableName": {"t"}, "cursor": {forged}}); r.Status != http.StatusBadRequest || r.errorCode(t) != "InvalidListSnapshotCursor" {
		t.Fatalf("forged key: %d %s", r.Status, r.Body)
	}
	mustExec(t, conn, `INSERT INTO t VALUES (2)`)
	waitDeltas(t, base, snap, nil, func(d []doc) bool { return len(d) == 1 })
	if err := e.Store.Prune(e.Store.Durable().Ts); err != nil {
		t.Fatal(err)
	}
	r := get(t, base, "/api/document_deltas", url.Values{"cursor": {fmt.Sprint(snap)}})
	if r.Status != http.StatusBadRequest || r.errorCode(t) != "InvalidWindowToReadDocuments" {
		t.Fatalf("expired cursor: %d %s", r.Status, r.Body)
	}
}

func TestUnknownRoutesAndMethods(t *testing.T) {
	e := startEngine(t, pgtest.NewDatabase(t))
	for _, c := range []struct {
		method, path string
		status       int
		code         string
	}{
		{http.MethodDelete, "/api/list_snapshot", 405, "MethodNotAllowed"},
		{http.MethodPost, "/api/json_schemas", 405, "MethodNotAllowed"},
		{http.MethodGet, "/api/streaming_import/clear_tables", 405, "MethodNotAllowed"},
		{http.MethodGet, "/api/nope", 404, "NotFound"},
	} {
		req, _ := http.NewRequest(c.method, e.URL()+c.path, nil)
		req.Header.Set("Authorization", "Convex "+testKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Code string }
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != c.status || body.Code != c.code {
			t.Errorf("%s %s: %d %s, want %d %s", c.method, c.path, resp.StatusCode, body.Code, c.status, c.code)
		}
	}
}

// A partitioned table is exported leaf by leaf: tuple ids repeat across
// leaves, so a page asked for again (a client retry) must continue from the
// same leaf, not from the same tuple id in every leaf.
func TestSnapshotOfPartitionedTableRetriesPages(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE parted (id int PRIMARY KEY, v text) PARTITION BY RANGE (id)`)
	for i := 0; i < 3; i++ {
		mustExec(t, conn, fmt.Sprintf(`CREATE TABLE "parted %d" PARTITION OF parted FOR VALUES FROM (%d) TO (%d)`, i, i*100, i*100+100))
	}
	mustExec(t, conn, `INSERT INTO parted SELECT g, 'v' || g FROM generate_series(0, 299) g WHERE g % 100 < 20`)
	e := startEngine(t, dbURL)
	seen := map[string]int{}
	p := url.Values{"tableName": {"parted"}, "limit": {"7"}}
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatal("the snapshot never ended")
		}
		first := get(t, e.URL(), "/api/list_snapshot", p)
		retried := get(t, e.URL(), "/api/list_snapshot", p)
		var a, b snapshotPage
		first.decode(t, &a)
		retried.decode(t, &b)
		if first.Status != http.StatusOK || retried.Status != http.StatusOK || brief(a.Values) != brief(b.Values) {
			t.Fatalf("page %d and its retry differ:\n%s\n%s", pages, first.Body, retried.Body)
		}
		for _, d := range a.Values {
			seen[fmt.Sprint(d["id"])]++
		}
		if !a.HasMore {
			break
		}
		p.Set("snapshot", strconv.FormatInt(a.Snapshot, 10))
		p.Set("cursor", *a.Cursor)
	}
	if len(seen) != 60 {
		t.Errorf("%d distinct rows, want 60", len(seen))
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("row %s exported %d times", id, n)
		}
	}
}
