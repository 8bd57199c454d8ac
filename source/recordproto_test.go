package main

import (
	"encoding/json"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/shapelog/shapelog/engine/recordpb"
	"github.com/shapelog/shapelog/protocol"
)

// A document becomes a record whose values follow the configured stream's
// fields in Airbyte's order, the CDC values in their places, whether the
// engine's fields line up (a copy) or not (a remap: a column dropped,
// added, or not selected).
func TestProtoRecords(t *testing.T) {
	s := &stream{desc: protocol.NewDescriptor("public", "t")}
	schema := json.RawMessage(`{"properties":{"id":{},"name":{},"zed":{},"_ab_cdc_lsn":{},"_ab_cdc_updated_at":{},"_ab_cdc_deleted_at":{},"_ab_cdc_truncated":{}}}`)
	p, err := newProtoRecords(s, schema)
	if err != nil {
		t.Fatal(err)
	}
	doc := func(values ...*recordpb.Value) []byte {
		b, err := proto.Marshal(&recordpb.Document{Ts: 1_700_000_000_123_456_789, Deleted: true, Data: values})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	str := func(s string) *recordpb.Value { return &recordpb.Value{Kind: &recordpb.Value_String_{String_: s}} }
	num := func(n int64) *recordpb.Value { return &recordpb.Value{Kind: &recordpb.Value_Integer{Integer: n}} }
	record := func(fields []string, d []byte) *recordpb.Record {
		p.setFields(&recordpb.Fields{Table: "t", Names: fields})
		b, err := p.appendRecord(nil, d, 42, "part")
		if err != nil {
			t.Fatal(err)
		}
		n, k := protowire.ConsumeVarint(b)
		var m recordpb.Message
		if k < 0 || int(n) != len(b)-k || proto.Unmarshal(b[k:], &m) != nil || m.GetRecord() == nil {
			t.Fatalf("not a delimited record message: %x", b)
		}
		return m.GetRecord()
	}
	check := func(r *recordpb.Record, want ...*recordpb.Value) {
		t.Helper()
		if r.GetStreamNamespace() != "public" || r.StreamName != "t" || r.EmittedAtMs != 42 || r.PartitionId != "part" || len(r.Data) != len(want) {
			t.Fatalf("record %v", r)
		}
		for i := range want {
			if !proto.Equal(r.Data[i], want[i]) {
				t.Errorf("value %d: %v, want %v", i, r.Data[i], want[i])
			}
		}
	}
	// Targets: _ab_cdc_deleted_at _ab_cdc_lsn _ab_cdc_truncated _ab_cdc_updated_at id name zed.
	ts := &recordpb.Value{Kind: &recordpb.Value_TimestampWithTimezone{TimestampWithTimezone: &recordpb.TimestampWithZone{EpochSecond: 1_700_000_000, Nano: 123_456_789}}}
	lsn, null := num(1_700_000_000_123_456_789), &recordpb.Value{IsNull: true}
	r := record([]string{"id", "name", "zed"}, doc(num(1), str("a"), str("z")))
	if p.direct != 4 {
		t.Errorf("the aligned layout is not copied whole (direct %d)", p.direct)
	}
	check(r, ts, lsn, null, ts, num(1), str("a"), str("z"))
	// zed dropped, extra added, order changed.
	r = record([]string{"extra", "name", "id"}, doc(str("x"), str("b"), num(2)))
	if p.direct >= 0 {
		t.Error("a changed layout is copied whole")
	}
	check(r, ts, lsn, null, ts, num(2), str("b"), null)
	if _, err := p.appendRecord(nil, doc(str("too few")), 1, "p"); err == nil {
		t.Error("a document with fewer values than its fields was accepted")
	}
}
