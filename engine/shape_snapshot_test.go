package engine_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shapelog/shapelog/engine"
	"github.com/shapelog/shapelog/internal/pgtest"
)

// TestShapeSnapshotUnderWritesIsExact: a where-filtered shape taken while
// writers insert, update (moving rows in and out of the where), re-key and
// delete rows ends equal to the query, once the log is followed past the
// writes: the snapshot is read in key-ordered pages turned back to its ts.
func TestShapeSnapshotUnderWritesIsExact(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE acct (id int PRIMARY KEY, balance int NOT NULL, grp int NOT NULL)`)
	mustExec(t, conn, `INSERT INTO acct SELECT g, g, g % 10 FROM generate_series(1, 20000) g`)
	e := startShapeEngine(t, dbURL)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := pgx.Connect(context.Background(), dbURL)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close(context.Background())
			rng := rand.New(rand.NewSource(int64(w)))
			for ctx.Err() == nil {
				a, b := rng.Intn(22000)+1, rng.Intn(22000)+1
				var q string
				switch rng.Intn(5) {
				case 0:
					q = fmt.Sprintf(`INSERT INTO acct VALUES (%d, 0, %d) ON CONFLICT DO NOTHING`, a, rng.Intn(10))
				case 1:
					q = fmt.Sprintf(`UPDATE acct SET grp = %d, balance = balance + 1 WHERE id = %d`, rng.Intn(10), a)
				case 2:
					q = fmt.Sprintf(`UPDATE acct SET id = %d WHERE id = %d AND NOT EXISTS (SELECT 1 FROM acct WHERE id = %d)`, b, a, b)
				case 3:
					q = fmt.Sprintf(`DELETE FROM acct WHERE id = %d`, a)
				default:
					q = fmt.Sprintf(`UPDATE acct SET balance = balance - 1 WHERE id = %d`, a)
				}
				if _, err := c.Exec(context.Background(), q); err != nil && ctx.Err() == nil {
					if pe := (*pgconn.PgError)(nil); !errors.As(err, &pe) || pe.Code != "23505" {
						t.Error(q, err)
						return
					}
				}
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	c := newShapeClient(t, e.URL(), url.Values{"table": {"acct"}, "where": {"grp < 5"}})
	msgs := c.sync()
	time.Sleep(200 * time.Millisecond)
	cancel()
	wg.Wait()
	mustExec(t, conn, `INSERT INTO acct VALUES (1000000, 0, 0)`)
	msgs = append(msgs, c.liveUntil(func(rows map[string]map[string]*string) bool { return rows[`"public"."acct"/"1000000"`] != nil })...)
	// Nothing twice, nothing missing: every insert is of a row the client
	// does not have, every update and delete of one it has.
	have := map[string]bool{}
	for _, m := range msgs {
		switch op := m.Headers["operation"]; op {
		case "insert", "update", "delete":
			if have[m.Key] != (op != "insert") {
				t.Fatalf("%s of %s, which the client %s", op, m.Key, map[bool]string{true: "has", false: "does not have"}[have[m.Key]])
			}
			have[m.Key] = op != "delete"
		}
	}
	want := map[string]string{}
	rows, err := conn.Query(context.Background(), `SELECT id, balance, grp FROM acct WHERE grp < 5`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, bal, grp int
		if err := rows.Scan(&id, &bal, &grp); err != nil {
			t.Fatal(err)
		}
		want[fmt.Sprintf(`"public"."acct"/"%d"`, id)] = fmt.Sprintf("%d/%d", bal, grp)
	}
	if c.refetched > 0 {
		t.Fatalf("the shape was refetched %d times", c.refetched)
	}
	diffs := 0
	for k, w := range want {
		r := c.rows[k]
		if got := str(r["balance"]) + "/" + str(r["grp"]); r == nil || got != w {
			if diffs++; diffs < 5 {
				t.Errorf("%s: shape %v, database %s", k, r, w)
			}
		}
	}
	for k := range c.rows {
		if _, ok := want[k]; !ok {
			if diffs++; diffs < 5 {
				t.Errorf("%s is in the shape, not in the database", k)
			}
		}
	}
	if diffs > 0 {
		t.Fatalf("%d of %d rows differ", diffs, len(want))
	}
	t.Logf("%d rows equal", len(want))
}

// TestShapesAreNotRefusedWhileSnapshotsAreOpen: snapshots left between
// pages hold nothing, so with --max-snapshots 1 taken by a table without a
// key and five keyed list_snapshot reads left unfinished, new shapes are
// still served at once (before, every new shape got 409 in a loop).
func TestShapesAreNotRefusedWhileSnapshotsAreOpen(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE keyed (id int PRIMARY KEY, v int)`)
	mustExec(t, conn, `CREATE TABLE bag (v int)`)
	mustExec(t, conn, `INSERT INTO keyed SELECT g, g FROM generate_series(1, 500) g`)
	mustExec(t, conn, `INSERT INTO bag SELECT g FROM generate_series(1, 500) g`)
	e := startShapeEngine(t, dbURL, func(c *engine.Config) { c.MaxSnapshots = 1 })
	open := func(table string) apiResult {
		return get(t, e.URL(), "/api/list_snapshot", url.Values{"tableName": {table}, "limit": {"10"}})
	}
	if r := open("bag"); r.Status != http.StatusOK {
		t.Fatalf("keyless snapshot: %d %s", r.Status, r.Body)
	}
	if r := open("bag"); r.Status != http.StatusServiceUnavailable || r.errorCode(t) != "TooManySnapshots" {
		t.Fatalf("a second held snapshot past --max-snapshots: %d %s", r.Status, r.Body)
	}
	for range 5 {
		if r := open("keyed"); r.Status != http.StatusOK {
			t.Fatalf("keyed snapshot: %d %s", r.Status, r.Body)
		}
	}
	for i := range 5 {
		c := newShapeClient(t, e.URL(), url.Values{"table": {"keyed"}, "where": {fmt.Sprintf("v > %d", i*100)}})
		c.sync()
		if c.refetched > 0 || len(c.rows) != 500-i*100 {
			t.Fatalf("shape %d: %d rows, %d refetches", i, len(c.rows), c.refetched)
		}
	}
}
