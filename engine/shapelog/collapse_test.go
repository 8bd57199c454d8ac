package shapelog

import (
	"fmt"
	"testing"
)

// netKeys runs NetChanges over the log and returns "op key" per change.
func netKeys(t *testing.T, s *Store, upTo int64) []string {
	t.Helper()
	it, err := s.NetChanges(s.Horizon(), upTo, 0, func(uint32, uint32) (bool, error) { return true, nil })
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var out []string
	for it.Next() {
		out = append(out, fmt.Sprintf("%c %s", it.Entry().Op, it.Entry().Key))
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestNetBoundsRowsPerTransaction: a transaction touching more rows than
// maxNetRows passes through uncollapsed, keeping memory bounded; smaller
// ones collapse. NextInTransaction and More page without reading the next
// transaction.
func TestNetBoundsRowsPerTransaction(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	_ = s.Init(1, 1)
	rel, _ := s.PutRelation(Relation{OID: 5, Schema: "public", Name: "t", Columns: []Column{{Name: "v", TypeOID: 25}}})
	write := func(lsn uint64, keys ...string) int64 {
		tx := s.Begin(lsn, uint32(lsn), int64(lsn*100))
		for _, k := range keys {
			_ = tx.Add(&Change{Op: OpInsert, Relation: 5, Version: rel.Version, Key: []byte(k), Values: [][]byte{[]byte(k)}})
		}
		_ = tx.Commit(lsn + 1)
		return tx.Ts()
	}
	defer func(n int) { maxNetRows = n }(maxNetRows)
	maxNetRows = 3
	write(10, "a", "a", "b")                   // 2 rows: collapsed to a, b
	last := write(20, "c", "d", "e", "f", "c") // 4 rows: passed as they are
	waitDurable(t, s, last)
	got := fmt.Sprint(netKeys(t, s, last))
	if want := "[I a I b I c I d I e I f I c]"; got != want {
		t.Fatalf("net changes %s, want %s", got, want)
	}

	it, err := s.NetChanges(s.Horizon(), last, 0, func(uint32, uint32) (bool, error) { return true, nil })
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	if !it.Next() || !it.NextInTransaction() || it.NextInTransaction() {
		t.Fatal("the first transaction should yield exactly two changes")
	}
	if !it.More() || !it.Next() || string(it.Entry().Key) != "c" {
		t.Fatal("More and Next should reach the second transaction")
	}
	for it.NextInTransaction() {
	}
	if it.More() || it.Next() {
		t.Fatal("nothing follows the second transaction")
	}
}
