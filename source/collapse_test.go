package main

import (
	"context"
	"fmt"
	"testing"

	"github.com/shapelog/shapelog/internal/connectortest"
	"github.com/shapelog/shapelog/protocol"
)

// TestMultiChangeTransactionsReachTheTable: rows changed several times in
// one transaction, read in pages of one change, arrive once per commit,
// and the records applied as a deduplicating destination applies them
// (the latest per key, deletes remove, a TRUNCATE empties) are the table.
func TestMultiChangeTransactionsReachTheTable(t *testing.T) {
	f := newFixture(t, `CREATE TABLE items (id int PRIMARY KEY, v text);
		INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 10) g;`,
		func(c map[string]any) { c["page_size"] = 1 })
	catalog, _ := f.catalog(protocol.SyncIncremental)
	first := f.read(catalog, nil)
	f.exec(`BEGIN; INSERT INTO items VALUES (11, 'a'); UPDATE items SET v = 'b' WHERE id = 11; COMMIT;
		BEGIN; UPDATE items SET v = 'x' WHERE id = 1; DELETE FROM items WHERE id = 1; COMMIT;
		BEGIN; INSERT INTO items VALUES (12, 'gone'); DELETE FROM items WHERE id = 12; COMMIT;
		BEGIN; UPDATE items SET id = 20 WHERE id = 2; UPDATE items SET v = 'moved' WHERE id = 20; UPDATE items SET id = 2 WHERE id = 3; COMMIT;
		BEGIN; UPDATE items SET v = v || '!' WHERE id > 5; UPDATE items SET v = v || '?' WHERE id > 7; COMMIT`)
	second := f.read(catalog, lastStates(t, first))
	f.exec(`BEGIN; UPDATE items SET v = 'lost' WHERE id = 4; TRUNCATE items; INSERT INTO items VALUES (30, 'after'); UPDATE items SET v = 'after!' WHERE id = 30; COMMIT;
		BEGIN; INSERT INTO items VALUES (31, 'c'); UPDATE items SET v = 'd' WHERE id = 31; COMMIT`)
	third := f.read(catalog, lastStates(t, second))

	apply := func(dst map[string]string, recs []map[string]any) {
		seen := map[string]bool{}
		for _, r := range recs {
			k := fmt.Sprint(r["id"], "@", r["_ab_cdc_lsn"])
			if seen[k] {
				t.Errorf("row %v twice at %v", r["id"], r["_ab_cdc_lsn"])
			}
			seen[k] = true
			switch {
			case r["_ab_cdc_truncated"] == true:
				clear(dst)
			case r["_ab_cdc_deleted_at"] != nil:
				delete(dst, fmt.Sprint(r["id"]))
			default:
				dst[fmt.Sprint(r["id"])] = fmt.Sprint(r["v"])
			}
		}
	}
	table := func() map[string]string {
		conn := connectortest.Connect(t, f.dbURL)
		rows, err := conn.Query(context.Background(), `SELECT id::text, v FROM items`)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for rows.Next() {
			var id, v string
			if err := rows.Scan(&id, &v); err != nil {
				t.Fatal(err)
			}
			out[id] = v
		}
		return out
	}
	dst := map[string]string{}
	apply(dst, first.Records(t))
	apply(dst, second.Records(t))
	if n := len(second.Records(t)); n != 12 {
		// 11 once; 1's delete; 20, and 3 moved to 2 (delete 3, upsert 2);
		// 6..11 and 20 once each.
		t.Errorf("second sync: %d records, want 12", n)
	}
	want := map[string]string{"2": "v3", "4": "v4", "5": "v5", "6": "v6!", "7": "v7!", "8": "v8!?", "9": "v9!?", "10": "v10!?", "11": "b!?", "20": "moved!?"}
	if fmt.Sprint(dst) != fmt.Sprint(want) {
		t.Errorf("after the second sync:\n%v\nwant\n%v", dst, want)
	}
	apply(dst, third.Records(t))
	if got, want := fmt.Sprint(dst), fmt.Sprint(table()); got != want {
		t.Errorf("after the third sync:\n%v\nthe table:\n%v", got, want)
	}
	if got := fmt.Sprint(dst); got != fmt.Sprint(map[string]string{"30": "after!", "31": "d"}) {
		t.Errorf("after the TRUNCATE: %v", got)
	}
}
