package integration_tests

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/shapelog/shapelog/internal/connectortest"
	"github.com/shapelog/shapelog/internal/pgtest"
)

// This file drives the features of Electric's 1.5 clients that apps and
// TanStack DB rely on: live mode over SSE, log=changes_only with subset
// snapshots (requestSnapshot/fetchSnapshot, GET and POST), and the errors a
// client reports.

// snapshot sends a snapshot command (requestSnapshot or fetchSnapshot) to
// the client and waits for its answer.
func (c *electricClient) snapshot(cmd string, opts map[string]any) clientEvent {
	c.t.Helper()
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	c.mu.Unlock()
	line, err := json.Marshal(map[string]any{"id": id, "cmd": cmd, "opts": opts})
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.stdin.Write(append(line, '\n')); err != nil {
		c.t.Fatal(err)
	}
	return c.waitEvent(fmt.Sprintf("%s %v", cmd, opts), func(ev clientEvent) bool {
		return (ev.Event == "snapshot" || ev.Event == "snapshot-error") && ev.ID == id
	})
}

// countFetches counts the client's HTTP responses whose URL contains part.
func (c *electricClient) countFetches(part string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, ev := range c.events {
		if ev.Event == "fetch" && strings.Contains(ev.URL, part) {
			n++
		}
	}
	return n
}

// changesOf counts the change events of one key from event from on.
func (c *electricClient) changesOf(key string, from int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, ev := range c.events[from:] {
		if ev.Event == "change" && ev.Key == key {
			n++
		}
	}
	return n
}

// indexOf is the index of the first event satisfying pred, or -1.
func (c *electricClient) indexOf(pred func(clientEvent) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, ev := range c.events {
		if pred(ev) {
			return i
		}
	}
	return -1
}

func TestElectricClientLiveSSE(t *testing.T) {
	requireElectricClient(t)
	dbURL := pgtest.NewDatabase(t)
	conn := connectortest.Connect(t, dbURL)
	connectortest.Exec(t, conn, `CREATE TABLE items (id int4 PRIMARY KEY, title text)`)
	connectortest.Exec(t, conn, `INSERT INTO items VALUES (1, 'one'), (2, 'two')`)
	t.Setenv("SHAPELOG_LONG_POLL_TIMEOUT", "2s")
	e := connectortest.RunEngineBinary(t, dbURL)
	c := startElectricClientWith(t, "sse", e.URL, jsRow{"table": "items", "secret": connectortest.AccessKey}, jsRow{"liveSse": true})
	c.waitRows("initial sync", rowsAre(map[string]jsRow{"1": {"title": "one"}, "2": {"title": "two"}}))
	c.waitEvent("an SSE request", func(ev clientEvent) bool {
		return ev.Event == "fetch" && strings.Contains(ev.URL, "live_sse=true") && ev.Status == 200
	})
	sse := c.countFetches("live_sse=true")

	connectortest.Exec(t, conn, `INSERT INTO items VALUES (3, 'three')`)
	connectortest.Exec(t, conn, `UPDATE items SET title = 'uno' WHERE id = 1`)
	connectortest.Exec(t, conn, `DELETE FROM items WHERE id = 2`)
	c.waitRows("insert, update and delete over SSE", rowsAre(map[string]jsRow{"1": {"title": "uno"}, "3": {"title": "three"}}))
	if n := c.countFetches("live_sse=true"); n != sse {
		t.Errorf("%d SSE requests for three changes, want them all on the one open stream", n-sse)
	}

	// The engine restarts: the client reconnects from where it was and
	// misses nothing written meanwhile.
	e.Kill9()
	connectortest.Exec(t, conn, `INSERT INTO items VALUES (4, 'four')`)
	e.Restart()
	connectortest.Exec(t, conn, `UPDATE items SET title = 'tres' WHERE id = 3`)
	c.waitRows("after the engine restarted", rowsAre(map[string]jsRow{"1": {"title": "uno"}, "3": {"title": "tres"}, "4": {"title": "four"}}))
	if n := c.countFetches("live_sse=true"); n <= sse {
		t.Errorf("no SSE request after the restart")
	}
}

func TestElectricClientSubsetSnapshots(t *testing.T) {
	requireElectricClient(t)
	dbURL := pgtest.NewDatabase(t)
	conn := connectortest.Connect(t, dbURL)
	connectortest.Exec(t, conn, `CREATE TABLE items (id int4 PRIMARY KEY, title text, priority int4 NOT NULL)`)
	connectortest.Exec(t, conn, `INSERT INTO items SELECT g, 'item ' || g, g % 5 FROM generate_series(1, 50) g`)
	t.Setenv("SHAPELOG_LONG_POLL_TIMEOUT", "2s")
	e := connectortest.RunEngineBinary(t, dbURL)
	params := jsRow{"table": "items", "secret": connectortest.AccessKey}

	// Each method works on its own rows: the shape (and its log) is shared.
	for _, tc := range []struct {
		method, priority       string
		top                    float64 // the highest id of that priority
		page                   [2]string
		before, during, tiebrk string
	}{
		{"GET", "4", 49, [2]string{"9", "14"}, "20", "25", "9"},
		{"POST", "3", 48, [2]string{"8", "13"}, "21", "26", "8"},
	} {
		t.Run(tc.method, func(t *testing.T) {
			c := startElectricClientWith(t, "changes_only "+tc.method, e.URL, params, jsRow{"log": "changes_only", "liveSse": true})
			c.waitRows("changes_only starts empty", rowsAre(map[string]jsRow{}))

			// fetchSnapshot returns rows without merging them.
			ev := c.snapshot("fetchSnapshot", jsRow{"where": "priority = $1", "params": jsRow{"1": tc.priority}, "orderBy": "id DESC", "limit": 3, "method": tc.method})
			if ev.Event != "snapshot" || len(ev.Data) != 3 || ev.Data[0].Value["id"] != tc.top || ev.Metadata["snapshot_mark"] == nil {
				t.Fatalf("fetchSnapshot: %s", ev.raw)
			}
			// requestSnapshot merges them into the shape's rows.
			ev = c.snapshot("requestSnapshot", jsRow{"where": "priority = $1", "params": jsRow{"1": tc.priority}, "orderBy": "id", "limit": 2, "offset": 1, "method": tc.method})
			if ev.Event != "snapshot" || len(ev.Data) != 2 {
				t.Fatalf("requestSnapshot: %s", ev.raw)
			}
			rows := map[string]jsRow{tc.page[0]: {"title": "item " + tc.page[0]}, tc.page[1]: {"title": "item " + tc.page[1]}}
			c.waitRows("rows of the subset", rowsAre(rows))

			// A change to a row of the subset, committed while the subset is
			// read, is applied once; a change committed before it is in the
			// subset's rows and not applied again.
			inFlight := connectortest.Connect(t, dbURL)
			connectortest.Exec(t, conn, `UPDATE items SET title = 'before' WHERE id = `+tc.before)
			connectortest.Exec(t, inFlight, `BEGIN`)
			connectortest.Exec(t, inFlight, `UPDATE items SET title = 'during' WHERE id = `+tc.during)
			ev = c.snapshot("requestSnapshot", jsRow{"where": "id IN (" + tc.before + ", " + tc.during + ")", "method": tc.method})
			if ev.Event != "snapshot" || len(ev.Data) != 2 {
				t.Fatalf("requestSnapshot during a transaction: %s", ev.raw)
			}
			connectortest.Exec(t, inFlight, `COMMIT`)
			rows[tc.before], rows[tc.during] = jsRow{"title": "before"}, jsRow{"title": "during"}
			c.waitRows("the update committed during the snapshot", rowsAre(rows))
			// A later change shows the stream has moved past both updates.
			connectortest.Exec(t, conn, `UPDATE items SET title = 'sentinel' WHERE id = `+tc.tiebrk)
			rows[tc.tiebrk] = jsRow{"title": "sentinel"}
			c.waitRows("a later change", rowsAre(rows))
			// After the subset's rows: no change for the row updated before
			// it (the log's update is in the rows and dropped as seen), one
			// for the row updated during it.
			after := c.indexOf(func(e clientEvent) bool { return e.Event == "snapshot" && e.ID == ev.ID }) + 1
			beforeKey, duringKey := `"public"."items"/"`+tc.before+`"`, `"public"."items"/"`+tc.during+`"`
			if nb, nd := c.changesOf(beforeKey, after), c.changesOf(duringKey, after); nb != 0 || nd != 1 {
				c.mu.Lock()
				t.Errorf("changes after the subset: row %s %d (want 0), row %s %d (want 1)\n%s", tc.before, nb, tc.during, nd, c.describe())
				c.mu.Unlock()
			}
			if tc.method == "POST" && c.countFetches("subset__") > 0 {
				t.Errorf("POST snapshots sent subset parameters in the URL")
			}
		})
	}

	t.Run("bad subsets are the client's errors", func(t *testing.T) {
		c := startElectricClientWith(t, "bad subsets", e.URL, params, jsRow{"log": "changes_only"})
		c.waitRows("changes_only starts empty", rowsAre(map[string]jsRow{}))
		for _, opts := range []jsRow{
			{"limit": 2},          // order_by is required with limit
			{"where": "id >"},     // a syntax error
			{"where": "nope = 1"}, // an unknown column
			{"where": "id / (priority - priority) = 1"}, // fails at run time
		} {
			ev := c.snapshot("fetchSnapshot", opts)
			if ev.Event != "snapshot-error" || ev.Status != 400 {
				t.Errorf("fetchSnapshot %v: %s, want a 400", opts, ev.raw)
			}
		}
	})
}

func TestElectricClientShapeFaults(t *testing.T) {
	requireElectricClient(t)
	dbURL := pgtest.NewDatabase(t)
	conn := connectortest.Connect(t, dbURL)
	connectortest.Exec(t, conn, `CREATE TABLE doomed (id int4 PRIMARY KEY, title text)`)
	connectortest.Exec(t, conn, `INSERT INTO doomed VALUES (1, 'one')`)
	t.Setenv("SHAPELOG_LONG_POLL_TIMEOUT", "2s")
	e := connectortest.RunEngineBinary(t, dbURL)
	params := func(table string) jsRow { return jsRow{"table": table, "secret": connectortest.AccessKey} }

	t.Run("a dropped table's shape does not block new shapes", func(t *testing.T) {
		old := startElectricClient(t, "doomed", e.URL, params("doomed"))
		old.waitRows("initial sync", rowsAre(map[string]jsRow{"1": {"title": "one"}}))
		connectortest.Exec(t, conn, `DROP TABLE doomed`)
		connectortest.Exec(t, conn, `CREATE TABLE fresh (id int4 PRIMARY KEY, title text)`)
		connectortest.Exec(t, conn, `INSERT INTO fresh VALUES (7, 'seven')`)
		fresh := startElectricClient(t, "fresh", e.URL, params("fresh"))
		fresh.waitRows("a new table's shape", rowsAre(map[string]jsRow{"7": {"title": "seven"}}))
		connectortest.Exec(t, conn, `INSERT INTO fresh VALUES (8, 'eight')`)
		fresh.waitRows("live on the new table", rowsAre(map[string]jsRow{"7": {"title": "seven"}, "8": {"title": "eight"}}))
	})

	t.Run("a where error names its position in the client's string", func(t *testing.T) {
		connectortest.Exec(t, conn, `CREATE TABLE items (id int4 PRIMARY KEY, title text)`)
		p := params("items")
		p["where"] = "id = 1 AND title = "
		c := startElectricClient(t, "bad where", e.URL, p)
		ev := c.waitEvent("the where error", func(ev clientEvent) bool { return ev.Event == "error" })
		if ev.Status != 400 || !strings.Contains(ev.raw, "At location 19") {
			t.Errorf("where error: %s, want a 400 at location 19", ev.raw)
		}
	})
}
