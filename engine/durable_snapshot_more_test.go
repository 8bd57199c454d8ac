package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"net/http"
	"net/url"
	"slices"
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

// More of the durable snapshot's contract (DESIGN.md, "Timestamps"): a
// snapshot of a table with a primary key is a position in the log, not a
// resource held in PostgreSQL, so it holds nothing between pages and
// survives restarts of PostgreSQL and of the engine; tables without one
// keep a held snapshot, and say so when it is lost.

// TestSnapshotHoldsNothingBetweenPages has 40 clients page through one
// table at once, pausing between pages. While they are paused, PostgreSQL
// shows no transaction left open, no snapshot (xmin) held by an idle page
// connection and no temporary slot; every client gets the whole table; and
// a client that stops mid-snapshot does not keep TRUNCATE waiting.
func TestSnapshotHoldsNothingBetweenPages(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE pages (id int PRIMARY KEY, v int NOT NULL, s text)`)
	mustExec(t, conn, `CREATE TABLE marker (id int PRIMARY KEY)`)
	mustExec(t, conn, `INSERT INTO pages SELECT g, g % 1000, md5(g::text) FROM generate_series(1, 5000) g`)
	e := startEngine(t, dbURL)
	const state = `SELECT '"public"."pages"/"' || id || '"', v || '/' || coalesce(s, '<nil>') FROM pages`
	value := func(d doc) string {
		if d["s"] == nil {
			return fmt.Sprint(d["v"]) + "/<nil>"
		}
		return fmt.Sprint(d["v"]) + "/" + fmt.Sprint(d["s"])
	}
	want := queryState(t, conn, state)

	var paused atomic.Int32 // readers between two pages of their snapshot
	w := watchHolds(t, connect(t, dbURL), &paused)

	const readers = 40
	results := make([][]doc, readers)
	tss := make([]int64, readers)
	errs := make([]error, readers)
	var wg sync.WaitGroup
	started := time.Now()
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], tss[i], errs[i] = readPausing(e.URL(), url.Values{"tableName": {"pages"}, "limit": {"100"}}, 50*time.Millisecond, &paused)
		}()
	}
	wg.Wait()
	took := time.Since(started)
	violations, polls := w.stop()
	for _, v := range violations {
		t.Error(v)
	}
	if polls < 10 {
		t.Errorf("only %d polls of pg_stat_activity while readers were paused mid-snapshot", polls)
	}
	for i := range readers {
		if errs[i] != nil {
			t.Fatalf("reader %d: %v", i, errs[i])
		}
		assertSnapshot(t, fmt.Sprintf("reader %d", i), results[i], tss[i], want, value)
	}
	t.Logf("%d readers read %d rows each in %v; %d polls while paused found nothing held", readers, len(want), took.Round(time.Millisecond), polls)

	// A reader that stops mid-snapshot, its next page read ahead: nothing
	// of it keeps TRUNCATE waiting.
	params := url.Values{"tableName": {"pages"}, "limit": {"100"}}
	var read []doc
	var ts int64
	for range 2 {
		r := get(t, e.URL(), "/api/list_snapshot", params)
		var page snapshotPage
		r.decode(t, &page)
		if r.Status != http.StatusOK || !page.HasMore {
			t.Fatalf("list_snapshot: %d %.300s", r.Status, r.Body)
		}
		read, ts = append(read, page.Values...), page.Snapshot
		params.Set("snapshot", strconv.FormatInt(ts, 10))
		params.Set("cursor", *page.Cursor)
	}
	time.Sleep(100 * time.Millisecond)
	mustExec(t, conn, `SET lock_timeout = '2s'`)
	start := time.Now()
	mustExec(t, conn, `TRUNCATE pages`)
	t.Logf("TRUNCATE with a snapshot stopped between pages took %v", time.Since(start).Round(time.Millisecond))
	mustExec(t, conn, `RESET lock_timeout`)
	mustExec(t, conn, `INSERT INTO pages VALUES (1, 1, 'after'), (4999, 2, 'after'), (7000, 3, NULL)`)
	mustExec(t, conn, `INSERT INTO marker VALUES (1)`)
	// When it comes back, its snapshot plus the deltas is still the table.
	rest, _, _ := walkSnapshot(t, e.URL(), params, nil)
	checkReplica(t, e.URL(), map[string][]doc{"pages": append(read, rest...)}, map[string]int64{"pages": ts}, 1,
		queryState(t, conn, state), value, "snapshot stopped across a TRUNCATE")
}

// readPausing walks list_snapshot to the end, pausing between pages (and
// counting itself in paused meanwhile). Any answer but 200 is an error.
func readPausing(base string, params url.Values, pause time.Duration, paused *atomic.Int32) ([]doc, int64, error) {
	var all []doc
	for pages := 0; ; pages++ {
		status, body, err := tryGet(base, "/api/list_snapshot", params)
		if err != nil {
			return nil, 0, err
		}
		if status != http.StatusOK {
			return nil, 0, fmt.Errorf("page %d: %d %.300s", pages, status, body)
		}
		var page snapshotPage
		if err := json.Unmarshal(body, &page); err != nil {
			return nil, 0, err
		}
		all = append(all, page.Values...)
		if !page.HasMore {
			if pages < 2 {
				return nil, 0, fmt.Errorf("the snapshot ended after %d pages", pages+1)
			}
			return all, page.Snapshot, nil
		}
		params = url.Values{"tableName": params["tableName"], "limit": params["limit"],
			"snapshot": {strconv.FormatInt(page.Snapshot, 10)}, "cursor": {*page.Cursor}}
		paused.Add(1)
		time.Sleep(pause)
		paused.Add(-1)
	}
}

// holdWatcher polls pg_stat_activity and pg_replication_slots for what a
// snapshot must not hold between pages.
type holdWatcher struct {
	done       chan struct{}
	finished   chan struct{}
	violations []string
	polls      int // polls while some reader was paused mid-snapshot
}

type backendSeen struct {
	state, xmin string
	since       time.Time
}

// watchHolds starts polling on conn (the test's database) until stop.
// Something counts as held when two polls in a row see it unchanged: the
// same backend, in the same state since the same moment (a poll reads a
// backend's state and its xmin one after the other, so one poll can catch
// a backend just starting a query).
func watchHolds(t *testing.T, conn *pgx.Conn, paused *atomic.Int32) *holdWatcher {
	t.Helper()
	w := &holdWatcher{done: make(chan struct{}), finished: make(chan struct{})}
	go func() {
		defer close(w.finished)
		prev := map[int32]backendSeen{}
		reported := map[string]bool{}
		report := func(s string) {
			if !reported[s] {
				reported[s] = true
				w.violations = append(w.violations, s)
			}
		}
		for {
			select {
			case <-w.done:
				return
			case <-time.After(15 * time.Millisecond):
			}
			mid := paused.Load() > 0
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			rows, err := conn.Query(ctx, `
				SELECT pid, coalesce(application_name, ''), coalesce(state, ''), coalesce(state_change, 'epoch'), coalesce(backend_xmin::text, '')
				FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`)
			if err != nil {
				cancel()
				report("polling pg_stat_activity: " + err.Error())
				return
			}
			now := map[int32]backendSeen{}
			for rows.Next() {
				var pid int32
				var app string
				var b backendSeen
				if err := rows.Scan(&pid, &app, &b.state, &b.since, &b.xmin); err != nil {
					report(err.Error())
				}
				now[pid] = b
				p, same := prev[pid]
				same = same && p.state == b.state && p.since.Equal(b.since)
				switch {
				case strings.HasPrefix(b.state, "idle in transaction") && same:
					report(fmt.Sprintf("backend %d (%q) is %s since %s", pid, app, b.state, b.since.Format(time.StampMicro)))
				case app == "shapelog snapshot pages" && b.state == "idle" && b.xmin != "" && same && p.xmin != "":
					report(fmt.Sprintf("idle page connection %d holds xmin %s", pid, b.xmin))
				}
			}
			err = rows.Err()
			var slots []string
			if err == nil {
				var rs pgx.Rows
				if rs, err = conn.Query(ctx, `SELECT slot_name FROM pg_replication_slots WHERE temporary AND database = current_database()`); err == nil {
					slots, err = pgx.CollectRows(rs, pgx.RowTo[string])
				}
			}
			cancel()
			if err != nil {
				report("polling: " + err.Error())
				return
			}
			for _, s := range slots {
				report("temporary replication slot " + s)
			}
			prev = now
			if mid && paused.Load() > 0 {
				w.polls++
			}
		}
	}()
	return w
}

// stop ends the polling and returns what was found held, and how many
// polls ran while readers were paused mid-snapshot.
func (w *holdWatcher) stop() ([]string, int) {
	close(w.done)
	<-w.finished
	return w.violations, w.polls
}

// assertSnapshot checks that docs are the snapshot at ts of exactly want
// (by _id, documents rendered by value), each document once.
func assertSnapshot(t *testing.T, label string, docs []doc, ts int64, want map[string]string, value func(doc) string) {
	t.Helper()
	got := map[string]string{}
	for _, d := range docs {
		id := fmt.Sprint(d["_id"])
		if _, dup := got[id]; dup {
			t.Fatalf("%s: %s is twice in the snapshot", label, id)
		}
		if d["_ts"] != float64(ts) {
			t.Fatalf("%s: document %s has _ts %v, want the snapshot's %d", label, id, d["_ts"], ts)
		}
		got[id] = value(d)
	}
	if diffs := stateDiff(want, got); len(diffs) > 0 {
		t.Fatalf("%s: %d of %d rows differ from the table at the snapshot, e.g. %v", label, len(diffs), len(want), diffs[:min(8, len(diffs))])
	}
}

// assertSameAsOnePage checks a snapshot of table at ts, read in small pages
// while the table changed, against the same snapshot read again in a single
// page (snapshot=ts) once the writes stopped: the same documents, each
// once. (snapshot + deltas = table alone would forgive a page that served a
// row newer than ts, or lost one the deltas delete anyway.)
func assertSameAsOnePage(t *testing.T, base, table string, ts int64, docs []doc) {
	t.Helper()
	again, ts2, _ := walkSnapshot(t, base, url.Values{"tableName": {table}, "snapshot": {strconv.FormatInt(ts, 10)}, "limit": {"100000"}}, nil)
	if ts2 != ts {
		t.Fatalf("snapshot=%d answered snapshot %d", ts, ts2)
	}
	want := map[string]string{}
	for _, d := range again {
		b, _ := json.Marshal(d)
		want[fmt.Sprint(d["_id"])] = string(b)
	}
	assertSnapshot(t, table+" in pages vs. in one page", docs, ts, want, func(d doc) string {
		b, _ := json.Marshal(d)
		return string(b)
	})
}

// TestSnapshotSurvivesPostgresRestart restarts PostgreSQL in the middle of
// snapshots while writers change the tables: the client asks for the same
// page again until the engine answers, and snapshot + deltas is still
// exactly the table.
func TestSnapshotSurvivesPostgresRestart(t *testing.T) {
	cluster := pgtest.SharedCluster(t)
	if cluster == nil {
		t.Skip("needs the throwaway cluster (DATABASE_URL is set)")
	}
	dbURL, _ := writerTables(t)
	e := startEngine(t, dbURL)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.RWMutex
	var writes atomic.Int64
	for w := range 2 {
		wg.Add(1)
		// No TRUNCATE: a snapshot that sees one after its ts is rewound to
		// the empty table and may end before the restart it is meant to
		// span (TestDurableSnapshotUnderWritesAndKills covers TRUNCATE).
		go func() { defer wg.Done(); writer(ctx, t, dbURL, int64(100+w), false, true, &writes, &mu) }()
	}
	defer func() { cancel(); wg.Wait() }()
	time.Sleep(100 * time.Millisecond)

	snaps := map[string][]doc{}
	tss := map[string]int64{}
	// kv: PostgreSQL restarts between two pages, right after one is served.
	restartedAt := int64(-1)
	var failed int
	snaps["kv"], tss["kv"], failed = walkSnapshot(t, e.URL(), url.Values{"tableName": {"kv"}, "limit": {"29"}}, func(pages int) {
		if pages == 5 {
			restartedAt = writes.Load()
			start := time.Now()
			if err := cluster.RestartImmediate(); err != nil {
				t.Fatal(err)
			}
			t.Logf("kv: PostgreSQL restarted after page %d in %v", pages, time.Since(start).Round(time.Millisecond))
		}
	})
	if restartedAt < 0 {
		t.Fatalf("the snapshot of kv ended before PostgreSQL restarted (%d documents)", len(snaps["kv"]))
	}
	t.Logf("kv: %d documents, %d failed attempts", len(snaps["kv"]), failed)
	// nk: it restarts while the client goes on asking for pages.
	var restart sync.WaitGroup
	var restartErr error
	restarted := false
	snaps["nk"], tss["nk"], failed = walkSnapshot(t, e.URL(), url.Values{"tableName": {"nk"}, "limit": {"23"}}, func(pages int) {
		if pages == 3 {
			restarted = true
			restart.Add(1)
			go func() { defer restart.Done(); restartErr = cluster.RestartImmediate() }()
		}
	})
	restart.Wait()
	if restartErr != nil || !restarted {
		t.Fatalf("restarting PostgreSQL during the snapshot of nk: restarted %v, %v", restarted, restartErr)
	}
	t.Logf("nk: %d documents, %d failed attempts", len(snaps["nk"]), failed)
	time.Sleep(200 * time.Millisecond)
	cancel()
	wg.Wait()
	if n := writes.Load(); n <= restartedAt {
		t.Fatalf("the writers wrote nothing after the first restart (%d writes before, %d in all)", restartedAt, n)
	}
	conn := connect(t, dbURL) // the first one went with the restart
	mustExec(t, conn, `INSERT INTO marker VALUES (1)`)
	want := tableState(t, conn)
	checkReplica(t, e.URL(), snaps, tss, 1, want, docValue, "across PostgreSQL restarts")
	for table, docs := range snaps {
		assertSameAsOnePage(t, e.URL(), table, tss[table], docs)
	}
	t.Logf("%d rows equal; %d writes (%d before the first restart)", len(want), writes.Load(), restartedAt)
}

// TestLegacyCursorsResume continues cursors the way existing clients hold
// them: a cursor of the format before durable snapshots (a held session
// and a ctid) restarts its table at the same ts; a cursor and snapshot
// saved by Airbyte's Convex source before an engine kill -9 continue where
// they were; and `snapshot` alone starts a snapshot in the past.
func TestLegacyCursorsResume(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE legacy (id int PRIMARY KEY, v text NOT NULL)`)
	mustExec(t, conn, `CREATE TABLE marker (id int PRIMARY KEY)`)
	mustExec(t, conn, `INSERT INTO legacy SELECT g, 'v' || g FROM generate_series(1, 60) g`)
	p := &engineProc{t: t, dbURL: dbURL, dir: t.TempDir(), port: freePort(t)}
	p.cmd = runEngine(t, dbURL, p.dir, p.port)
	const state = `SELECT '"public"."legacy"/"' || id || '"', v FROM legacy`
	value := func(d doc) string { return fmt.Sprint(d["v"]) }

	// A snapshot at ts0; since then rows were deleted (some before the old
	// cursor's position, some after), changed and added.
	want0 := queryState(t, conn, state)
	r := get(t, p.base(), "/api/list_snapshot", url.Values{"tableName": {"legacy"}, "limit": {"20"}})
	var first snapshotPage
	r.decode(t, &first)
	if r.Status != http.StatusOK || !first.HasMore {
		t.Fatalf("list_snapshot: %d %.300s", r.Status, r.Body)
	}
	ts0 := strconv.FormatInt(first.Snapshot, 10)
	mustExec(t, conn, `DELETE FROM legacy WHERE id <= 10 OR id BETWEEN 40 AND 45`)
	mustExec(t, conn, `UPDATE legacy SET v = v || ' changed' WHERE id BETWEEN 20 AND 25`)
	mustExec(t, conn, `UPDATE legacy SET id = 1000 WHERE id = 30`)
	mustExec(t, conn, `INSERT INTO legacy SELECT g, 'new' || g FROM generate_series(100, 105) g`)
	mustExec(t, conn, `INSERT INTO marker VALUES (1)`)
	wantNow := queryState(t, conn, state)

	// (a) The old cursor is read again from its table's start as of ts0: the
	// deleted rows are in it, the deltas from ts0 delete them.
	old := `{"snapshot":"0123456789abcdef","table":0,"after":"(0,5)"}`
	docs, ts, _ := walkSnapshot(t, p.base(), url.Values{"tableName": {"legacy"}, "limit": {"17"}, "snapshot": {ts0}, "cursor": {old}}, nil)
	assertSnapshot(t, "old cursor of one table", docs, first.Snapshot, want0, value)
	checkReplica(t, p.base(), map[string][]doc{"legacy": docs}, map[string]int64{"legacy": ts}, 1, wantNow, value, "old cursor + deltas")
	// In a snapshot of every table it starts over from the first table
	// (marker was empty at ts0).
	docs, _, _ = walkSnapshot(t, p.base(), url.Values{"limit": {"17"}, "snapshot": {ts0}, "cursor": {old}}, nil)
	assertSnapshot(t, "old cursor of all tables", docs, first.Snapshot, want0, value)

	// (b) Bad old cursors.
	for _, c := range []struct {
		name   string
		params url.Values
		code   string
	}{
		{"forged after", url.Values{"snapshot": {ts0}, "cursor": {`{"snapshot":"0123456789abcdef","table":0,"after":"(0,5) OR true"}`}}, "InvalidListSnapshotCursor"},
		{"injected after", url.Values{"snapshot": {ts0}, "cursor": {`{"snapshot":"0123456789abcdef","table":0,"after":"(0,5)'::tid; DROP TABLE legacy; --"}`}}, "InvalidListSnapshotCursor"},
		{"block out of range", url.Values{"snapshot": {ts0}, "cursor": {`{"snapshot":"0123456789abcdef","table":0,"after":"(4294967296,1)"}`}}, "InvalidListSnapshotCursor"},
		{"negative table", url.Values{"snapshot": {ts0}, "cursor": {`{"snapshot":"0123456789abcdef","table":-1,"after":"(0,5)"}`}}, "InvalidListSnapshotCursor"},
		{"no session", url.Values{"snapshot": {ts0}, "cursor": {`{"table":0,"after":"(0,5)"}`}}, "InvalidListSnapshotCursor"},
		{"below the horizon", url.Values{"snapshot": {"1"}, "cursor": {old}}, "SnapshotTooOld"},
		{"without snapshot", url.Values{"cursor": {old}}, "SnapshotTooOld"},
	} {
		for _, table := range []string{"", "legacy"} {
			if table != "" {
				c.params.Set("tableName", table)
			}
			r := get(t, p.base(), "/api/list_snapshot", c.params)
			if r.Status != http.StatusBadRequest || r.errorCode(t) != c.code {
				t.Errorf("%s (tableName %q): %d %s, want 400 %s", c.name, table, r.Status, r.Body, c.code)
			}
		}
	}
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM legacy`).Scan(&n); err != nil || n != len(wantNow) {
		t.Fatalf("legacy after the forged cursors: %d rows, %v", n, err)
	}

	// (c) Airbyte's Convex source keeps `snapshot` and `cursor` in its
	// state: page 1, then the engine is killed and restarted, then the
	// source continues with both. The rows changed meanwhile (in the part
	// read and in the part not read yet) are as they were at ts1.
	want1 := queryState(t, conn, state)
	params := url.Values{"tableName": {"legacy"}, "format": {"json"}, "limit": {"10"}}
	r = get(t, p.base(), "/api/list_snapshot", params)
	var page1 snapshotPage
	r.decode(t, &page1)
	if r.Status != http.StatusOK || !page1.HasMore {
		t.Fatalf("list_snapshot: %d %.300s", r.Status, r.Body)
	}
	mustExec(t, conn, `DELETE FROM legacy WHERE id IN (11, 12, 50, 51, 104)`)
	mustExec(t, conn, `UPDATE legacy SET v = 'after ts1' WHERE id BETWEEN 13 AND 35`)
	mustExec(t, conn, `UPDATE legacy SET id = 2000 WHERE id = 55`)
	mustExec(t, conn, `INSERT INTO legacy SELECT g, 'newer' || g FROM generate_series(200, 205) g`)
	p.kill9()
	params.Set("snapshot", strconv.FormatInt(page1.Snapshot, 10))
	params.Set("cursor", *page1.Cursor)
	rest, ts, failed := walkSnapshot(t, p.base(), params, nil)
	if ts != page1.Snapshot {
		t.Fatalf("continued snapshot is at %d, began at %d", ts, page1.Snapshot)
	}
	assertSnapshot(t, "Airbyte's snapshot continued after kill -9", append(page1.Values, rest...), ts, want1, value)
	t.Logf("continued after kill -9 with %d failed attempts", failed)

	// (d) `snapshot` without a cursor starts a snapshot at that ts: the rows
	// deleted since are in it (here, after the engine restarted too).
	for _, table := range []string{"legacy", ""} {
		params := url.Values{"snapshot": {ts0}, "limit": {"13"}}
		if table != "" {
			params.Set("tableName", table)
		}
		docs, ts, _ := walkSnapshot(t, p.base(), params, nil)
		if ts != first.Snapshot {
			t.Fatalf("snapshot=%s answered snapshot %d", ts0, ts)
		}
		assertSnapshot(t, fmt.Sprintf("snapshot=ts0 (tableName %q)", table), docs, ts, want0, value)
	}
}

// snapshotCursorPeek is what a test reads in list_snapshot's opaque cursor
// to know where it stands.
type snapshotCursorPeek struct {
	Table string   `json:"table"`
	Key   []string `json:"key"`
	After string   `json:"after"`
}

func peekCursor(t *testing.T, c *string) snapshotCursorPeek {
	t.Helper()
	var p snapshotCursorPeek
	if c == nil {
		return p
	}
	if err := json.Unmarshal([]byte(*c), &p); err != nil {
		t.Fatalf("cursor %s: %v", *c, err)
	}
	return p
}

// docRows renders documents as "table:col=value,…" (columns by name), sorted:
// a multiset that can be compared with rows of a table without a key.
func docRows(docs []doc) []string {
	out := make([]string, 0, len(docs))
	for _, d := range docs {
		var cols []string
		for k, v := range d {
			if !strings.HasPrefix(k, "_") {
				cols = append(cols, fmt.Sprintf("%s=%v", k, v))
			}
		}
		sort.Strings(cols)
		out = append(out, fmt.Sprint(d["_table"])+":"+strings.Join(cols, ","))
	}
	sort.Strings(out)
	return out
}

// tableRows is rowsOf (one text column) sorted, to compare with docRows.
func tableRows(t *testing.T, conn *pgx.Conn, query string) []string {
	t.Helper()
	return slices.Sorted(slices.Values(rowsOf(t, conn, query)))
}

func sameRows(t *testing.T, label string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		var missing, extra []string
		g := map[string]int{}
		for _, r := range got {
			g[r]++
		}
		for _, r := range want {
			if g[r] > 0 {
				g[r]--
			} else {
				missing = append(missing, r)
			}
		}
		for r, n := range g {
			for range n {
				extra = append(extra, r)
			}
		}
		t.Fatalf("%s: %d rows, want %d; missing %v; extra %v", label, len(got), len(want), missing[:min(8, len(missing))], extra[:min(8, len(extra))])
	}
}

// TestKeylessTableKeepsHeldSnapshot pages through a table without a
// primary key between two keyed tables in one snapshot of every table,
// with writes between pages. The keyless table's held snapshot does not
// survive an engine kill -9, and continuing it says why; continuations of
// keyed tables (alone, or after the keyless one in a snapshot of every
// table) still work.
func TestKeylessTableKeepsHeldSnapshot(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE akeyed (id int PRIMARY KEY, v int NOT NULL)`)
	mustExec(t, conn, `CREATE TABLE nopk (a int, b text)`)
	mustExec(t, conn, `CREATE TABLE zkeyed (id int PRIMARY KEY, v int NOT NULL)`)
	mustExec(t, conn, `INSERT INTO akeyed SELECT g, g FROM generate_series(1, 90) g`)
	// Duplicate rows and NULLs: nothing identifies a row but its place.
	mustExec(t, conn, `INSERT INTO nopk SELECT g % 40, CASE WHEN g % 9 = 0 THEN NULL ELSE 'b' || (g % 13) END FROM generate_series(1, 120) g`)
	mustExec(t, conn, `INSERT INTO nopk VALUES (NULL, NULL), (NULL, NULL)`)
	mustExec(t, conn, `INSERT INTO zkeyed SELECT g, -g FROM generate_series(1, 90) g`)
	p := &engineProc{t: t, dbURL: dbURL, dir: t.TempDir(), port: freePort(t)}
	p.cmd = runEngine(t, dbURL, p.dir, p.port)
	const rowsAll = `
		SELECT 'akeyed:id=' || id || ',v=' || v FROM akeyed
		UNION ALL SELECT 'nopk:a=' || coalesce(a::text, '<nil>') || ',b=' || coalesce(b, '<nil>') FROM nopk
		UNION ALL SELECT 'zkeyed:id=' || id || ',v=' || v FROM zkeyed`
	only := func(rows []string, table string) []string {
		return slices.DeleteFunc(slices.Clone(rows), func(r string) bool { return !strings.HasPrefix(r, table+":") })
	}
	byTable := func(docs []doc, table string) []doc {
		return slices.DeleteFunc(slices.Clone(docs), func(d doc) bool { return d["_table"] != table })
	}

	// 1. One snapshot of every table, with every table changing between pages.
	want := tableRows(t, conn, rowsAll)
	docs, ts1, _ := walkSnapshot(t, p.base(), url.Values{"limit": {"15"}}, func(pages int) {
		mustExec(t, conn, `UPDATE akeyed SET v = v + 1000 WHERE id = $1`, pages)
		mustExec(t, conn, `DELETE FROM zkeyed WHERE id = $1`, 91-pages)
		mustExec(t, conn, `INSERT INTO akeyed VALUES ($1, 0)`, 1000+pages)
		mustExec(t, conn, `DELETE FROM nopk WHERE a = $1`, pages%40)
		mustExec(t, conn, `UPDATE nopk SET b = 'changed' WHERE a = $1`, (pages+20)%40)
		mustExec(t, conn, `INSERT INTO nopk VALUES ($1, 'new'), ($1, 'new')`, pages%40)
	})
	for _, d := range docs {
		if d["_ts"] != float64(ts1) {
			t.Fatalf("document with _ts %v in snapshot %d", d["_ts"], ts1)
		}
	}
	got := docRows(docs)
	for _, table := range []string{"akeyed", "nopk", "zkeyed"} {
		sameRows(t, "snapshot of every table, "+table, only(got, table), only(want, table))
	}
	sameRows(t, "snapshot of every table", got, want)

	// 2. Another one, interrupted: cursors in the keyless table and in the
	// keyed table after it, and (3.) page 1 of a snapshot of one keyed table.
	want2 := tableRows(t, conn, rowsAll)
	params := url.Values{"limit": {"15"}}
	var inKeyless, inKeyedAfter *string
	var ts2 int64
	var zBefore []doc
	for pages := 0; inKeyedAfter == nil; pages++ {
		if pages > 50 {
			t.Fatal("never reached zkeyed")
		}
		r := get(t, p.base(), "/api/list_snapshot", params)
		var page snapshotPage
		r.decode(t, &page)
		if r.Status != http.StatusOK || !page.HasMore {
			t.Fatalf("list_snapshot: %d %.300s", r.Status, r.Body)
		}
		ts2 = page.Snapshot
		zBefore = append(zBefore, byTable(page.Values, "zkeyed")...)
		switch c := peekCursor(t, page.Cursor); {
		case c.Table == "nopk" && c.After != "" && inKeyless == nil:
			inKeyless = page.Cursor
		case c.Table == "zkeyed" && len(c.Key) > 0:
			inKeyedAfter = page.Cursor
		}
		params.Set("snapshot", strconv.FormatInt(page.Snapshot, 10))
		params.Set("cursor", *page.Cursor)
	}
	if inKeyless == nil {
		t.Fatal("no cursor in the middle of the keyless table")
	}
	wantA3 := only(tableRows(t, conn, rowsAll), "akeyed")
	p3 := url.Values{"tableName": {"akeyed"}, "limit": {"15"}}
	r := get(t, p.base(), "/api/list_snapshot", p3)
	var page3 snapshotPage
	r.decode(t, &page3)
	if r.Status != http.StatusOK || !page3.HasMore {
		t.Fatalf("list_snapshot of akeyed: %d %.300s", r.Status, r.Body)
	}
	// Changes after both snapshots, then kill -9.
	mustExec(t, conn, `DELETE FROM akeyed WHERE id % 7 = 0`)
	mustExec(t, conn, `UPDATE zkeyed SET v = 0 WHERE id % 5 = 0`)
	mustExec(t, conn, `DELETE FROM zkeyed WHERE id > 80`)
	mustExec(t, conn, `INSERT INTO nopk VALUES (7, 'after the kill')`)
	p.kill9()

	// The keyless table's held snapshot is gone with the engine.
	ts2s := strconv.FormatInt(ts2, 10)
	var status int
	var body []byte
	for range 100 {
		var err error
		if status, body, err = tryGet(p.base(), "/api/list_snapshot", url.Values{"limit": {"15"}, "snapshot": {ts2s}, "cursor": {*inKeyless}}); err == nil && status < 500 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	var e struct{ Code, Message string }
	_ = json.Unmarshal(body, &e)
	if status != http.StatusBadRequest || e.Code != "SnapshotTooOld" || !strings.Contains(e.Message, "without a primary key") || !strings.Contains(e.Message, "lost") {
		t.Fatalf("continuing in the keyless table after kill -9: %d %s; want 400 SnapshotTooOld saying the held snapshot of a table without a primary key was lost", status, body)
	}
	t.Logf("keyless continuation: %s", e.Message)

	// The keyed table after it continues, as of ts2.
	rest, ts, _ := walkSnapshot(t, p.base(), url.Values{"limit": {"15"}, "snapshot": {ts2s}, "cursor": {*inKeyedAfter}}, nil)
	if ts != ts2 {
		t.Fatalf("continued snapshot at %d, want %d", ts, ts2)
	}
	if other := slices.DeleteFunc(slices.Clone(rest), func(d doc) bool { return d["_table"] == "zkeyed" }); len(other) > 0 {
		t.Fatalf("the continuation of zkeyed holds other tables' documents: %s", brief(other))
	}
	sameRows(t, "zkeyed continued after kill -9", docRows(append(zBefore, rest...)), only(want2, "zkeyed"))

	// A snapshot of one keyed table continues.
	p3.Set("snapshot", strconv.FormatInt(page3.Snapshot, 10))
	p3.Set("cursor", *page3.Cursor)
	rest, ts, _ = walkSnapshot(t, p.base(), p3, nil)
	if ts != page3.Snapshot {
		t.Fatalf("continued snapshot at %d, want %d", ts, page3.Snapshot)
	}
	sameRows(t, "akeyed continued after kill -9", docRows(append(page3.Values, rest...)), wantA3)
}

// textKeyCollation picks a collation that does not order text bytewise:
// ICU's if PostgreSQL has it, else an English libc one.
func textKeyCollation(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	var coll string
	err := conn.QueryRow(context.Background(), `
		SELECT collname FROM pg_collation
		WHERE collname IN ('en-x-icu', 'und-x-icu') OR (collprovider = 'c' AND collname ~* '^en_(US|GB)\.utf-?8$')
		ORDER BY collprovider = 'i' DESC, collname = 'en-x-icu' DESC, collname LIMIT 1`).Scan(&coll)
	if errors.Is(err, pgx.ErrNoRows) {
		t.Skip("PostgreSQL has no non-C collation to key text by (neither ICU's en-x-icu/und-x-icu nor libc's en_US.utf8)")
	}
	if err != nil {
		t.Fatal(err)
	}
	return coll
}

// lit is s as an SQL string literal.
func lit(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

var (
	collPrefixes = []string{"a", "A", "á", "Á", "ä", "b", "B", "ß", "ss", "é", "e", "E", "ø", "o", "Ö", "z", "Z",
		"_a", "-b", "a b", "a-b", "ab", "aB", "Ab", "æ", "ǆ", "ﬁ", "fi", "中", "ž", "10", "9"}
	collGroups = []string{"alpha", "Alpha", "ÁLPHA", "beta", "Beta", "bèta", "_g", "g-1", "g 1", "ölf", "Zed", "zed"}
)

func collName(rng *rand.Rand) string {
	return collPrefixes[rng.Intn(len(collPrefixes))] + strconv.Itoa(rng.Intn(40))
}

func collAt(rng *rand.Rand) string {
	return fmt.Sprintf(`(timestamptz '2024-03-01 00:00:00+00' + %d * interval '1 minute 0.125 second')`, rng.Intn(60))
}

// collationWriter deletes, re-keys, inserts and updates rows of ct and ck
// at random until ctx ends.
func collationWriter(ctx context.Context, t *testing.T, dbURL string, seed int64, n *atomic.Int64) {
	c := connectWriter(ctx, t, dbURL, false)
	if c == nil {
		return
	}
	defer c.Close(context.Background())
	rng := rand.New(rand.NewSource(seed))
	for ctx.Err() == nil {
		a, b := lit(collName(rng)), lit(collName(rng))
		g, h := lit(collGroups[rng.Intn(len(collGroups))]), lit(collGroups[rng.Intn(len(collGroups))])
		at, at2 := collAt(rng), collAt(rng)
		var sqls []string
		switch op := rng.Intn(100); {
		case op < 15:
			sqls = []string{fmt.Sprintf(`INSERT INTO ct VALUES (%s, %d) ON CONFLICT DO NOTHING`, a, rng.Intn(1000))}
		case op < 27:
			sqls = []string{fmt.Sprintf(`UPDATE ct SET v = v + 1 WHERE name = %s`, a)}
		case op < 42:
			sqls = []string{fmt.Sprintf(`UPDATE ct SET name = %s WHERE name = %s AND NOT EXISTS (SELECT 1 FROM ct WHERE name = %s)`, b, a, b)}
		case op < 52:
			sqls = []string{fmt.Sprintf(`DELETE FROM ct WHERE name = %s`, a)}
		case op < 62:
			sqls = []string{fmt.Sprintf(`INSERT INTO ck VALUES (%s, %s, %d) ON CONFLICT DO NOTHING`, g, at, rng.Intn(1000))}
		case op < 74:
			sqls = []string{fmt.Sprintf(`UPDATE ck SET grp = %s, at = %s WHERE grp = %s AND at = %s AND NOT EXISTS (SELECT 1 FROM ck WHERE grp = %s AND at = %s)`, h, at2, g, at, h, at2)}
		case op < 82:
			sqls = []string{fmt.Sprintf(`DELETE FROM ck WHERE grp = %s AND at = %s`, g, at)}
		case op < 88:
			sqls = []string{fmt.Sprintf(`UPDATE ck SET v = v + 1 WHERE grp = %s`, g)}
		default:
			sqls = []string{"BEGIN",
				fmt.Sprintf(`DELETE FROM ct WHERE name = %s`, a),
				fmt.Sprintf(`INSERT INTO ct VALUES (%s, 7) ON CONFLICT (name) DO UPDATE SET v = ct.v + 7`, b),
				fmt.Sprintf(`UPDATE ck SET at = at + interval '1 second' WHERE grp = %s AND at = %s`, g, at),
				fmt.Sprintf(`DELETE FROM ck WHERE grp = %s AND at = %s`, h, at2),
				"COMMIT"}
		}
		if err := execWrite(c, sqls); err != nil {
			t.Error(err)
			return
		}
		n.Add(1)
	}
}

// TestSnapshotTextKeyCollation snapshots tables keyed by text under a
// collation that does not order bytewise (one also by a timestamptz),
// while writers delete and re-key rows: which page a row that left belongs
// to is then decided by PostgreSQL's comparison, not Go's. Snapshot +
// deltas must be exactly the table.
func TestSnapshotTextKeyCollation(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	coll := pgx.Identifier{textKeyCollation(t, conn)}.Sanitize()
	mustExec(t, conn, `CREATE TABLE ct (name text COLLATE `+coll+` PRIMARY KEY, v int NOT NULL)`)
	mustExec(t, conn, `CREATE TABLE ck (grp text COLLATE `+coll+`, at timestamptz, v int NOT NULL, PRIMARY KEY (grp, at))`)
	mustExec(t, conn, `CREATE TABLE marker (id int PRIMARY KEY)`)
	rng := rand.New(rand.NewSource(1))
	var ctRows, ckRows []string
	for range 900 {
		ctRows = append(ctRows, fmt.Sprintf("(%s, %d)", lit(collName(rng)), rng.Intn(1000)))
	}
	for range 500 {
		ckRows = append(ckRows, fmt.Sprintf("(%s, %s, %d)", lit(collGroups[rng.Intn(len(collGroups))]), collAt(rng), rng.Intn(1000)))
	}
	mustExec(t, conn, `INSERT INTO ct VALUES `+strings.Join(ctRows, ", ")+` ON CONFLICT DO NOTHING`)
	mustExec(t, conn, `INSERT INTO ck VALUES `+strings.Join(ckRows, ", ")+` ON CONFLICT DO NOTHING`)
	// The collation really orders these keys otherwise than bytes do.
	var moved int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM (SELECT row_number() OVER (ORDER BY name) AS r, row_number() OVER (ORDER BY name COLLATE "C") AS c FROM ct) x WHERE r <> c`).Scan(&moved); err != nil || moved == 0 {
		t.Fatalf("collation %s orders the keys bytewise (%d rows placed differently, %v)", coll, moved, err)
	}
	e := startEngine(t, dbURL)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var writes atomic.Int64
	for w := range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); collationWriter(ctx, t, dbURL, int64(10+w), &writes) }()
	}
	defer func() { cancel(); wg.Wait() }()
	time.Sleep(100 * time.Millisecond)
	snaps := map[string][]doc{}
	tss := map[string]int64{}
	for table, limit := range map[string]string{"ct": "9", "ck": "7"} {
		snaps[table], tss[table], _ = walkSnapshot(t, e.URL(), url.Values{"tableName": {table}, "limit": {limit}}, nil)
	}
	time.Sleep(100 * time.Millisecond)
	cancel()
	wg.Wait()
	mustExec(t, conn, `INSERT INTO marker VALUES (1)`)
	mustExec(t, conn, `SET TimeZone = 'UTC'`)
	want := queryState(t, conn, `
		SELECT '"public"."ct"/"' || replace(name, '/', '//') || '"', v::text FROM ct
		UNION ALL SELECT '"public"."ck"/"' || replace(grp, '/', '//') || '"/"' || at::text || '"', v::text FROM ck`)
	checkReplica(t, e.URL(), snaps, tss, 1, want, func(d doc) string { return fmt.Sprint(d["v"]) }, "collation "+coll)
	for table, docs := range snaps {
		assertSameAsOnePage(t, e.URL(), table, tss[table], docs)
	}
	t.Logf("collation %s: %d rows equal; %d writes during the snapshots (%d keys of ct ordered unlike bytes)", coll, len(want), writes.Load(), moved)
}

// TestSnapshotCursorWithQualifiedTableName pages a snapshot asked for by a
// table's schema-qualified or quoted name: the cursor names the table by its
// API name, and later pages must still accept it.
func TestSnapshotCursorWithQualifiedTableName(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE kv (id int PRIMARY KEY, v int NOT NULL)`)
	mustExec(t, conn, `CREATE TABLE other (id int PRIMARY KEY)`)
	mustExec(t, conn, `INSERT INTO kv SELECT g, g FROM generate_series(1, 10) g`)
	e := startEngine(t, dbURL)
	want := queryState(t, conn, `SELECT '"public"."kv"/"' || id || '"', v::text FROM kv`)
	for _, name := range []string{"kv", "public.kv", `"public"."kv"`, `"kv"`} {
		docs, ts := readSnapshot(t, e.URL(), url.Values{"tableName": {name}, "limit": {"3"}})
		assertSnapshot(t, "tableName "+name, docs, ts, want, func(d doc) string { return fmt.Sprint(d["v"]) })
	}
	// A cursor of another table is still refused.
	r := get(t, e.URL(), "/api/list_snapshot", url.Values{"tableName": {"kv"}, "limit": {"3"}})
	var page snapshotPage
	r.decode(t, &page)
	r = get(t, e.URL(), "/api/list_snapshot", url.Values{"tableName": {"public.other"}, "snapshot": {strconv.FormatInt(page.Snapshot, 10)}, "cursor": {*page.Cursor}})
	if r.Status != http.StatusBadRequest || r.errorCode(t) != "InvalidListSnapshotCursor" {
		t.Fatalf("cursor of kv with tableName public.other: %d %s", r.Status, r.Body)
	}
}
