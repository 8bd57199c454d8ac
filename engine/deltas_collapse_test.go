package engine_test

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/shapelog/shapelog/internal/connectortest"
	"github.com/shapelog/shapelog/internal/pgtest"
)

// describe is a document in brief: table, id, deleted or truncated, and v.
func describe(d doc) string {
	s := fmt.Sprintf("%v %v", d["_table"], d["_id"])
	switch {
	case d["_truncated"] == true:
		return s + " truncated"
	case d["_deleted"] == true:
		return s + " deleted"
	}
	return s + fmt.Sprintf(" %v", d["v"])
}

// tableContents is every row of table as the documents' id → v.
func tableContents(t *testing.T, conn *pgx.Conn, table string) map[string]string {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT id, v FROM `+table)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for rows.Next() {
		var id int
		var v string
		if err := rows.Scan(&id, &v); err != nil {
			t.Fatal(err)
		}
		out[fmt.Sprintf(`"public".%q/"%d"`, table, id)] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// stateOf is the id → v of the documents of table in state.
func stateOf(state map[string]doc, table string) map[string]string {
	out := map[string]string{}
	for id, d := range state {
		if d["_table"] == table {
			out[id] = fmt.Sprint(d["v"])
		}
	}
	return out
}

// TestDeltasCollapseTransactions: a row changed several times in one
// transaction comes out once, as it was at the commit; pages of one
// document never split a transaction's collapsed output; snapshot plus
// deltas is the table.
func TestDeltasCollapseTransactions(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL)`)
	mustExec(t, conn, `CREATE TABLE bag (a int, b text)`)
	mustExec(t, conn, `INSERT INTO items VALUES (1, 'one'), (5, 'five'), (7, 'seven'), (20, 'twenty'), (21, 'twenty-one')`)
	e := startEngine(t, dbURL)
	snapDocs, snap := readSnapshot(t, e.URL(), nil)
	for _, txn := range []string{
		// insert then update: the final row
		`INSERT INTO items VALUES (2, 'two'); UPDATE items SET v = 'two, updated' WHERE id = 2`,
		// update then delete of a row that existed: its tombstone
		`UPDATE items SET v = 'gone soon' WHERE id = 1; DELETE FROM items WHERE id = 1`,
		// insert then delete: nothing
		`INSERT INTO items VALUES (3, 'ephemeral'); DELETE FROM items WHERE id = 3`,
		// insert, key change, update: the last key's final row only
		`INSERT INTO items VALUES (30, 'a'); UPDATE items SET id = 31 WHERE id = 30; UPDATE items SET v = 'b' WHERE id = 31`,
		// key change of a row that existed, then an update: delete 5, 6's final row
		`UPDATE items SET id = 6 WHERE id = 5; UPDATE items SET v = 'six' WHERE id = 6`,
		// a key changed away and back: one version of 7
		`UPDATE items SET id = 8 WHERE id = 7; UPDATE items SET id = 7, v = 'seven again' WHERE id = 8`,
		// delete then insert of the same key: the new row
		`DELETE FROM items WHERE id = 20; INSERT INTO items VALUES (20, 'reborn')`,
		// a TRUNCATE wipes the changes before it in its transaction: the
		// marker, then the rows after it
		`UPDATE items SET v = 'lost' WHERE id = 21; INSERT INTO items VALUES (40, 'lost too'); TRUNCATE items;
		 INSERT INTO items VALUES (41, 'x'); UPDATE items SET v = 'after truncate' WHERE id = 41; INSERT INTO items VALUES (2, 'two again')`,
		// without a primary key, equal rows are distinct rows: not collapsed
		`INSERT INTO bag VALUES (1, 'dup'), (1, 'dup'); INSERT INTO items VALUES (50, 'fifty')`,
		// two TRUNCATEs in one transaction: one marker, then the last row
		`TRUNCATE bag; INSERT INTO bag VALUES (2, 'x'); TRUNCATE bag; INSERT INTO bag VALUES (3, 'y')`,
	} {
		mustExec(t, conn, "BEGIN; "+txn+"; COMMIT")
	}
	connectortest.CatchUp(t, e, conn)

	all, _ := readDeltas(t, e.URL(), snap, nil)
	var got []string
	for _, d := range all {
		got = append(got, describe(d))
	}
	want := []string{
		`items "public"."items"/"2" two, updated`,
		`items "public"."items"/"1" deleted`,
		`items "public"."items"/"31" b`,
		`items "public"."items"/"5" deleted`,
		`items "public"."items"/"6" six`,
		`items "public"."items"/"7" seven again`,
		`items "public"."items"/"20" reborn`,
		`items "public"."items" truncated`,
		`items "public"."items"/"41" after truncate`,
		`items "public"."items"/"2" two again`,
		`bag "public"."bag"/"1"/"dup" <nil>`,
		`bag "public"."bag"/"1"/"dup" <nil>`,
		`items "public"."items"/"50" fifty`,
		`bag "public"."bag" truncated`,
		`bag "public"."bag"/"3"/"y" <nil>`,
	}
	if !slices.Equal(got, want) {
		t.Fatalf("deltas:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// One version per document and ts in a table with a primary key.
	seen := map[string]bool{}
	for _, d := range all {
		k := fmt.Sprint(d["_ts"], " ", d["_id"])
		if d["_table"] == "items" && seen[k] {
			t.Errorf("%s twice at one _ts", d["_id"])
		}
		seen[k] = true
	}

	// Pages of one document: the same documents, and no transaction split
	// over two pages.
	pages, _ := deltaPages(t, e.URL(), snap, url.Values{"limit": {"1"}})
	if paged := slices.Concat(pages...); len(paged) != len(all) {
		t.Fatalf("limit=1 gives %d documents, want %d", len(paged), len(all))
	} else {
		for i := range paged {
			if describe(paged[i]) != got[i] || paged[i]["_ts"] != all[i]["_ts"] {
				t.Errorf("limit=1 document %d: %s at %v, want %s at %v", i, describe(paged[i]), paged[i]["_ts"], got[i], all[i]["_ts"])
			}
		}
	}
	pageOf := map[any]int{}
	for i, page := range pages {
		for _, d := range page {
			if p, ok := pageOf[d["_ts"]]; ok && p != i {
				t.Errorf("the transaction at %v is split over pages %d and %d", d["_ts"], p, i)
			}
			pageOf[d["_ts"]] = i
		}
	}

	state := map[string]doc{}
	apply(state, snapDocs)
	apply(state, all)
	if got, want := stateOf(state, "items"), tableContents(t, conn, "items"); !mapsEqual(got, want) {
		t.Errorf("snapshot + deltas:\n%v\nthe table:\n%v", got, want)
	}
	if got := stateOf(state, "bag"); len(got) != 1 || got[`"public"."bag"/"3"/"y"`] == "" {
		t.Errorf("bag after its TRUNCATEs: %v", got)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestDeltasCollapseLargeTransaction: a transaction too large to hold in
// memory is collapsed in two passes over the log, with the same result.
func TestDeltasCollapseLargeTransaction(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE big (id int PRIMARY KEY, v text NOT NULL)`)
	mustExec(t, conn, `INSERT INTO big SELECT g, 'old' FROM generate_series(100001, 100100) g`)
	e := startEngine(t, dbURL)
	snapDocs, snap := readSnapshot(t, e.URL(), nil)
	// ~10 MB of changes in one transaction: inserts of 12,000 wide rows,
	// an update of each, deletes of half of them and of the rows that
	// were there before.
	mustExec(t, conn, `BEGIN;
		INSERT INTO big SELECT g, repeat('x', 400) FROM generate_series(1, 12000) g;
		UPDATE big SET v = 'final ' || id WHERE id <= 12000;
		DELETE FROM big WHERE id % 2 = 0;
		COMMIT`)
	connectortest.CatchUp(t, e, conn)
	for _, limit := range []string{"", "1"} {
		params := url.Values{"tableName": {"big"}}
		if limit != "" {
			params.Set("limit", limit)
		}
		pages, _ := deltaPages(t, e.URL(), snap, params)
		all := slices.Concat(pages...)
		upserts, tombstones := 0, 0
		seen := map[any]bool{}
		for _, d := range all {
			if seen[d["_id"]] {
				t.Fatalf("limit %q: %v twice", limit, d["_id"])
			}
			seen[d["_id"]] = true
			id, _ := strconv.Atoi(strings.Trim(strings.TrimPrefix(d["_id"].(string), `"public"."big"/`), `"`))
			switch {
			case d["_deleted"] == true && id > 100000 && id%2 == 0:
				tombstones++
			case d["_deleted"] == false && id%2 == 1 && d["v"] == fmt.Sprintf("final %d", id):
				upserts++
			default:
				t.Fatalf("limit %q: unexpected %s", limit, describe(d))
			}
		}
		if upserts != 6000 || tombstones != 50 {
			t.Errorf("limit %q: %d upserts and %d tombstones, want 6000 and 50", limit, upserts, tombstones)
		}
		if limit == "1" && len(pages[0]) != len(all) {
			t.Errorf("the transaction was split: its first page has %d of %d documents", len(pages[0]), len(all))
		}
		state := map[string]doc{}
		apply(state, snapDocs)
		apply(state, all)
		if got, want := stateOf(state, "big"), tableContents(t, conn, "big"); !mapsEqual(got, want) {
			t.Errorf("limit %q: snapshot + deltas has %d rows, the table %d", limit, len(got), len(want))
		}
	}
}

// TestListSnapshotNoDuplicateIDs: rows moved, deleted and inserted again
// between the pages of a snapshot appear once, as they were at its ts.
func TestListSnapshotNoDuplicateIDs(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE moving (id int PRIMARY KEY, v text NOT NULL)`)
	mustExec(t, conn, `INSERT INTO moving SELECT g, 'v' || g FROM generate_series(1, 40) g`)
	e := startEngine(t, dbURL)
	atStart := tableContents(t, conn, "moving")
	// Between pages: move a row read already ahead of the cursor and one
	// not read yet behind it, delete and insert again, update.
	docs, _, _ := walkSnapshot(t, e.URL(), url.Values{"tableName": {"moving"}, "limit": {"3"}}, func(pages int) {
		switch pages {
		case 2:
			mustExec(t, conn, `UPDATE moving SET id = 1000 WHERE id = 1`)
			mustExec(t, conn, `UPDATE moving SET id = 0 WHERE id = 30`)
		case 3:
			mustExec(t, conn, `BEGIN; DELETE FROM moving WHERE id = 35; INSERT INTO moving VALUES (35, 'again'); COMMIT`)
			mustExec(t, conn, `UPDATE moving SET id = 500 WHERE id = 2; UPDATE moving SET v = 'new' WHERE id = 20`)
		case 4:
			mustExec(t, conn, `UPDATE moving SET id = id + 100 WHERE id > 25`)
		}
	})
	got := map[string]string{}
	for _, d := range docs {
		id := d["_id"].(string)
		if _, dup := got[id]; dup {
			t.Errorf("%s listed twice", id)
		}
		got[id] = fmt.Sprint(d["v"])
	}
	if !mapsEqual(got, atStart) {
		t.Errorf("snapshot:\n%v\nthe table at its start:\n%v", got, atStart)
	}
}
