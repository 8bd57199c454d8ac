package importer

import (
	"fmt"
	"strings"
	"testing"
)

// Spools replay what they were given whether they kept it in memory or
// spilled it to a file, and give their memory back to the shared budget.
func TestSpoolSpillsAndReplays(t *testing.T) {
	value := []byte(strings.Repeat("v", 1000))
	fill := func(s *spool, n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			if err := s.add(i%7 == 0, []field{{col: 0, kind: kindNumber, value: fmt.Appendf(nil, "%d", i)}, {col: 2, kind: kindString, value: value}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	replay := func(s *spool, n int) {
		t.Helper()
		rd, err := s.reader()
		if err != nil {
			t.Fatal(err)
		}
		var rec record
		for i := 0; i < n; i++ {
			if err := readRecord(rd, &rec); err != nil {
				t.Fatalf("record %d: %v", i, err)
			}
			if rec.deleted != (i%7 == 0) || len(rec.fields) != 2 || string(rec.fields[0].value) != fmt.Sprint(i) || rec.fields[1].col != 2 || len(rec.fields[1].value) != len(value) {
				t.Fatalf("record %d replayed as %+v", i, rec)
			}
		}
	}
	base := spooledInMemory.Load()

	small := &spool{}
	fill(small, 100)
	if small.file != nil || spooledInMemory.Load()-base != int64(small.memSize) {
		t.Fatalf("a small spool spilled (file %v) or is not counted (%d of %d)", small.file != nil, spooledInMemory.Load()-base, small.memSize)
	}
	replay(small, 100)

	big := &spool{} // past spoolMemory
	n := spoolMemory/1000 + 100
	fill(big, n)
	if big.file == nil || big.memSize != 0 {
		t.Fatalf("a spool past %d bytes stayed in memory", spoolMemory)
	}
	replay(big, n)
	big.close()

	// With the shared budget used up, a new spool goes straight to a file.
	spooledInMemory.Add(spoolMemoryTotal)
	late := &spool{}
	fill(late, 10)
	spooledInMemory.Add(-spoolMemoryTotal)
	if late.file == nil {
		t.Fatal("a spool stayed in memory past the shared budget")
	}
	replay(late, 10)
	late.close()
	small.close()
	if got := spooledInMemory.Load(); got != base {
		t.Errorf("spools hold %d bytes after closing, want %d", got-base, 0)
	}
}
