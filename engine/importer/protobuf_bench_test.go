package importer

import (
	"bytes"
	"fmt"
	"io"
	"math/rand"
	"strconv"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/shapelog/shapelog/engine/client"
	"github.com/shapelog/shapelog/engine/recordpb"
)

// benchProtoBody is a protobuf import body as the Airbyte destination sends
// it for n rows of a table with an int8 key, text columns, a numeric, a
// timestamptz and a boolean (the source's encoding: engine/catalog's
// AppendProtoValue), each record followed by Airbyte's metadata values
// (destination/speed.go's appendProtoMetadata).
func benchProtoBody(n int) []byte {
	const schema = `{"type":"object","properties":{
	"id":{"type":"integer"},
	"name":{"type":["string","null"]},"email":{"type":["string","null"]},"note":{"type":["string","null"]},
	"amount":{"type":["number","null"]},
	"created_at":{"type":["string","null"],"format":"date-time","airbyte_type":"timestamp_with_timezone"},
	"active":{"type":["boolean","null"]},
	"_airbyte_raw_id":{"type":"string"},
	"_airbyte_extracted_at":{"type":"string","format":"date-time","airbyte_type":"timestamp_with_timezone"},
	"_airbyte_generation_id":{"type":["integer","null"]},
	"_airbyte_meta":{"type":"object"}}}`
	fields := []string{"active", "amount", "created_at", "email", "id", "name", "note",
		"_airbyte_raw_id", "_airbyte_extracted_at", "_airbyte_generation_id", "_airbyte_meta"}
	var b client.ProtoBatch
	table := b.Declare("public.bench", client.TableSpec{PrimaryKey: [][]string{{"id"}}, JSONSchema: []byte(schema)}, fields)
	rng := rand.New(rand.NewSource(1))
	var rec []byte
	for i := 1; i <= n; i++ {
		rec = rec[:0]
		rec = protowire.AppendTag(rec, recordpb.RecordStream, protowire.BytesType)
		rec = protowire.AppendString(rec, "bench")
		rec = protowire.AppendTag(rec, recordpb.RecordEmittedAtMs, protowire.VarintType)
		rec = protowire.AppendVarint(rec, 1700000000000)
		rec = recordpb.AppendBool(rec, i%3 != 0)
		rec = recordpb.AppendBytesKind(rec, recordpb.KindBigDecimal, strconv.AppendFloat(nil, float64(rng.Intn(1e7))/100, 'f', 2, 64))
		rec = recordpb.AppendTimestampWithZone(rec, 1600000000+int64(i)*37, uint32(rng.Intn(1e6))*1000, 0)
		rec = recordpb.AppendBytesKind(rec, recordpb.KindString, fmt.Appendf(nil, "user%d@example.com", i))
		rec = recordpb.AppendInteger(rec, int64(i))
		rec = recordpb.AppendBytesKind(rec, recordpb.KindString, fmt.Appendf(nil, "Name %d Surname", i))
		if i%5 == 0 {
			rec = recordpb.AppendNull(rec)
		} else {
			rec = recordpb.AppendBytesKind(rec, recordpb.KindString, fmt.Appendf(nil, "a note about record %d, with some more words in it", i))
		}
		b.AddRecordBytes(table, rec, func(dst []byte) []byte {
			dst = recordpb.AppendBytesKind(dst, recordpb.KindString, fmt.Appendf(nil, "%08x-%04x-4%03x-8%03x-%012x", rng.Uint32(), rng.Intn(1<<16), rng.Intn(1<<12), rng.Intn(1<<12), rng.Int63n(1<<48)))
			dst = recordpb.AppendBytesKind(dst, recordpb.KindString, []byte("2024-05-01T12:00:00.000Z"))
			dst = recordpb.AppendInteger(dst, 3)
			return recordpb.AppendBytesKind(dst, recordpb.KindJSON, []byte(`{"sync_id":42,"changes":[]}`))
		})
	}
	return b.Bytes()
}

// copyTextSink renders records as the live copy does (see live.write):
// the request's records as COPY text, without PostgreSQL.
type copyTextSink struct {
	rows   *rowWriter
	staged bool // with the sequence and deleted flag, as for a staging table
	vals   []*field
	n      int
}

func (c *copyTextSink) add(_ *request, s *stream, deleted bool, fields []field, msg int) error {
	if len(c.vals) < len(s.cols) {
		c.vals = make([]*field, len(s.cols))
	}
	vals := c.vals[:len(s.cols)]
	clear(vals)
	for i := range fields {
		vals[fields[i].col] = &fields[i]
	}
	c.n++
	return c.rows.row(s, c.staged, c.n, deleted, vals, int32(msg))
}

// BenchmarkProtobufImport measures the engine's CPU per record of a
// protobuf body without PostgreSQL: decoding, checking, the columns and
// keys, and rendering COPY text as the live copy sends it.
func BenchmarkProtobufImport(b *testing.B) {
	const n = 10000
	body := benchProtoBody(n)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		sink := &copyTextSink{rows: newRowWriter(io.Discard)}
		req, err := parseProtobufRequestInto(bytes.NewReader(body), sink)
		if err != nil {
			b.Fatal(err)
		}
		if err := sink.rows.flush(); err != nil {
			b.Fatal(err)
		}
		req.close()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/record")
}
