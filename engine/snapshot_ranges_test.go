package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/shapelog/shapelog/engine/client"
	"github.com/shapelog/shapelog/internal/pgtest"
)

// rangedCursor is what the tests look at in a list_snapshot_ranges cursor.
type rangedCursor struct {
	Ts    int64    `json:"ts"`
	Table string   `json:"table"`
	Key   []string `json:"key"`
	Until []string `json:"until"`
}

// TestSnapshotRanges reads tables in ranges, concurrently, after changes
// on and around the split keys and at both ends committed after the
// snapshot: the ranges together are the table as of the snapshot, each row
// once, as a single cursor reads it.
func TestSnapshotRanges(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	// Even keys, so that rows can be inserted next to any of them.
	mustExec(t, conn, `CREATE TABLE items (id int8 PRIMARY KEY, t text)`)
	mustExec(t, conn, `INSERT INTO items SELECT 2 * i, 'v' || i FROM generate_series(1, 50000) i`)
	// A composite key under a collation Go does not order: PostgreSQL
	// compares the keys the rewind brings back.
	var coll string
	if err := conn.QueryRow(context.Background(), `SELECT collname FROM pg_collation WHERE collname IN ('und-x-icu', 'en_US.utf8') ORDER BY collname DESC LIMIT 1`).Scan(&coll); err != nil {
		t.Fatalf("no non-C collation: %v", err)
	}
	mustExec(t, conn, fmt.Sprintf(`CREATE TABLE "Mixed" ("Région" text COLLATE %s, "NumÉro" int, payload text, PRIMARY KEY ("Région", "NumÉro"))`, pgx.Identifier{coll}.Sanitize()))
	regions := []string{"apple", "Apple", "Äpfel", "banana", "Banana", "çedille", "Zürich", "zebra", "Éclair", "éclair", "ångström", "Ωmega",
		"ωmega", "日本", "東京", "straße", "Strasse", "ñandú", "Nandu", "ﬁnal", "🙂smile", "résumé", "resume", "Œuvre", "oeuvre"}
	mustExec(t, conn, `INSERT INTO "Mixed" SELECT r, 2 * i, r || i FROM unnest($1::text[]) r, generate_series(1, 1200) i`, regions)
	// A partitioned table is sampled partition by partition.
	mustExec(t, conn, `CREATE TABLE parted (id int PRIMARY KEY, t text) PARTITION BY RANGE (id)`)
	mustExec(t, conn, `CREATE TABLE parted_low PARTITION OF parted FOR VALUES FROM (0) TO (20000)`)
	mustExec(t, conn, `CREATE TABLE parted_high PARTITION OF parted FOR VALUES FROM (20000) TO (MAXVALUE)`)
	mustExec(t, conn, `INSERT INTO parted SELECT 2 * i, 'p' || i FROM generate_series(1, 20000) i`)
	e := startEngine(t, dbURL)
	c, err := client.New(e.URL(), testKey, client.Options{})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("int", func(t *testing.T) {
		ranges := checkRangedSnapshot(t, c, conn, "items", func(splits [][]string) {
			for _, s := range splits {
				k, _ := strconv.ParseInt(s[0], 10, 64)
				mustExec(t, conn, `DELETE FROM items WHERE id = $1`, k)                          // the split key: back in the range before
				mustExec(t, conn, `UPDATE items SET t = 'changed' WHERE id = $1`, k+2)           // first of the next range
				mustExec(t, conn, `DELETE FROM items WHERE id = $1`, k+4)                        //
				mustExec(t, conn, `UPDATE items SET id = $1 WHERE id = $2`, -k-1, k-2)           // moved to the first range
				mustExec(t, conn, `UPDATE items SET id = $1 WHERE id = $2`, k+1, k-4)            // moved across the split
				mustExec(t, conn, `UPDATE items SET id = $1 WHERE id = $2`, k-5, k+6)            // and back across it
				mustExec(t, conn, `INSERT INTO items VALUES ($1, 'new'), ($2, 'new')`, k-1, k+3) // never in the snapshot
			}
			mustExec(t, conn, `DELETE FROM items WHERE id IN (2, 100000)`)
			mustExec(t, conn, `UPDATE items SET t = 'end' WHERE id IN (4, 99998)`)
			mustExec(t, conn, `INSERT INTO items VALUES (0, 'first'), (100001, 'last')`)
			mustExec(t, conn, `UPDATE items SET t = t || '!' WHERE id % 1000 = 0`)
		})

		// A ranged cursor in protobuf frames: the same documents.
		for i, cur := range ranges.Cursors {
			q := client.ExportQuery{TableName: "items", Snapshot: &ranges.Snapshot, Cursor: &cur, Limit: 700}
			var pdocs []protoDoc
			for {
				p := readProtoPage(t, c, "list_snapshot", q)
				pdocs = append(pdocs, p.docs...)
				if !p.end.HasMore {
					if p.end.Cursor != nil {
						t.Fatalf("range %d: last protobuf page has cursor %q", i, *p.end.Cursor)
					}
					break
				}
				q.Cursor = p.end.Cursor
			}
			var jdocs []json.RawMessage
			req := client.SnapshotRequest{TableName: "items", Snapshot: &ranges.Snapshot, Cursor: &cur, Limit: 700}
			for {
				page, err := c.ListSnapshot(context.Background(), req)
				if err != nil {
					t.Fatal(err)
				}
				jdocs = append(jdocs, page.Values...)
				if !page.HasMore {
					break
				}
				req.Cursor = page.Cursor
			}
			compareDocs(t, fmt.Sprintf("range %d in protobuf", i), pdocs, decodeDocs(t, jdocs))
		}

		// Cursors tampered with: an upper bound of the wrong length, one
		// PostgreSQL rejects, a ranged cursor of every table.
		tamper := func(cur string, edit func(map[string]any)) string {
			var m map[string]any
			if err := json.Unmarshal([]byte(cur), &m); err != nil {
				t.Fatal(err)
			}
			edit(m)
			b, _ := json.Marshal(m)
			return string(b)
		}
		for name, cur := range map[string]string{
			"long until, first range":  tamper(ranges.Cursors[0], func(m map[string]any) { m["until"] = append(m["until"].([]any), "1") }),
			"long until, second range": tamper(ranges.Cursors[1], func(m map[string]any) { m["until"] = append(m["until"].([]any), "1") }),
			"empty until":              tamper(ranges.Cursors[1], func(m map[string]any) { m["until"] = []any{} }),
			"until not an integer":     tamper(ranges.Cursors[1], func(m map[string]any) { m["until"] = []any{"abc"} }),
			"ranged cursor of all":     tamper(ranges.Cursors[1], func(m map[string]any) { m["all"] = true }),
		} {
			params := url.Values{"snapshot": {strconv.FormatInt(ranges.Snapshot, 10)}, "cursor": {cur}}
			if r := get(t, e.URL(), "/api/list_snapshot", params); r.Status != http.StatusBadRequest || r.errorCode(t) != "InvalidListSnapshotCursor" {
				t.Errorf("%s: %d %s", name, r.Status, r.Body)
			}
		}
	})

	t.Run("partitioned", func(t *testing.T) {
		checkRangedSnapshot(t, c, conn, "parted", func(splits [][]string) {
			for _, s := range splits {
				k, _ := strconv.Atoi(s[0])
				mustExec(t, conn, `DELETE FROM parted WHERE id = $1`, k)
				mustExec(t, conn, `UPDATE parted SET id = $1 WHERE id = $2`, k+1, k-2)
			}
			mustExec(t, conn, `UPDATE parted SET id = 19999 WHERE id = 40000`) // to the other partition
		})
	})

	t.Run("composite", func(t *testing.T) {
		checkRangedSnapshot(t, c, conn, "Mixed", func(splits [][]string) {
			for _, s := range splits {
				r := s[0]
				n, _ := strconv.Atoi(s[1])
				mustExec(t, conn, `DELETE FROM "Mixed" WHERE ("Région", "NumÉro") = ($1, $2)`, r, n)
				mustExec(t, conn, `UPDATE "Mixed" SET payload = 'changed' WHERE ("Région", "NumÉro") = ($1, $2)`, r, n+2)
				mustExec(t, conn, `DELETE FROM "Mixed" WHERE ("Région", "NumÉro") = ($1, $2)`, r, n+4)
				mustExec(t, conn, `UPDATE "Mixed" SET "NumÉro" = $3 WHERE ("Région", "NumÉro") = ($1, $2)`, r, n-4, n+1)
				mustExec(t, conn, `UPDATE "Mixed" SET "Région" = 'zz moved' WHERE ("Région", "NumÉro") = ($1, $2)`, r, n-2)
				mustExec(t, conn, `INSERT INTO "Mixed" VALUES ($1, $2, 'new'), ($1, $3, 'new')`, r, n-1, n+3)
			}
			// Both ends, in the table's order.
			mustExec(t, conn, `DELETE FROM "Mixed" WHERE ("Région", "NumÉro") IN
				((SELECT ROW("Région", "NumÉro") FROM "Mixed" ORDER BY "Région", "NumÉro" LIMIT 1),
				 (SELECT ROW("Région", "NumÉro") FROM "Mixed" ORDER BY "Région" DESC, "NumÉro" DESC LIMIT 1))`)
			mustExec(t, conn, `INSERT INTO "Mixed" SELECT "Région", 0, 'first' FROM "Mixed" ORDER BY 1, 2 LIMIT 1`)
			mustExec(t, conn, `INSERT INTO "Mixed" SELECT "Région", 100000, 'last' FROM "Mixed" ORDER BY 1 DESC, 2 DESC LIMIT 1`)
		})
	})
}

// checkRangedSnapshot asks list_snapshot_ranges for 4 ranges of table,
// calls change with the split keys, reads the ranges concurrently and
// checks them against the table at the snapshot.
func checkRangedSnapshot(t *testing.T, c *client.Client, conn *pgx.Conn, table string, change func(splits [][]string)) *client.SnapshotRanges {
	t.Helper()
	ctx := context.Background()
	var want int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{table}.Sanitize()).Scan(&want); err != nil {
		t.Fatal(err)
	}
	ranges, err := c.ListSnapshotRanges(ctx, client.SnapshotRangesRequest{TableName: table, Ranges: 4})
	if err != nil {
		t.Fatal(err)
	}
	if len(ranges.Cursors) != 4 {
		t.Fatalf("%d cursors, want 4", len(ranges.Cursors))
	}
	// The ranges follow each other from the table's start to its end.
	var splits [][]string
	for i, cur := range ranges.Cursors {
		var rc rangedCursor
		if err := json.Unmarshal([]byte(cur), &rc); err != nil {
			t.Fatal(err)
		}
		if rc.Ts != ranges.Snapshot || rc.Table != table {
			t.Fatalf("cursor %d %s: not of table %s at %d", i, cur, table, ranges.Snapshot)
		}
		if (i == 0) != (rc.Key == nil) || (i == 3) != (rc.Until == nil) || (i > 0 && !reflect.DeepEqual(rc.Key, splits[i-1])) {
			t.Fatalf("cursor %d %s does not follow cursor %d", i, cur, i-1)
		}
		if rc.Until != nil {
			splits = append(splits, rc.Until)
		}
	}
	change(splits)

	perRange := make([][]doc, len(ranges.Cursors))
	errs := make([]error, len(ranges.Cursors))
	var wg sync.WaitGroup
	for i, cur := range ranges.Cursors {
		wg.Go(func() {
			perRange[i], errs[i] = readRange(ctx, c, table, ranges.Snapshot, cur, 500)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	single, err := readRange(ctx, c, table, ranges.Snapshot, "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(single) != want {
		t.Fatalf("a single cursor read %d rows at the snapshot; the table had %d", len(single), want)
	}
	byID := map[string]doc{}
	for _, d := range single {
		byID[d["_id"].(string)] = d
	}
	seen := map[string]int{}
	for i, docs := range perRange {
		if len(docs) < want/8 {
			t.Errorf("range %d has %d of %d rows", i, len(docs), want)
		}
		for _, d := range docs {
			id := d["_id"].(string)
			if r, ok := seen[id]; ok {
				t.Fatalf("%s in ranges %d and %d", id, r, i)
			}
			seen[id] = i
			if !reflect.DeepEqual(d, byID[id]) {
				t.Fatalf("range %d has %v; a single cursor read %v", i, d, byID[id])
			}
		}
	}
	if len(seen) != want {
		t.Fatalf("the ranges hold %d rows; the table had %d", len(seen), want)
	}
	return ranges
}

// readRange reads a snapshot of table with the cursor cur (none: from the
// start) to its end, checking that the last page has no cursor.
func readRange(ctx context.Context, c *client.Client, table string, ts int64, cur string, limit int) ([]doc, error) {
	req := client.SnapshotRequest{TableName: table, Snapshot: &ts, Limit: limit}
	if cur != "" {
		req.Cursor = &cur
	}
	var docs []doc
	for {
		page, err := c.ListSnapshot(ctx, req)
		if err != nil {
			return nil, err
		}
		for _, raw := range page.Values {
			var d doc
			if err := json.Unmarshal(raw, &d); err != nil {
				return nil, err
			}
			docs = append(docs, d)
		}
		if !page.HasMore {
			if page.Cursor != nil || page.Snapshot != ts {
				return nil, fmt.Errorf("last page: cursor %v, snapshot %d", page.Cursor, page.Snapshot)
			}
			return docs, nil
		}
		req.Cursor = page.Cursor
	}
}

// TestSnapshotRangesOneRange: a table without a primary key, or a small
// one, is one range; wrong arguments are refused naming them.
func TestSnapshotRangesOneRange(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE nokey (a int, b text)`)
	mustExec(t, conn, `INSERT INTO nokey SELECT i, 'b' || i FROM generate_series(1, 300) i`)
	mustExec(t, conn, `CREATE TABLE small (id int PRIMARY KEY)`)
	mustExec(t, conn, `INSERT INTO small SELECT generate_series(1, 500)`)
	e := startEngine(t, dbURL)
	c, err := client.New(e.URL(), testKey, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	for table, rows := range map[string]int{"nokey": 300, "small": 500} {
		ranges, err := c.ListSnapshotRanges(ctx, client.SnapshotRangesRequest{TableName: table, Ranges: 8})
		if err != nil {
			t.Fatal(err)
		}
		if len(ranges.Cursors) != 1 {
			t.Fatalf("%s: %d cursors, want 1", table, len(ranges.Cursors))
		}
		docs, err := readRange(ctx, c, table, ranges.Snapshot, ranges.Cursors[0], 64)
		if err != nil {
			t.Fatal(err)
		}
		if len(docs) != rows {
			t.Fatalf("%s: read %d rows, want %d", table, len(docs), rows)
		}
	}

	// By POST, with the snapshot given.
	ranges, err := c.ListSnapshotRanges(ctx, client.SnapshotRangesRequest{TableName: "small"})
	if err != nil {
		t.Fatal(err)
	}
	status, body := sendJSON(t, http.MethodPost, e.URL()+"/api/list_snapshot_ranges", "Convex "+testKey,
		fmt.Sprintf(`{"tableName": "small", "ranges": 2, "snapshot": %d}`, ranges.Snapshot))
	var posted client.SnapshotRanges
	if err := json.Unmarshal(body, &posted); status != http.StatusOK || err != nil || posted.Snapshot != ranges.Snapshot || len(posted.Cursors) != 1 {
		t.Fatalf("POST: %d %s", status, body)
	}

	for _, tc := range []struct {
		params url.Values
		field  string
	}{
		{url.Values{"ranges": {"4"}}, "`tableName`"},
		{url.Values{"tableName": {"small"}, "ranges": {"0"}}, "`ranges`"},
		{url.Values{"tableName": {"small"}, "ranges": {"65"}}, "`ranges`"},
		{url.Values{"tableName": {"small"}, "ranges": {"abc"}}, "`ranges`"},
	} {
		r := get(t, e.URL(), "/api/list_snapshot_ranges", tc.params)
		var body struct{ Code, Message string }
		r.decode(t, &body)
		if r.Status != http.StatusBadRequest || body.Code != "BadQueryArgs" || !strings.Contains(body.Message, tc.field) {
			t.Errorf("%v: %d %s", tc.params, r.Status, r.Body)
		}
	}
	var ce *client.Error
	if _, err := c.ListSnapshotRanges(ctx, client.SnapshotRangesRequest{TableName: "small", Ranges: 65}); !errors.As(err, &ce) || ce.Code != "BadQueryArgs" {
		t.Fatalf("65 ranges: %v", err)
	}
}
