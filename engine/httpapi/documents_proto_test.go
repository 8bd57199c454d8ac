package httpapi

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shapelog/shapelog/engine/catalog"
	"github.com/shapelog/shapelog/engine/recordpb"
)

// readFrames decodes a protobuf answer.
func readFrames(t *testing.T, b []byte) []*recordpb.ExportFrame {
	t.Helper()
	r := bufio.NewReader(bytes.NewReader(b))
	var out []*recordpb.ExportFrame
	for {
		frame, err := recordpb.ReadFrame(r, nil, 1<<30)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		var f recordpb.ExportFrame
		if err := proto.Unmarshal(frame, &f); err != nil {
			t.Fatal(err)
		}
		out = append(out, &f)
	}
}

func TestProtoRenderer(t *testing.T) {
	types := catalog.NewTypes()
	typ := func(oid uint32) *catalog.Type {
		ty, err := types.Lookup(t.Context(), nil, oid)
		if err != nil {
			t.Fatal(err)
		}
		return ty
	}
	// Columns in an order their names do not sort in; "_ts" is exported as
	// "_ts_", and sorts by its column name.
	table := &catalog.Table{Schema: "s", Name: "t", Key: []int{1}, Columns: []catalog.Column{
		{Name: "zeta", Type: typ(25)}, {Name: "id", Type: typ(20)}, {Name: "_ts", Type: typ(1022)}, {Name: "a", Type: typ(701)},
	}}
	r := newExportRenderer(table, catalog.FormatJSON, true)
	long := strings.Repeat("é", 10_000) // a frame over 16 KiB: three-byte lengths
	var buf []byte
	for _, text := range []string{"short", strings.Repeat("x", 200), long} {
		buf = r.startDoc(buf)
		var err error
		buf, err = r.appendDoc(buf, docSnapshot, 7, nil, [][]byte{[]byte(text), []byte("1"), []byte("{1,NaN}"), []byte("NaN")})
		if err != nil {
			t.Fatal(err)
		}
	}
	buf, _ = r.appendDoc(buf, docTombstone, 8, nil, [][]byte{[]byte("gone"), []byte("2"), []byte("{1}"), []byte("1")})
	buf = r.appendTruncate(buf, 9)
	// A value that is not valid for its type: an error, and the buffer as
	// it was.
	before := len(buf)
	if out, err := r.appendDoc(buf, docSnapshot, 10, nil, [][]byte{[]byte("x"), []byte("one"), nil, nil}); err == nil || len(out) != before {
		t.Fatalf("invalid value: %v, %d bytes written", err, len(out)-before)
	}
	buf = appendPageEnd(buf, nil, nil, false)
	// Rendering a row allocates nothing once the buffer has room.
	scratch := make([]byte, 0, 64<<10)
	row := [][]byte{[]byte("text"), []byte("12"), []byte("{1,NaN}"), []byte("1.5")}
	if n := testing.AllocsPerRun(100, func() {
		scratch, _ = r.appendDoc(scratch[:0], docSnapshot, 7, nil, row)
	}); n != 0 {
		t.Errorf("%v allocations per document", n)
	}

	frames := readFrames(t, buf)
	if len(frames) != 7 {
		t.Fatalf("%d frames", len(frames))
	}
	f := frames[0].GetFields()
	if f.GetTable() != "s.t" || strings.Join(f.GetNames(), ",") != "_ts_,a,id,zeta" {
		t.Fatalf("fields %v", f)
	}
	for i, text := range []string{"short", strings.Repeat("x", 200), long} {
		d := frames[1+i].GetDocument()
		if d == nil || d.Ts != 7 || d.Deleted || d.Truncated || len(d.Data) != 4 ||
			string(d.Data[0].GetJson()) != "[1,null]" || d.Data[2].GetInteger() != 1 || d.Data[3].GetString_() != text {
			t.Fatalf("document %d: %v", i, d)
		}
		if c := d.GetMeta().GetChanges(); len(c) != 1 || c[0].Field != "_ts" || c[0].Change != recordpb.ChangeType_NULLED || c[0].Reason != recordpb.ChangeReason_SOURCE_SERIALIZATION_ERROR {
			t.Fatalf("document %d meta: %v", i, d.Meta)
		}
	}
	if d := frames[4].GetDocument(); d.Ts != 8 || !d.Deleted || d.Truncated || d.Meta != nil || d.Data[2].GetInteger() != 2 ||
		!d.Data[0].IsNull || !d.Data[1].IsNull || !d.Data[3].IsNull {
		t.Fatalf("tombstone: %v", d)
	}
	if d := frames[5].GetDocument(); d.Ts != 9 || !d.Deleted || !d.Truncated || len(d.Data) != 4 || !d.Data[0].IsNull || !d.Data[2].IsNull {
		t.Fatalf("truncate: %v", d)
	}
	if e := frames[6].GetEnd(); e == nil || e.Snapshot != nil || e.Cursor != nil || e.HasMore {
		t.Fatalf("end: %v", frames[6])
	}
}

func TestAcceptsProtobuf(t *testing.T) {
	for accept, want := range map[string]bool{
		"":                           false,
		"*/*":                        false,
		"application/json":           false,
		"application/x-protobuf":     true,
		"application/x-protobuf;q=0": false,
		"application/json, application/x-protobuf":          true,
		"application/json;q=0.9, application/x-protobuf":    true,
		"application/json, application/x-protobuf;q=0.5":    false,
		"text/html, application/x-protobuf;q=0.1":           true,
		"bogus;;, application/x-protobuf; q=1, text/plain ": true,
	} {
		if got := acceptsProtobuf([]string{accept}); got != want {
			t.Errorf("Accept %q: %v, want %v", accept, got, want)
		}
	}
}
