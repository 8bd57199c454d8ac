package importer

import (
	"bufio"
	"bytes"
	"io"
	"math"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shapelog/shapelog/engine/recordpb"
)

// protobufSeeds are FuzzParseProtobufRequest's seeds besides the committed
// corpus: bodies the tests build, valid and not.
func protobufSeeds() [][]byte {
	decl := `{"primaryKey":[["id"]],"jsonSchema":{"type":"object","required":["id"],"properties":{"id":{"type":"integer"},"s":{"type":["null","string"]},` +
		`"d":{"type":["null","string"],"format":"date"},"n":{"$ref":"WellKnownTypes.json#/definitions/Number"},"o":{"type":"object"}}}}`
	tables := []pbTable{{name: "t", decl: decl, fields: []string{"id", "s", "d", "n", "o", "_ab_cdc_deleted_at"}}, {name: "u", decl: `{}`, fields: []string{"x"}}}
	valid := &pbBody{tables: tables}
	valid.add(0, vInt(1), vStr("a"), vDate(19000), vNum(math.NaN()), vJSON(`{"k":[1]}`), vNull())
	valid.addRecord(1, vTSTZ(1700000000, 5, 3600))
	valid.add(0, vBigInt("2"), vNull(), vStr("2024-01-01"), vDec("1.5"), vNull(), vStr("2024-01-01T00:00:00Z"))
	valid.add(1, vTS(-1, 1)).add(1, vTimeTZ(1, -60)).add(1, vTime(5)).add(1, vBool(true)).add(1, &recordpb.Value{})
	wrongKind := &pbBody{tables: tables}
	wrongKind.add(0, vStr("1"), vInt(2), vNull(), vNull(), vNull(), vNull())
	short := &pbBody{tables: tables}
	short.add(1).add(7, vNull())
	b := valid.bytes()
	return [][]byte{b, b[:len(b)-2], wrongKind.bytes(), short.bytes(), (&pbBody{}).bytes(), {0}, {0x80}, {2, 0x0a, 0}, nil}
}

// FuzzParseProtobufRequest feeds arbitrary bodies to the protobuf parser,
// whole or one byte per read. It must not panic; it must refuse with a
// 400 *Error (nothing else can fail reading from memory); and a body it
// takes must be frames that the generated code reads: a header, then as
// many ImportRecords as it counted, each with a declared table and one
// value per field of it.
func FuzzParseProtobufRequest(f *testing.F) {
	for _, s := range protobufSeeds() {
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, body []byte, oneByte bool) {
		req := parseFuzzed(t, body, oneByte, func(r io.Reader) (*request, error) { return parseProtobufRequestInto(r, spoolSink{}) })
		if req == nil {
			return
		}
		defer req.close()
		br := bufio.NewReader(bytes.NewReader(body))
		frame, err := recordpb.ReadFrame(br, nil, len(body))
		if err != nil {
			t.Fatalf("%q taken; its header frame: %v", body, err)
		}
		var h recordpb.ImportHeader
		if err := proto.Unmarshal(frame, &h); err != nil {
			t.Fatalf("%q taken; its header: %v", body, err)
		}
		n := 0
		for ; ; n++ {
			frame, err = recordpb.ReadFrame(br, frame, len(body))
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%q taken; frame %d: %v", body, n+1, err)
			}
			var rec recordpb.ImportRecord
			if err := proto.Unmarshal(frame, &rec); err != nil {
				t.Fatalf("%q taken; record %d: %v", body, n, err)
			}
			if int(rec.Table) >= len(h.Tables) || len(rec.Data) != len(h.Tables[rec.Table].Fields) {
				t.Fatalf("%q taken; record %d: table %d, %d values", body, n, rec.Table, len(rec.Data))
			}
		}
		if req.n != n {
			t.Fatalf("%q: %d records; the generated code reads %d", body, req.n, n)
		}
	})
}
