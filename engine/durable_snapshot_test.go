package engine_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/url"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shapelog/shapelog/internal/pgtest"
)

// engineProc is the engine binary that a test kills and starts again.
type engineProc struct {
	t          *testing.T
	dbURL, dir string
	port       int
	mu         sync.Mutex
	cmd        *exec.Cmd
	kills      int
}

func (p *engineProc) base() string { return fmt.Sprintf("http://127.0.0.1:%d", p.port) }

// kill9 kills the engine with SIGKILL and starts it again.
func (p *engineProc) kill9() {
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
	p.kills++
	p.cmd = runEngine(p.t, p.dbURL, p.dir, p.port)
}

// tryGet is one request that may fail while the engine is down.
func tryGet(base, path string, params url.Values) (int, []byte, error) {
	req, _ := http.NewRequest(http.MethodGet, base+path+"?"+params.Encode(), nil)
	req.Header.Set("Authorization", "Convex "+testKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// readSnapshotThroughKills walks list_snapshot of one table while the
// engine is killed at random moments, retrying each page with the cursor
// of the page before, as a client would. Pages are paced a few
// milliseconds apart (writes go on meanwhile), a killer fires at random
// times, mid-request or between pages, and the engine is killed at least
// once, between two pages chosen at random.
func readSnapshotThroughKills(t *testing.T, p *engineProc, table string, limit int, rng *rand.Rand) ([]doc, int64) {
	t.Helper()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	delays := make([]time.Duration, 8) // drawn here: rng is not safe for concurrent use
	for i := range delays {
		delays[i] = time.Duration(20+rng.Intn(300)) * time.Millisecond
	}
	killAt := 1 + rng.Intn(20)
	go func() {
		defer wg.Done()
		for _, d := range delays {
			select {
			case <-stop:
				return
			case <-time.After(d):
			}
			p.kill9()
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	all, ts, _ := walkSnapshot(t, p.base(), url.Values{"tableName": {table}, "limit": {strconv.Itoa(limit)}}, func(pages int) {
		if pages == killAt {
			p.kill9()
		}
		time.Sleep(5 * time.Millisecond)
	})
	return all, ts
}

// walkSnapshot walks list_snapshot to the end as a client that outlives
// outages does: a page that fails for want of a server (no connection, a
// 5xx) is asked for again with the same cursor; any other failure fails
// the test. between (if not nil) runs after each page with the number of
// pages read so far. It returns the documents, the snapshot's ts and how
// many attempts failed.
func walkSnapshot(t *testing.T, base string, params url.Values, between func(pages int)) ([]doc, int64, int) {
	t.Helper()
	var all []doc
	p := url.Values{}
	for k, v := range params {
		p[k] = v
	}
	deadline := time.Now().Add(2 * time.Minute)
	failed := 0
	for pages := 0; ; {
		if time.Now().After(deadline) {
			t.Fatalf("snapshot %v did not finish: %d pages", params, pages)
		}
		status, body, err := tryGet(base, "/api/list_snapshot", p)
		if err == nil && status >= 500 && status != http.StatusServiceUnavailable {
			// An outage of the engine or PostgreSQL is a transport error
			// or a 503 to retry, never a 500.
			t.Fatalf("list_snapshot %v after %d pages: %d %s", params, pages, status, body)
		}
		if err != nil || status >= 500 {
			failed++
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if status != http.StatusOK {
			t.Fatalf("list_snapshot %v after %d pages: %d %s", params, pages, status, body)
		}
		var page snapshotPage
		apiResult{Status: status, Body: body}.decode(t, &page)
		pages++
		all = append(all, page.Values...)
		if !page.HasMore {
			return all, page.Snapshot, failed
		}
		p.Set("snapshot", strconv.FormatInt(page.Snapshot, 10))
		p.Set("cursor", *page.Cursor)
		if between != nil {
			between(pages)
		}
	}
}

// writer changes the two test tables at random until ctx ends: inserts,
// updates, key changes, deletes, several rows in one transaction, and now
// and then a TRUNCATE that refills part of the table. With reconnect,
// PostgreSQL may restart under it: a write that loses its connection is
// dropped (or not: the tests compare with what PostgreSQL holds in the end)
// and the writer connects again.
func writer(ctx context.Context, t *testing.T, dbURL string, seed int64, truncates, reconnect bool, n *atomic.Int64, mu *sync.RWMutex) {
	c := connectWriter(ctx, t, dbURL, reconnect)
	if c == nil {
		return
	}
	defer func() { c.Close(context.Background()) }()
	rng := rand.New(rand.NewSource(seed))
	for ctx.Err() == nil {
		a, b := rng.Intn(3000)+1, rng.Intn(3000)+1
		k := fmt.Sprintf("%d.%d", rng.Intn(300), rng.Intn(4))
		var sqls []string
		switch op := rng.Intn(100); {
		case op < 16:
			sqls = []string{fmt.Sprintf(`INSERT INTO kv VALUES (%d, %d, repeat('x', %d)) ON CONFLICT DO NOTHING`, a, rng.Intn(1000), rng.Intn(50))}
		case op < 20:
			// One row changed several times in one transaction (document_deltas
			// collapses it): inserted, updated, moved to another key.
			c := rng.Intn(3000) + 3001
			sqls = []string{"BEGIN", fmt.Sprintf(`INSERT INTO kv VALUES (%d, 1, 'multi') ON CONFLICT DO NOTHING`, a),
				fmt.Sprintf(`UPDATE kv SET v = v + 1 WHERE id = %d`, a),
				fmt.Sprintf(`UPDATE kv SET id = %d WHERE id = %d AND NOT EXISTS (SELECT 1 FROM kv WHERE id = %d)`, c, a, c), "COMMIT"}
		case op < 45:
			sqls = []string{fmt.Sprintf(`UPDATE kv SET v = v + 1, pad = pad || 'u' WHERE id = %d`, a)}
		case op < 55:
			sqls = []string{fmt.Sprintf(`UPDATE kv SET id = %d WHERE id = %d AND NOT EXISTS (SELECT 1 FROM kv WHERE id = %d)`, b, a, b)}
		case op < 65:
			sqls = []string{fmt.Sprintf(`DELETE FROM kv WHERE id = %d`, a)}
		case op < 72:
			sqls = []string{"BEGIN", fmt.Sprintf(`UPDATE kv SET v = v - 1 WHERE id = %d`, a), fmt.Sprintf(`DELETE FROM kv WHERE id = %d`, b),
				fmt.Sprintf(`INSERT INTO kv VALUES (%d, 7, 'txn') ON CONFLICT (id) DO UPDATE SET v = kv.v + 7`, b), "COMMIT"}
		case op < 80:
			sqls = []string{fmt.Sprintf(`INSERT INTO nk VALUES (%s, 's%d', %d) ON CONFLICT DO NOTHING`, k, a%7, rng.Intn(100))}
		case op < 88:
			sqls = []string{fmt.Sprintf(`UPDATE nk SET v = v + 1 WHERE k = %s`, k)}
		case op < 93:
			sqls = []string{fmt.Sprintf(`UPDATE nk SET k = k + 1000 WHERE k = %s AND NOT EXISTS (SELECT 1 FROM nk WHERE k = %s + 1000)`, k, k)}
		case op < 99:
			sqls = []string{fmt.Sprintf(`DELETE FROM nk WHERE k = %s`, k)}
		default:
			if !truncates {
				continue
			}
			sqls = []string{"BEGIN", `TRUNCATE kv`, fmt.Sprintf(`INSERT INTO kv SELECT g, g, 'after truncate' FROM generate_series(%d, %d) g`, a, a+300), "COMMIT"}
		}
		// A TRUNCATE runs alone: it would deadlock with the other writer's row locks.
		lock, unlock := mu.RLock, mu.RUnlock
		if len(sqls) > 1 && sqls[1] == "TRUNCATE kv" {
			lock, unlock = mu.Lock, mu.Unlock
		}
		lock()
		err := execWrite(c, sqls)
		unlock()
		if err != nil && reconnect && connectionLost(c, err) {
			c.Close(context.Background())
			if c = connectWriter(ctx, t, dbURL, true); c == nil {
				return
			}
			continue
		}
		if err != nil {
			t.Error(err)
			return
		}
		n.Add(1)
	}
}

// execWrite runs one write: a statement, or BEGIN, statements, COMMIT. A
// write that conflicts with another (unique violation, deadlock) is rolled
// back and counts as done.
func execWrite(c *pgx.Conn, sqls []string) error {
	for _, q := range sqls {
		if _, err := c.Exec(context.Background(), q); err != nil {
			var pe *pgconn.PgError
			if errors.As(err, &pe) && (pe.Code == "23505" || pe.Code == "40P01") {
				_, _ = c.Exec(context.Background(), "ROLLBACK")
				return nil
			}
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}

// connectionLost reports whether err means the server went away (a
// restart) rather than a fault of the statement.
func connectionLost(c *pgx.Conn, err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return strings.HasPrefix(pe.Code, "57P") || strings.HasPrefix(pe.Code, "08")
	}
	return c.IsClosed() || pgconn.SafeToRetry(err) || errors.Is(err, io.ErrUnexpectedEOF)
}

// connectWriter connects a writer; with retry, until it succeeds or ctx
// ends (nil then). A failure without retry fails the test (nil).
func connectWriter(ctx context.Context, t *testing.T, dbURL string, retry bool) *pgx.Conn {
	for {
		c, err := pgx.Connect(ctx, dbURL)
		if err == nil {
			return c
		}
		if !retry {
			t.Error(err)
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// tableState is what PostgreSQL holds now in kv and nk, by document _id.
func tableState(t *testing.T, conn *pgx.Conn) map[string]string {
	t.Helper()
	return queryState(t, conn, `
		SELECT '"public"."kv"/"' || id || '"', v || '/' || coalesce(pad, '<nil>') FROM kv
		UNION ALL SELECT '"public"."nk"/"' || k || '"/"' || s || '"', v::text FROM nk`)
}

// queryState runs a query of (document _id, value) pairs into a map.
func queryState(t *testing.T, conn *pgx.Conn, query string) map[string]string {
	t.Helper()
	want := map[string]string{}
	rows, err := conn.Query(context.Background(), query)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, v string
		if err := rows.Scan(&id, &v); err != nil {
			t.Fatal(err)
		}
		want[id] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return want
}

func docValue(d doc) string {
	if d["_table"] == "kv" {
		pad := "<nil>"
		if d["pad"] != nil {
			pad = fmt.Sprint(d["pad"])
		}
		return fmt.Sprint(d["v"]) + "/" + pad
	}
	return fmt.Sprint(d["v"])
}

// writerTables makes a database with the tables writer changes: kv, keyed
// by an integer, and nk, by a numeric and a text (PostgreSQL, not Go,
// decides which page such a key is in), plus marker.
func writerTables(t *testing.T) (string, *pgx.Conn) {
	t.Helper()
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE kv (id int PRIMARY KEY, v int NOT NULL, pad text)`)
	mustExec(t, conn, `CREATE TABLE nk (k numeric, s text, v int, PRIMARY KEY (k, s))`)
	mustExec(t, conn, `CREATE TABLE marker (id int PRIMARY KEY)`)
	mustExec(t, conn, `INSERT INTO kv SELECT g, g, 'seed' FROM generate_series(1, 2000) g`)
	mustExec(t, conn, `INSERT INTO nk SELECT g / 10.0, 's' || (g % 7), g FROM generate_series(1, 1500) g`)
	return dbURL, conn
}

// TestDurableSnapshotUnderWritesAndKills is the property the snapshot
// design rests on: with writers changing the tables between and during
// pages (inserts, updates, key changes, deletes, TRUNCATE) and the engine
// killed with SIGKILL at random moments, each snapshot plus the changes
// after its ts is exactly the table, in every trial.
func TestDurableSnapshotUnderWritesAndKills(t *testing.T) {
	dbURL, conn := writerTables(t)
	p := &engineProc{t: t, dbURL: dbURL, dir: t.TempDir(), port: freePort(t)}
	p.cmd = runEngine(t, dbURL, p.dir, p.port)

	trials := 3
	if testing.Short() {
		trials = 1
	}
	for trial := range trials {
		rng := rand.New(rand.NewSource(int64(trial)))
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		var mu sync.RWMutex
		var writes atomic.Int64
		for w := range 2 {
			wg.Add(1)
			go func() { defer wg.Done(); writer(ctx, t, dbURL, int64(trial*10+w), trial > 0, false, &writes, &mu) }()
		}
		time.Sleep(100 * time.Millisecond)
		snaps := map[string][]doc{}
		tss := map[string]int64{}
		for _, table := range []string{"kv", "nk"} {
			snaps[table], tss[table] = readSnapshotThroughKills(t, p, table, 23+rng.Intn(40), rng)
		}
		time.Sleep(100 * time.Millisecond)
		cancel()
		wg.Wait()
		mustExec(t, conn, `INSERT INTO marker VALUES ($1)`, trial)
		want := tableState(t, conn)
		checkReplica(t, p.base(), snaps, tss, trial, want, docValue, fmt.Sprintf("trial %d", trial))
		t.Logf("trial %d: %d rows equal; %d writes, %d engine kills so far", trial, len(want), writes.Load(), p.kills)
		if p.kills < 2*(trial+1) { // at least one per snapshot walk
			t.Fatalf("trial %d: only %d engine kills", trial, p.kills)
		}
	}
}

// checkReplica is the contract snapshot + deltas = table: for each table,
// its snapshot (snaps) plus the deltas after its ts (tss), read up to the
// row with id mark in table marker, must be exactly want (by _id, documents
// rendered by value), and no document may be twice in a snapshot.
func checkReplica(t *testing.T, base string, snaps map[string][]doc, tss map[string]int64, mark int, want map[string]string, value func(doc) string, label string) {
	t.Helper()
	got := map[string]string{}
	for table, snap := range snaps {
		deltas := waitDeltas(t, base, tss[table], url.Values{}, func(d []doc) bool {
			for _, x := range d {
				if x["_table"] == "marker" && x["id"] == float64(mark) {
					return true
				}
			}
			return false
		})
		var mine []doc
		for _, d := range deltas {
			if d["_table"] == table {
				mine = append(mine, d)
			}
		}
		state := map[string]doc{}
		apply(state, snap)
		apply(state, mine)
		for id, d := range state {
			got[id] = value(d)
		}
		// Nothing twice: one document per key in the snapshot.
		seen := map[string]bool{}
		for _, d := range snap {
			id := d["_id"].(string)
			if seen[id] {
				t.Fatalf("%s: %s is twice in the snapshot of %s", label, id, table)
			}
			seen[id] = true
		}
	}
	if diffs := stateDiff(want, got); len(diffs) > 0 {
		t.Fatalf("%s: %d of %d rows differ, e.g. %v", label, len(diffs), len(want), diffs[:min(8, len(diffs))])
	}
}

// stateDiff lists how got (the replica) differs from want (the database),
// sorted.
func stateDiff(want, got map[string]string) []string {
	var diffs []string
	for id, w := range want {
		if g, ok := got[id]; !ok || g != w {
			diffs = append(diffs, fmt.Sprintf("%s: replica %q, database %q", id, g, w))
		}
	}
	for id, g := range got {
		if _, ok := want[id]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: replica %q, not in the database", id, g))
		}
	}
	sort.Strings(diffs)
	return diffs
}

// TestDeferrableKeyIsReadFromAHeldSnapshot: under a DEFERRABLE primary key a
// row can arrive at a key before the key's old row leaves, so the log
// cannot turn such a table back; it is read from a held snapshot, and
// exactly, while a key-shifting update runs between pages.
func TestDeferrableKeyIsReadFromAHeldSnapshot(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE shifty (id int PRIMARY KEY DEFERRABLE, v text)`)
	mustExec(t, conn, `INSERT INTO shifty SELECT g, 'v' || g FROM generate_series(1, 300) g`)
	e := startEngine(t, dbURL)
	docs, _, _ := walkSnapshot(t, e.URL(), url.Values{"tableName": {"shifty"}, "limit": {"50"}}, func(pages int) {
		if pages == 1 {
			mustExec(t, conn, `UPDATE shifty SET id = id + 1`)
		}
	})
	got := map[string]bool{}
	for _, d := range docs {
		got[fmt.Sprintf("%v=%v", d["id"], d["v"])] = true
	}
	for i := 1; i <= 300; i++ {
		if !got[fmt.Sprintf("%d=v%d", i, i)] {
			t.Fatalf("row %d as it was at the snapshot is missing; got %d documents", i, len(docs))
		}
	}
	if len(docs) != 300 {
		t.Fatalf("%d documents, want 300", len(docs))
	}
	r := get(t, e.URL(), "/api/list_snapshot", url.Values{"tableName": {"shifty"}, "limit": {"50"}})
	var page snapshotPage
	r.decode(t, &page)
	if page.Cursor == nil || !strings.Contains(*page.Cursor, `"held"`) {
		t.Fatalf("a deferrable key's snapshot is not held: %s", r.Body)
	}
}
