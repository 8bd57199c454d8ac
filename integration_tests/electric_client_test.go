package integration_tests

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shapelog/shapelog/engine/client"
	"github.com/shapelog/shapelog/internal/connectortest"
	"github.com/shapelog/shapelog/internal/pgtest"
)

// This file drives Electric's real TypeScript client (@electric-sql/client,
// pinned in electric/package.json) with Node against the engine binary:
// electric/sync.mjs follows one shape and prints what the client
// materialises, and the tests assert on those rows.

// syncedBuffer is a bytes.Buffer safe for a process to write while a test
// reads it.
type syncedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncedBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncedBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// engineProcess is the engine binary (`shapelog serve`) run by a test.
type engineProcess struct {
	URL    string
	stderr *syncedBuffer
}

// startEngineProcess runs the engine binary on dbURL with extra environment
// (e.g. SHAPELOG_LONG_POLL_TIMEOUT=2s) and stops it (SIGTERM) when the test
// ends. Like connectortest.StartEngineBinary, whose signature takes no
// environment; the shape secret defaults to connectortest.AccessKey.
func startEngineProcess(t *testing.T, dbURL string, env ...string) *engineProcess {
	t.Helper()
	bin := connectortest.Binary(t, "engine/cmd/shapelog")
	port, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(dbURL))
	slot := "shapelog_it_" + hex.EncodeToString(sum[:8])
	cmd := exec.Command(bin, "serve", "--port", strconv.Itoa(port), "--storage-dir", t.TempDir(),
		"--slot", slot, "--publication", slot, "--log-level", "warn", "--log-format", "console")
	cmd.Env = append(append(os.Environ(), "DATABASE_URL="+dbURL, "SHAPELOG_ACCESS_KEY="+connectortest.AccessKey), env...)
	p := &engineProcess{URL: fmt.Sprintf("http://127.0.0.1:%d", port), stderr: &syncedBuffer{}}
	cmd.Stdout, cmd.Stderr = p.stderr, p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("engine output:\n%s", p.stderr.String())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := client.WaitHealthy(ctx, p.URL); err != nil {
		t.Fatalf("engine binary: %v\n%s", err, p.stderr.String())
	}
	return p
}

var (
	npmMu  sync.Mutex
	npmErr error
	npmRan bool
)

// electricDir is integration_tests/electric, where the pinned client lives.
func electricDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("electric")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// requireElectricClient skips the test without Node.js and otherwise makes
// sure electric/node_modules matches package-lock.json: `npm ci` runs only
// when node_modules is missing or the lock file changed since the last run
// (its hash is stamped into node_modules).
func requireElectricClient(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("skipping: `node` is not installed; the Electric client test needs Node.js 18+ and npm (see .ci/run)")
	}
	dir := electricDir(t)
	npmMu.Lock()
	defer npmMu.Unlock()
	if npmRan {
		if npmErr != nil {
			t.Fatal(npmErr)
		}
		return dir
	}
	npmRan = true
	lock, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		npmErr = err
		t.Fatal(err)
	}
	sum := sha256.Sum256(lock)
	want := hex.EncodeToString(sum[:])
	stamp := filepath.Join(dir, "node_modules", ".shapelog-package-lock.sha256")
	got, _ := os.ReadFile(stamp)
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@electric-sql", "client", "package.json")); err == nil && string(got) == want {
		return dir
	}
	if _, err := exec.LookPath("npm"); err != nil {
		t.Skip("skipping: `npm` is not installed; it is needed once to install the pinned @electric-sql/client")
	}
	cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		npmErr = fmt.Errorf("npm ci in %s: %v\n%s", dir, err, out)
		t.Fatal(npmErr)
	}
	if err := os.WriteFile(stamp, []byte(want), 0o644); err != nil {
		npmErr = err
		t.Fatal(err)
	}
	return dir
}

// clientEvent is one line printed by electric/sync.mjs.
type clientEvent struct {
	Event     string           `json:"event"`
	Rows      []map[string]any `json:"rows"`
	Handle    string           `json:"handle"`
	Offset    string           `json:"offset"`
	Operation string           `json:"operation"`
	Key       string           `json:"key"`
	Value     map[string]any   `json:"value"`
	OldValue  map[string]any   `json:"old_value"`
	Status    int              `json:"status"`
	Method    string           `json:"method"`
	URL       string           `json:"url"`
	Message   string           `json:"message"`
	ID        int              `json:"id"`
	Metadata  map[string]any   `json:"metadata"`
	Data      []clientEvent    `json:"data"`
	Headers   map[string]any   `json:"headers"`
	raw       string
}

// electricClient is one running sync.mjs: Electric's client following a
// shape.
type electricClient struct {
	t      *testing.T
	name   string
	idKey  string // the column rows are indexed by
	mu     sync.Mutex
	rows   []map[string]any
	events []clientEvent // everything but rows
	stderr *syncedBuffer
	wake   chan struct{}
	stdin  io.WriteCloser
	nextID int
}

// startElectricClient starts Electric's client on one shape of the engine
// at baseURL. params are the ShapeStream params (table, where, params,
// columns, replica, secret). Rows are indexed by their "id" column.
func startElectricClient(t *testing.T, name, baseURL string, params map[string]any) *electricClient {
	t.Helper()
	return startElectricClientWith(t, name, baseURL, params, nil)
}

// startElectricClientWith is startElectricClient with ShapeStream options
// (liveSse, log, subsetMethod…).
func startElectricClientWith(t *testing.T, name, baseURL string, params, options map[string]any) *electricClient {
	t.Helper()
	dir := requireElectricClient(t)
	p, err := json.Marshal(params)
	if err != nil {
		t.Fatal(err)
	}
	o, err := json.Marshal(options)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", "sync.mjs", baseURL, string(p), string(o))
	cmd.Dir = dir
	c := &electricClient{t: t, name: name, idKey: "id", stderr: &syncedBuffer{}, wake: make(chan struct{}, 1)}
	cmd.Stderr = c.stderr
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	go func() {
		s := bufio.NewScanner(stdout)
		s.Buffer(nil, 64<<20)
		for s.Scan() {
			var ev clientEvent
			if err := json.Unmarshal(s.Bytes(), &ev); err != nil {
				ev = clientEvent{Event: "unparsed", Message: s.Text()}
			}
			c.mu.Lock()
			if ev.Event == "rows" {
				c.rows = ev.Rows
				if c.rows == nil {
					c.rows = []map[string]any{}
				}
			} else {
				ev.raw = s.Text()
				c.events = append(c.events, ev)
			}
			c.mu.Unlock()
			select {
			case c.wake <- struct{}{}:
			default:
			}
		}
	}()
	return c
}

// byID indexes rows by the client's id column (int8 ids print as "5n").
func (c *electricClient) byID() map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, r := range c.rows {
		out[fmt.Sprint(r[c.idKey])] = r
	}
	return out
}

// errorEvent returns the first error the client reported, if any.
func (c *electricClient) errorEvent() *clientEvent {
	for i := range c.events {
		if c.events[i].Event == "error" || c.events[i].Event == "unparsed" {
			return &c.events[i]
		}
	}
	return nil
}

// describe summarises the client's state for failure messages.
func (c *electricClient) describe() string {
	rows, _ := json.Marshal(c.byID())
	var b strings.Builder
	fmt.Fprintf(&b, "client %q rows: %s\nlast events:\n", c.name, rows)
	from := max(0, len(c.events)-25)
	for _, ev := range c.events[from:] {
		fmt.Fprintf(&b, "  %s\n", ev.raw)
	}
	if s := c.stderr.String(); s != "" {
		fmt.Fprintf(&b, "node stderr:\n%s", s)
	}
	return b.String()
}

// waitRows waits until the client's materialised rows (shape.currentRows
// after an up-to-date) satisfy pred; pred returns "" when they do, or
// what is still missing.
func (c *electricClient) waitRows(what string, pred func(rows map[string]map[string]any) string) {
	c.t.Helper()
	deadline := time.After(45 * time.Second)
	for {
		c.mu.Lock()
		var missing string
		if c.rows == nil {
			missing = "no up-to-date yet"
		} else {
			missing = pred(c.byID())
		}
		errEv := c.errorEvent()
		state := c.describe()
		c.mu.Unlock()
		if errEv != nil {
			c.t.Fatalf("%s: the Electric client failed: %s\n%s", what, errEv.raw, state)
		}
		if missing == "" {
			return
		}
		select {
		case <-c.wake:
		case <-time.After(250 * time.Millisecond):
		case <-deadline:
			c.t.Fatalf("%s: the Electric client never got there (%s)\n%s", what, missing, state)
		}
	}
}

// waitEvent waits for an event (other than rows) satisfying pred.
func (c *electricClient) waitEvent(what string, pred func(ev clientEvent) bool) clientEvent {
	c.t.Helper()
	deadline := time.After(45 * time.Second)
	for {
		c.mu.Lock()
		for _, ev := range c.events {
			if pred(ev) {
				c.mu.Unlock()
				return ev
			}
		}
		state := c.describe()
		c.mu.Unlock()
		select {
		case <-c.wake:
		case <-time.After(250 * time.Millisecond):
		case <-deadline:
			c.t.Fatalf("%s: the Electric client never reported it\n%s", what, state)
		}
	}
}

// countEvents counts the events named name.
func (c *electricClient) countEvents(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, ev := range c.events {
		if ev.Event == name {
			n++
		}
	}
	return n
}

// rowsAre checks the rows' ids and, for each, the listed column values.
func rowsAre(want map[string]map[string]any) func(map[string]map[string]any) string {
	return func(rows map[string]map[string]any) string {
		if len(rows) != len(want) {
			ids := make([]string, 0, len(rows))
			for id := range rows {
				ids = append(ids, id)
			}
			sort.Strings(ids)
			return fmt.Sprintf("ids %v, want %d rows", ids, len(want))
		}
		for id, cols := range want {
			r, ok := rows[id]
			if !ok {
				return "row " + id + " missing"
			}
			for col, v := range cols {
				if got, ok := r[col]; !ok || !reflect.DeepEqual(got, v) {
					return fmt.Sprintf("row %s column %s = %#v, want %#v", id, col, got, v)
				}
			}
		}
		return ""
	}
}

// onlyColumns checks that every row has exactly the columns cols.
func onlyColumns(cols ...string) func(map[string]map[string]any) string {
	return func(rows map[string]map[string]any) string {
		for id, r := range rows {
			if len(r) != len(cols) {
				return fmt.Sprintf("row %s has columns %v, want %v", id, keysOf(r), cols)
			}
			for _, c := range cols {
				if _, ok := r[c]; !ok {
					return fmt.Sprintf("row %s has columns %v, want %v", id, keysOf(r), cols)
				}
			}
		}
		return ""
	}
}

func keysOf(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func allOf(preds ...func(map[string]map[string]any) string) func(map[string]map[string]any) string {
	return func(rows map[string]map[string]any) string {
		for _, p := range preds {
			if m := p(rows); m != "" {
				return m
			}
		}
		return ""
	}
}

// jsRow builds the expected columns of one row.
type jsRow = map[string]any

func TestElectricClient(t *testing.T) {
	requireElectricClient(t)
	dbURL := pgtest.NewDatabase(t)
	conn := connectortest.Connect(t, dbURL)
	connectortest.Exec(t, conn, `CREATE TABLE items (id int4 PRIMARY KEY, title text, priority int4 NOT NULL, done bool)`)
	connectortest.Exec(t, conn, `INSERT INTO items VALUES (1, 'one', 1, false), (2, 'two', 3, true), (3, 'three', 5, false)`)
	connectortest.Exec(t, conn, `CREATE TABLE "MixedCase" ("Id" int8 PRIMARY KEY, "isDone" bool NOT NULL, doc jsonb, tags text[], nums int4[],
		grid int2[][], big int8, ratio float8, amount numeric(10,2), note varchar(20), "When" timestamptz, "Empty" jsonb)`)
	connectortest.Exec(t, conn, `INSERT INTO "MixedCase" VALUES
		(9007199254740993, true, '{"a": [1, {"b": null}], "s": "x\"y"}', '{"a b",NULL,"c,d","{e}"}', '{1,-2,3}',
		 '{{1,2},{3,4}}', -9223372036854775808, 1.5, 12.30, 'hé', '2024-01-02 03:04:05+00', 'null'),
		(2, false, NULL, '{}', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)`)
	e := startEngineProcess(t, dbURL, "SHAPELOG_LONG_POLL_TIMEOUT=2s")
	secret := connectortest.AccessKey

	everything := startElectricClient(t, "items", e.URL, jsRow{"table": "items", "secret": secret})
	filtered := startElectricClient(t, "priority > $1", e.URL, jsRow{"table": "items", "secret": secret,
		"where": "priority > $1", "params": map[string]string{"1": "2"}})
	narrow := startElectricClient(t, "columns=id,title", e.URL, jsRow{"table": "items", "secret": secret, "columns": "id,title"})
	full := startElectricClient(t, "replica=full", e.URL, jsRow{"table": "items", "secret": secret, "replica": "full"})
	mixed := startElectricClient(t, `"MixedCase"`, e.URL, jsRow{"table": `"MixedCase"`, "secret": secret})
	mixed.idKey = "Id"

	// Initial sync: int4 → number, bool → boolean, text → string.
	everything.waitRows("initial sync", rowsAre(map[string]jsRow{
		"1": {"id": 1.0, "title": "one", "priority": 1.0, "done": false},
		"2": {"id": 2.0, "title": "two", "priority": 3.0, "done": true},
		"3": {"id": 3.0, "title": "three", "priority": 5.0, "done": false},
	}))
	filtered.waitRows("initial where-filtered sync", rowsAre(map[string]jsRow{
		"2": {"title": "two"}, "3": {"title": "three"},
	}))
	narrow.waitRows("initial sync with columns", allOf(onlyColumns("id", "title"), rowsAre(map[string]jsRow{
		"1": {"title": "one"}, "2": {"title": "two"}, "3": {"title": "three"},
	})))
	full.waitRows("initial sync with replica=full", rowsAre(map[string]jsRow{
		"1": {"title": "one"}, "2": {"title": "two"}, "3": {"title": "three"},
	}))

	t.Run("electric-schema types", func(t *testing.T) {
		// The client parses values by the electric-schema header: int8 →
		// BigInt (printed "…n"), bool → boolean, jsonb → JSON.parse,
		// arrays → JS arrays of parsed elements, float8 → number,
		// numeric/varchar/timestamptz → strings.
		mixed.waitRows("initial sync of a mixed-case table", rowsAre(map[string]jsRow{
			"9007199254740993n": {
				"Id": "9007199254740993n", "isDone": true,
				"doc":    map[string]any{"a": []any{1.0, map[string]any{"b": nil}}, "s": `x"y`},
				"tags":   []any{"a b", nil, "c,d", "{e}"},
				"nums":   []any{1.0, -2.0, 3.0},
				"grid":   []any{[]any{1.0, 2.0}, []any{3.0, 4.0}},
				"big":    "-9223372036854775808n",
				"ratio":  1.5,
				"amount": "12.30",
				"note":   "hé",
				"When":   "2024-01-02 03:04:05+00",
				"Empty":  nil, // jsonb 'null' parses to null
			},
			"2n": {"Id": "2n", "isDone": false, "doc": nil, "tags": []any{}, "nums": nil, "grid": nil, "big": nil,
				"ratio": nil, "amount": nil, "note": nil, "When": nil},
		}))
		connectortest.Exec(t, conn, `UPDATE "MixedCase" SET doc = '[true, 2.5]', tags = '{z}', "isDone" = true, big = 42 WHERE "Id" = 2`)
		connectortest.Exec(t, conn, `INSERT INTO "MixedCase" ("Id", "isDone", nums) VALUES (3, false, '{7}')`)
		mixed.waitRows("live changes to a mixed-case table", rowsAre(map[string]jsRow{
			"9007199254740993n": {"isDone": true, "big": "-9223372036854775808n"},
			"2n":                {"doc": []any{true, 2.5}, "tags": []any{"z"}, "isDone": true, "big": "42n", "ratio": nil},
			"3n":                {"isDone": false, "nums": []any{7.0}, "doc": nil},
		}))
	})

	t.Run("live insert, update, delete", func(t *testing.T) {
		connectortest.Exec(t, conn, `INSERT INTO items VALUES (4, 'four', 9, false)`)
		everything.waitRows("live insert", rowsAre(map[string]jsRow{
			"1": {"title": "one"}, "2": {"title": "two"}, "3": {"title": "three"},
			"4": {"id": 4.0, "title": "four", "priority": 9.0, "done": false},
		}))
		connectortest.Exec(t, conn, `UPDATE items SET title = 'THREE' WHERE id = 3`)
		connectortest.Exec(t, conn, `UPDATE items SET done = true WHERE id = 1`)
		connectortest.Exec(t, conn, `DELETE FROM items WHERE id = 4`)
		// A default-replica update carries only the changed columns; the
		// client merges them into the row it has.
		everything.waitRows("live update and delete", rowsAre(map[string]jsRow{
			"1": {"id": 1.0, "title": "one", "priority": 1.0, "done": true},
			"2": {"title": "two"},
			"3": {"id": 3.0, "title": "THREE", "priority": 5.0, "done": false},
		}))
		narrow.waitRows("live changes with columns", allOf(onlyColumns("id", "title"), rowsAre(map[string]jsRow{
			"1": {"title": "one"}, "2": {"title": "two"}, "3": {"title": "THREE"},
		})))
		full.waitRows("live changes with replica=full", rowsAre(map[string]jsRow{
			"1": {"done": true}, "2": {"title": "two"}, "3": {"title": "THREE", "priority": 5.0},
		}))
		// replica=full: the update carries the whole new row and the old
		// values of the changed columns; the delete the whole old row.
		upd := full.waitEvent("replica=full update of row 3", func(ev clientEvent) bool {
			return ev.Event == "change" && ev.Operation == "update" && ev.Value["id"] == 3.0
		})
		if !reflect.DeepEqual(upd.Value, jsRow{"id": 3.0, "title": "THREE", "priority": 5.0, "done": false}) ||
			!reflect.DeepEqual(upd.OldValue, jsRow{"title": "three"}) {
			t.Errorf("replica=full update: value %v old_value %v; want the whole new row and old_value {title: three}", upd.Value, upd.OldValue)
		}
		del := full.waitEvent("replica=full delete of row 4", func(ev clientEvent) bool {
			return ev.Event == "change" && ev.Operation == "delete"
		})
		if !reflect.DeepEqual(del.Value, jsRow{"id": 4.0, "title": "four", "priority": 9.0, "done": false}) {
			t.Errorf("replica=full delete: value %v, want the whole old row", del.Value)
		}
		upd = everything.waitEvent("default-replica update of row 3", func(ev clientEvent) bool {
			return ev.Event == "change" && ev.Operation == "update" && ev.Value["id"] == 3.0
		})
		if !reflect.DeepEqual(upd.Value, jsRow{"id": 3.0, "title": "THREE"}) || upd.OldValue != nil {
			t.Errorf("default-replica update: value %v old_value %v; want only the key and changed columns", upd.Value, upd.OldValue)
		}
	})

	t.Run("rows moving in and out of a where clause", func(t *testing.T) {
		filtered.waitRows("before the moves", rowsAre(map[string]jsRow{"2": {"title": "two"}, "3": {"title": "THREE"}}))
		connectortest.Exec(t, conn, `UPDATE items SET priority = 0 WHERE id = 2`) // leaves the shape
		connectortest.Exec(t, conn, `UPDATE items SET priority = 7 WHERE id = 1`) // enters it
		filtered.waitRows("one row out, one in", rowsAre(map[string]jsRow{
			"1": {"id": 1.0, "title": "one", "priority": 7.0, "done": true}, // moved in: the whole row
			"3": {"title": "THREE", "priority": 5.0},
		}))
		connectortest.Exec(t, conn, `UPDATE items SET priority = 2 WHERE id = 3`) // 2 > 2 is false: out
		filtered.waitRows("row 3 out", rowsAre(map[string]jsRow{"1": {"priority": 7.0}}))
		connectortest.Exec(t, conn, `UPDATE items SET priority = 3, title = 'back' WHERE id = 3`)
		connectortest.Exec(t, conn, `INSERT INTO items VALUES (5, 'low', 1, false), (6, 'high', 8, NULL)`)
		filtered.waitRows("row 3 back, only the high insert", rowsAre(map[string]jsRow{
			"1": {"priority": 7.0},
			"3": {"id": 3.0, "title": "back", "priority": 3.0, "done": false},
			"6": {"id": 6.0, "title": "high", "priority": 8.0, "done": nil},
		}))
		everything.waitRows("all rows after the moves", rowsAre(map[string]jsRow{
			"1": {"priority": 7.0}, "2": {"priority": 0.0}, "3": {"title": "back"}, "5": {"title": "low"}, "6": {"title": "high"},
		}))
	})

	t.Run("TRUNCATE forces a resync", func(t *testing.T) {
		clients := []*electricClient{everything, filtered, narrow, full}
		before := make([]int, len(clients))
		for i, c := range clients {
			before[i] = c.countEvents("must-refetch")
		}
		connectortest.Exec(t, conn, `TRUNCATE items`)
		connectortest.Exec(t, conn, `INSERT INTO items VALUES (10, 'after truncate', 3, true), (11, 'low', 0, false)`)
		everything.waitRows("resync after TRUNCATE", rowsAre(map[string]jsRow{
			"10": {"id": 10.0, "title": "after truncate", "priority": 3.0, "done": true}, "11": {"title": "low"},
		}))
		filtered.waitRows("where-filtered resync after TRUNCATE", rowsAre(map[string]jsRow{"10": {"title": "after truncate"}}))
		narrow.waitRows("resync with columns after TRUNCATE", allOf(onlyColumns("id", "title"),
			rowsAre(map[string]jsRow{"10": {"title": "after truncate"}, "11": {"title": "low"}})))
		full.waitRows("replica=full resync after TRUNCATE", rowsAre(map[string]jsRow{"10": {"done": true}, "11": {"done": false}}))
		for i, c := range clients {
			if c.countEvents("must-refetch") <= before[i] {
				c.mu.Lock()
				t.Errorf("client %s resynced without a must-refetch\n%s", c.name, c.describe())
				c.mu.Unlock()
			}
		}
		// …and it keeps following the new shape.
		connectortest.Exec(t, conn, `UPDATE items SET priority = 4 WHERE id = 11`)
		filtered.waitRows("live after the resync", rowsAre(map[string]jsRow{"10": {"title": "after truncate"}, "11": {"title": "low", "priority": 4.0}}))
	})
}
