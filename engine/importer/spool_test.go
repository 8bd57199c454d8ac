package importer

import (
	"bytes"
	"testing"
)

// TestSpoolReplaysRecords: records of short and long values (written
// apart from their headers) replay as they were added, kept in memory and
// after spilling to the file.
func TestSpoolReplaysRecords(t *testing.T) {
	for _, total := range []int{10, 400} { // 400 records of up to ~40 KB spill
		var sp spool
		defer sp.close()
		var want []record
		for i := 0; i < total; i++ {
			rec := record{deleted: i%3 == 0}
			for j := 0; j < i%4; j++ {
				size := []int{0, 10, spoolLongValue - 1, spoolLongValue, 10 * spoolLongValue}[(i+j)%5]
				rec.fields = append(rec.fields, field{col: j, kind: kindString, value: bytes.Repeat([]byte{byte('a' + i%26)}, size)})
			}
			if err := sp.add(rec.deleted, rec.fields); err != nil {
				t.Fatal(err)
			}
			want = append(want, rec)
		}
		if (sp.file != nil) != (total == 400) {
			t.Fatalf("%d records: spilled to a file: %v", total, sp.file != nil)
		}
		rd, err := sp.reader()
		if err != nil {
			t.Fatal(err)
		}
		var got record
		for i, w := range want {
			if err := readRecord(rd, &got); err != nil {
				t.Fatalf("record %d: %v", i, err)
			}
			if got.deleted != w.deleted || len(got.fields) != len(w.fields) {
				t.Fatalf("record %d of %d: deleted %v, %d fields; want %v, %d", i, total, got.deleted, len(got.fields), w.deleted, len(w.fields))
			}
			for j, f := range w.fields {
				if g := got.fields[j]; g.col != f.col || g.kind != f.kind || !bytes.Equal(g.value, f.value) {
					t.Fatalf("record %d of %d, field %d differs", i, total, j)
				}
			}
		}
	}
}
