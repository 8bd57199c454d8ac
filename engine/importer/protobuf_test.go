package importer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/shapelog/shapelog/engine/recordpb"
)

// Values for protobuf test bodies, encoded by the generated code: the
// importer's hand-written decoder is checked against it.
func vNull() *recordpb.Value { return &recordpb.Value{IsNull: true} }
func vStr(s string) *recordpb.Value {
	return &recordpb.Value{Kind: &recordpb.Value_String_{String_: s}}
}
func vInt(i int64) *recordpb.Value { return &recordpb.Value{Kind: &recordpb.Value_Integer{Integer: i}} }
func vBigInt(s string) *recordpb.Value {
	return &recordpb.Value{Kind: &recordpb.Value_BigInteger{BigInteger: s}}
}
func vNum(f float64) *recordpb.Value { return &recordpb.Value{Kind: &recordpb.Value_Number{Number: f}} }
func vDec(s string) *recordpb.Value {
	return &recordpb.Value{Kind: &recordpb.Value_BigDecimal{BigDecimal: s}}
}
func vBool(b bool) *recordpb.Value  { return &recordpb.Value{Kind: &recordpb.Value_Boolean{Boolean: b}} }
func vDate(d int64) *recordpb.Value { return &recordpb.Value{Kind: &recordpb.Value_Date{Date: d}} }
func vJSON(s string) *recordpb.Value {
	return &recordpb.Value{Kind: &recordpb.Value_Json{Json: []byte(s)}}
}
func vTime(ns uint64) *recordpb.Value {
	return &recordpb.Value{Kind: &recordpb.Value_TimeWithoutTimezone{TimeWithoutTimezone: ns}}
}
func vTimeTZ(ns uint64, off int32) *recordpb.Value {
	return &recordpb.Value{Kind: &recordpb.Value_TimeWithTimezone{TimeWithTimezone: &recordpb.TimeWithZone{NanosOfDay: ns, OffsetSeconds: off}}}
}
func vTSTZ(sec int64, nano uint32, off int32) *recordpb.Value {
	return &recordpb.Value{Kind: &recordpb.Value_TimestampWithTimezone{TimestampWithTimezone: &recordpb.TimestampWithZone{EpochSecond: sec, Nano: nano, OffsetSeconds: off}}}
}
func vTS(days int64, ns uint64) *recordpb.Value {
	return &recordpb.Value{Kind: &recordpb.Value_TimestampWithoutTimezone{TimestampWithoutTimezone: &recordpb.LocalTimestamp{DateDaysSinceEpoch: days, NanosOfDay: ns}}}
}

// daysOf is a date's days since 1970-01-01 (year 0 is 1 BC).
func daysOf(y, m, d int) int64 {
	return time.Date(y, time.Month(m), d, 0, 0, 0, 0, time.UTC).Unix() / 86400
}

func nanosOf(h, m, s, ns int) uint64 { return uint64(((h*60+m)*60+s)*1e9 + ns) }

// pbTable declares a table of a protobuf test body.
type pbTable struct {
	name, decl string
	fields     []string
}

// pbBody is a protobuf body: the header, then one ImportRecord per record
// (a table index and its values), framed.
type pbBody struct {
	tables []pbTable
	frames [][]byte
}

func (b *pbBody) add(table uint32, values ...*recordpb.Value) *pbBody {
	rec, err := proto.Marshal(&recordpb.ImportRecord{Table: table, Data: values})
	if err != nil {
		panic(err)
	}
	b.frames = append(b.frames, rec)
	return b
}

// addRecord adds a whole Airbyte Record, as a destination forwards it,
// with the table appended.
func (b *pbBody) addRecord(table uint32, values ...*recordpb.Value) *pbBody {
	ns := "ns"
	rec, err := proto.Marshal(&recordpb.Record{StreamNamespace: &ns, StreamName: "s", EmittedAtMs: 17, PartitionId: "p1", Data: values,
		Meta: &recordpb.RecordMeta{Changes: []*recordpb.FieldChange{{Field: "x", Change: recordpb.ChangeType_TRUNCATED}}}})
	if err != nil {
		panic(err)
	}
	if table != 0 {
		rec = protowire.AppendTag(rec, recordpb.ImportRecordTable, protowire.VarintType)
		rec = protowire.AppendVarint(rec, uint64(table))
	}
	b.frames = append(b.frames, rec)
	return b
}

func (b *pbBody) bytes() []byte {
	h := &recordpb.ImportHeader{}
	for _, t := range b.tables {
		h.Tables = append(h.Tables, &recordpb.ImportTable{Name: t.name, Declaration: []byte(t.decl), Fields: t.fields})
	}
	head, err := proto.Marshal(h)
	if err != nil {
		panic(err)
	}
	out := recordpb.AppendDelimited(nil, head)
	for _, f := range b.frames {
		out = recordpb.AppendDelimited(out, f)
	}
	return out
}

// importBoth imports the same request as JSON (into table j) and as
// protobuf (into table p): decl is both tables' declaration, fields the
// protobuf records' fields.
func importBoth(t *testing.T, im *Importer, decl string, fields []string, jsonRecords []string, pbRecords [][]*recordpb.Value) {
	t.Helper()
	recs := make([]string, len(jsonRecords))
	for i, r := range jsonRecords {
		recs[i] = "j:" + r
	}
	if _, _, err := im.Import(context.Background(), strings.NewReader(body(`"j":`+decl, recs...)), ""); err != nil {
		t.Fatalf("JSON: %v", err)
	}
	b := &pbBody{tables: []pbTable{{name: "p", decl: decl, fields: fields}}}
	for i, r := range pbRecords {
		if i%2 == 0 {
			b.add(0, r...)
		} else {
			b.addRecord(0, r...)
		}
	}
	n, dup, err := im.ImportProtobuf(context.Background(), bytes.NewReader(b.bytes()), "")
	if err != nil || dup || n != len(pbRecords) {
		t.Fatalf("protobuf: %d records, duplicate %v, %v", n, dup, err)
	}
}

const pbTypesSchema = `{"type":"object","properties":{
	"id":{"type":"integer"},
	"big":{"type":["null","integer"]},
	"n":{"$ref":"WellKnownTypes.json#/definitions/Number"},
	"f":{"$ref":"WellKnownTypes.json#/definitions/Number"},
	"b":{"type":"boolean"},
	"s":{"type":["null","string"]},
	"o":{"type":"object"},
	"a":{"type":"array","items":{"type":"integer"}},
	"d":{"type":"string","format":"date"},
	"tm":{"type":"string","format":"time","airbyte_type":"time_without_timezone"},
	"tmtz":{"type":"string","format":"time","airbyte_type":"time_with_timezone"},
	"ts":{"type":"string","format":"date-time","airbyte_type":"timestamp_without_timezone"},
	"tstz":{"type":"string","format":"date-time","airbyte_type":"timestamp_with_timezone"},
	"bin":{"type":["null","string"],"contentEncoding":"base64"},
	"u":{}}}`

var pbTypesFields = []string{"id", "big", "n", "f", "b", "s", "o", "a", "d", "tm", "tmtz", "ts", "tstz", "bin", "u"}

// TestProtobufMatchesJSON: a protobuf body and the equivalent JSON body
// give the same table, value for value, for every type, from typed kinds
// and from strings; and the same schema evolution.
func TestProtobufMatchesJSON(t *testing.T) {
	im, pool := liveSetup(t)
	ctx := context.Background()
	// Float columns take NaN and ±Infinity: an existing table's (JSON sends
	// them as strings, which its declared Number allows).
	if _, err := pool.Exec(ctx, `CREATE TABLE j (f double precision); CREATE TABLE p (f double precision)`); err != nil {
		t.Fatal(err)
	}
	decl := `{"primaryKey":[["id"]],"jsonSchema":` + pbTypesSchema + `}`
	text := "tab\t\"quote\" 'single' back\\slash new\nline ✓ \U0001F600"
	tstz := time.Date(2024, 1, 1, 8, 0, 0, 0, time.UTC).Unix()
	importBoth(t, im, decl, pbTypesFields,
		[]string{
			`{"id":1,"big":9007199254740993,"n":"NaN","f":"NaN","b":true,"s":` + jsonString(text) + `,"o":{"k":[1,null,"x"],"q":"a\"b"},"a":[1,2,3],` +
				`"d":"2024-02-29","tm":"12:30:00.123456789","tmtz":"12:30:00+02:00","ts":"2024-01-01T10:00:00.5","tstz":"2024-01-01T10:00:00+02:00","bin":"3q2+7w==","u":null}`,
			`{"id":2,"big":-9007199254740993,"n":"12.50","f":"Infinity","b":false,"s":"","o":{},"a":[],` +
				`"d":"2024-02-29","tm":"12:30:00.123456","tmtz":"23:59:59.5-05:30","ts":"2024-01-01T10:00:00.5","tstz":"2024-01-01T10:00:00+02:00","bin":"","u":{"x":[true]}}`,
			`{"id":3,"big":null,"n":"0.1","f":"-Infinity","b":true,"s":null,"o":{"n":1.5e300},"a":[-1],` +
				`"d":"0044-03-15 BC","tm":"00:00:00","tmtz":"00:00:00+00:00","ts":"1969-12-31T23:59:59.999999","tstz":"1900-01-01T00:00:00Z","bin":null,"u":"text"}`,
			`{"id":4,"big":1e3,"n":"-7","f":"1.5","b":false,"s":"x","o":{},"a":[],` +
				`"d":"10000-01-01","tm":"24:00:00","tmtz":"12:00:00+00:00","ts":"2000-02-29T00:00:00","tstz":"2024-06-30T23:59:59.999999+14:00","bin":"AA==","u":12.5}`,
		},
		[][]*recordpb.Value{
			{vInt(1), vInt(9007199254740993), vDec("NaN"), vNum(math.NaN()), vBool(true), vStr(text), vJSON(`{"k": [1, null, "x"], "q": "a\"b"}`), vJSON(`[1, 2, 3]`),
				vDate(daysOf(2024, 2, 29)), vTime(nanosOf(12, 30, 0, 123456789)), vTimeTZ(nanosOf(12, 30, 0, 0), 7200), vTS(daysOf(2024, 1, 1), nanosOf(10, 0, 0, 5e8)), vTSTZ(tstz, 0, 7200), vStr("3q2+7w=="), vNull()},
			{vBigInt("2"), vBigInt("-9007199254740993"), vDec("12.50"), vNum(math.Inf(1)), vBool(false), vStr(""), vJSON(`{}`), vJSON(`[]`),
				vStr("2024-02-29"), vStr("12:30:00.123456"), vStr("23:59:59.5-05:30"), vStr("2024-01-01T10:00:00.5"), vStr("2024-01-01T10:00:00+02:00"), vStr(""), vJSON(`{"x":[true]}`)},
			{vNum(3), {}, vNum(0.1), vNum(math.Inf(-1)), vJSON(`true`), vNull(), vJSON(`{"n":1.5e300}`), vJSON(` [ -1 ] `),
				vDate(daysOf(-43, 3, 15)), vTime(0), vTimeTZ(0, 0), vTS(-1, nanosOf(23, 59, 59, 999999000)), vTSTZ(time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC).Unix(), 0, 0), vJSON(`null`), vJSON(`"text"`)},
			{vDec("4"), vNum(1000), vDec("-7"), vDec("1.5"), vBool(false), vStr("x"), vJSON(`{}`), vJSON(`[]`),
				vDate(daysOf(10000, 1, 1)), vTime(nanosOf(24, 0, 0, 0)), vTimeTZ(nanosOf(12, 0, 0, 0), 0), vTS(daysOf(2000, 2, 29), 0),
				vTSTZ(time.Date(2024, 6, 30, 9, 59, 59, 0, time.UTC).Unix(), 999999000, 14*3600), vStr("AA=="), vDec("12.5")},
		})
	compareTables(t, pool)
	if got, want := rows(t, pool, `SELECT id, big, n::text, f::text, d::text, tm::text, tmtz::text, ts::text, tstz AT TIME ZONE 'UTC' FROM p ORDER BY id`),
		"1 9007199254740993 NaN NaN 2024-02-29 12:30:00.123457 12:30:00+02 2024-01-01 10:00:00.5 2024-01-01 08:00:00 +0000 UTC; "+
			"2 -9007199254740993 12.50 Infinity 2024-02-29 12:30:00.123456 23:59:59.5-05:30 2024-01-01 10:00:00.5 2024-01-01 08:00:00 +0000 UTC; "+
			"3 <nil> 0.1 -Infinity 0044-03-15 BC 00:00:00 00:00:00+00 1969-12-31 23:59:59.999999 1900-01-01 00:00:00 +0000 UTC; "+
			"4 1000 -7 1.5 10000-01-01 24:00:00 12:00:00+00 2000-02-29 00:00:00 2024-06-30 09:59:59.999999 +0000 UTC"; got != want {
		t.Errorf("protobuf table:\n got %s\nwant %s", got, want)
	}
	// Schema evolution: fields the schema does not declare get columns
	// typed from their values, in both.
	fields := append(append([]string{}, pbTypesFields[:2]...), "extra_s", "extra_n", "extra_o")
	importBoth(t, im, decl, fields,
		[]string{`{"id":10,"big":1,"extra_s":"x","extra_n":1,"extra_o":[1]}`, `{"id":11,"big":2,"extra_s":null,"extra_n":2.5,"extra_o":{"a":1}}`},
		[][]*recordpb.Value{{vInt(10), vInt(1), vStr("x"), vInt(1), vJSON(`[1]`)}, {vInt(11), vInt(2), vNull(), vNum(2.5), vJSON(`{"a":1}`)}})
	compareTables(t, pool)
	if got := columnTypesOf(t, pool, "p"); !strings.Contains(got, "extra_s text, extra_n numeric, extra_o jsonb") {
		t.Errorf("evolved columns: %s", got)
	}
}

// compareTables checks that tables j and p have the same columns and the
// same rows.
func compareTables(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	if j, p := columnTypesOf(t, pool, "j"), columnTypesOf(t, pool, "p"); j != p {
		t.Errorf("columns differ:\n JSON     %s\n protobuf %s", j, p)
	}
	j := rows(t, pool, `SELECT to_jsonb(x)::text FROM j x ORDER BY id`)
	p := rows(t, pool, `SELECT to_jsonb(x)::text FROM p x ORDER BY id`)
	if j != p {
		t.Errorf("rows differ:\n JSON     %s\n protobuf %s", j, p)
	}
}

// columnTypesOf lists a table's columns and types, by name.
func columnTypesOf(t *testing.T, pool *pgxpool.Pool, table string) string {
	t.Helper()
	return rows(t, pool, `SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) FROM pg_attribute WHERE attrelid = '`+table+`'::regclass AND attnum > 0 AND NOT attisdropped`)
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestProtobufDedupDeletes: dedup, deletes by _ab_cdc_deleted_at (typed or
// a string), _ab_cdc_* fields left out, a key twice in one request, and
// Record's other fields ignored: as with JSON.
func TestProtobufDedupDeletes(t *testing.T) {
	im, pool := liveSetup(t)
	decl := `{"primaryKey":[["id"]],"jsonSchema":{"type":"object","properties":{"id":{"type":"integer"},"v":{"type":["null","string"]},` +
		`"_ab_cdc_deleted_at":{"type":["null","string"],"format":"date-time"},"_ab_cdc_lsn":{"type":["null","integer"]}}}}`
	fields := []string{"id", "v", "_ab_cdc_deleted_at", "_ab_cdc_lsn"}
	importBoth(t, im, decl, fields,
		[]string{`{"id":1,"v":"a","_ab_cdc_deleted_at":null,"_ab_cdc_lsn":1}`, `{"id":2,"v":"b","_ab_cdc_deleted_at":null,"_ab_cdc_lsn":2}`, `{"id":3,"v":"c","_ab_cdc_deleted_at":null,"_ab_cdc_lsn":3}`},
		[][]*recordpb.Value{{vInt(1), vStr("a"), vNull(), vInt(1)}, {vInt(2), vStr("b"), vNull(), vInt(2)}, {vInt(3), vStr("c"), vNull(), vInt(3)}})
	compareTables(t, pool)
	importBoth(t, im, decl, fields,
		[]string{`{"id":1,"v":"a2","_ab_cdc_deleted_at":null,"_ab_cdc_lsn":4}`, `{"id":2,"v":null,"_ab_cdc_deleted_at":"2024-01-01T00:00:00Z","_ab_cdc_lsn":5}`,
			`{"id":4,"v":"d","_ab_cdc_deleted_at":null,"_ab_cdc_lsn":6}`, `{"id":3,"v":null,"_ab_cdc_deleted_at":"2024-01-01T00:00:00Z","_ab_cdc_lsn":7}`,
			`{"id":3,"v":"c2","_ab_cdc_deleted_at":null,"_ab_cdc_lsn":8}`, `{"id":4,"v":"d2","_ab_cdc_deleted_at":null,"_ab_cdc_lsn":9}`},
		[][]*recordpb.Value{{vInt(1), vStr("a2"), vNull(), vInt(4)}, {vInt(2), vNull(), vTSTZ(1704067200, 0, 0), vInt(5)},
			{vInt(4), vStr("d"), {}, vInt(6)}, {vInt(3), vNull(), vStr("2024-01-01T00:00:00Z"), vInt(7)},
			{vInt(3), vStr("c2"), vNull(), vInt(8)}, {vInt(4), vStr("d2"), vNull(), vInt(9)}})
	compareTables(t, pool)
	if got, want := rows(t, pool, `SELECT id, v FROM p ORDER BY id`), "1 a2; 3 c2; 4 d2"; got != want {
		t.Errorf("after the dedup: %q, want %q", got, want)
	}
	if got := columnTypesOf(t, pool, "p"); strings.Contains(got, "_ab_cdc") {
		t.Errorf("CDC fields became columns: %s", got)
	}
}

// TestProtobufBatches: bodies past one check batch (in records and in
// bytes), with a record longer than a batch, read whole or one byte at a
// time, into a live-copied append stream and a spooled one.
func TestProtobufBatches(t *testing.T) {
	im, pool := liveSetup(t)
	b := &pbBody{tables: []pbTable{
		{name: "live", decl: `{"jsonSchema":{"type":"object","properties":{"i":{"type":"integer"},"s":{"type":"string"}}}}`, fields: []string{"i", "s"}},
		{name: "spooled", decl: `{}`, fields: []string{"i", "s"}},
	}}
	long := strings.Repeat("long ", 300<<10) // 1.5 MiB
	n := 0
	for i := 0; i < 3000; i++ {
		s := strconv.Itoa(i) + strings.Repeat("x", i%700)
		if i == 1500 {
			s = long
		}
		b.addRecord(uint32(i%2), vInt(int64(i)), vStr(s))
		n++
	}
	for _, oneByte := range []bool{false, true} {
		var r io.Reader = bytes.NewReader(b.bytes())
		if oneByte {
			r = iotest.OneByteReader(r)
		}
		l := &live{im: im, ctx: context.Background()}
		req, err := parseProtobufRequestInto(r, l)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.finish(req, nil); err != nil {
			t.Fatal(err)
		}
		if req.n != n || l.n != n/2 || req.streams["spooled"].spool.n != n/2 {
			t.Errorf("one byte at a time %v: %d records, %d copied live, %d spooled", oneByte, req.n, l.n, req.streams["spooled"].spool.n)
		}
		req.close()
		l.abort()
	}
	for table, parity := range map[string]int{"live": 0, "spooled": 1} {
		sum, longest := 0, 0
		for i := parity; i < 3000; i += 2 {
			sum += i
			longest = max(longest, len(strconv.Itoa(i))+i%700)
		}
		if parity == 0 {
			longest = len(long)
		}
		want := fmt.Sprintf("3000 1500 %d %d", 2*sum, longest)
		if got := rows(t, pool, `SELECT count(*), count(DISTINCT i), sum(i)::bigint, max(length(s)) FROM `+table); got != want {
			t.Errorf("%s: %s, want %s", table, got, want)
		}
	}
}

// TestProtobufIdempotentRetry: a retried protobuf body with its key is a
// no-op; the key with another body is refused.
func TestProtobufIdempotentRetry(t *testing.T) {
	im, pool := liveSetup(t)
	b := &pbBody{tables: []pbTable{{name: "t", decl: `{"primaryKey":[["id"]]}`, fields: []string{"id", "v"}}}}
	b.add(0, vInt(1), vStr("a")).add(0, vInt(2), vStr("b"))
	for i, wantDup := range []bool{false, true} {
		n, dup, err := im.ImportProtobuf(context.Background(), bytes.NewReader(b.bytes()), "key-1")
		if err != nil || n != 2 || dup != wantDup {
			t.Fatalf("attempt %d: %d records, duplicate %v, %v", i, n, dup, err)
		}
	}
	b.add(0, vInt(3), vStr("c"))
	_, _, err := im.ImportProtobuf(context.Background(), bytes.NewReader(b.bytes()), "key-1")
	wantError(t, err, "IdempotencyKeyReused", "different body")
	if got, want := rows(t, pool, `SELECT id::text, v FROM t ORDER BY id`), "1 a; 2 b"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
}

// TestProtobufRefusals: every refusal is a 400 naming the message (or the
// frame) and the field, and writes nothing.
func TestProtobufRefusals(t *testing.T) {
	im, pool := liveSetup(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `CREATE TABLE ints (n bigint); CREATE TABLE docs (n jsonb); CREATE TABLE bools (n boolean)`); err != nil {
		t.Fatal(err)
	}
	schema := `{"primaryKey":[["id"]],"jsonSchema":{"type":"object","required":["r"],"properties":{"id":{"type":"integer"},"s":{"type":["null","string"]},` +
		`"d":{"type":["null","string"],"format":"date"},"ts":{"type":["null","string"],"format":"date-time"},"r":{"type":"string"},"any":{}}}}`
	fields := []string{"id", "s", "d", "ts", "r", "any"}
	typed := func(values ...*recordpb.Value) []byte {
		b := &pbBody{tables: []pbTable{{name: "t", decl: schema, fields: fields}}}
		b.add(0, vInt(1), vNull(), vNull(), vNull(), vStr("r"), vNull()) // message 0 is fine
		return b.add(0, values...).bytes()
	}
	untyped := func(table string, v *recordpb.Value) []byte {
		return (&pbBody{tables: []pbTable{{name: table, decl: `{}`, fields: []string{"n"}}}}).add(0, v).bytes()
	}
	good := typed(vInt(2), vStr("s"), vNull(), vNull(), vStr("r"), vNull())
	valueBytes := func(raw ...byte) []byte { // message 1 with a hand-made value for s
		rec, _ := proto.Marshal(&recordpb.ImportRecord{Data: []*recordpb.Value{vInt(2)}})
		rec = protowire.AppendTag(rec, recordpb.RecordData, protowire.BytesType)
		rec = protowire.AppendBytes(rec, raw)
		for _, v := range []*recordpb.Value{vNull(), vNull(), vStr("r"), vNull()} {
			enc, _ := proto.Marshal(v)
			rec = protowire.AppendTag(rec, recordpb.RecordData, protowire.BytesType)
			rec = protowire.AppendBytes(rec, enc)
		}
		b := &pbBody{tables: []pbTable{{name: "t", decl: schema, fields: fields}}}
		b.add(0, vInt(1), vNull(), vNull(), vNull(), vStr("r"), vNull())
		b.frames = append(b.frames, rec)
		return b.bytes()
	}
	headLen, n := protowire.ConsumeVarint(good)
	headEnd := n + int(headLen)
	cut := func(end int, tail ...byte) []byte { return append(append([]byte{}, good[:end]...), tail...) }
	header := func(h *recordpb.ImportHeader) []byte {
		enc, _ := proto.Marshal(h)
		return recordpb.AppendDelimited(nil, enc)
	}
	for _, c := range []struct {
		name, code, contains string
		body                 []byte
	}{
		{"too few values", "InvalidRecord", "message 1 (table t) has 5 values; the ImportHeader lists 6", typed(vInt(2), vNull(), vNull(), vNull(), vStr("r"))},
		{"too many values", "InvalidRecord", "message 1 (table t) has 7 values", typed(vInt(2), vNull(), vNull(), vNull(), vStr("r"), vNull(), vNull())},
		{"no such table", "MissingStream", "message 1: its table is number 3", func() []byte {
			b := &pbBody{tables: []pbTable{{name: "t", decl: schema, fields: fields}}}
			return b.add(0, vInt(1), vNull(), vNull(), vNull(), vStr("r"), vNull()).add(3, vInt(2)).bytes()
		}()},
		{"string for an integer", "InvalidRecord", `message 1 (table t), field "id": the value is a string, and its jsonSchema allows an integer`, typed(vStr("2"), vNull(), vNull(), vNull(), vStr("r"), vNull())},
		{"number for a string", "InvalidRecord", `message 1 (table t), field "s": the value is an integer, and its jsonSchema allows null or a string`, typed(vInt(2), vInt(5), vNull(), vNull(), vStr("r"), vNull())},
		{"double for an integer", "InvalidRecord", `field "id": the value is a number`, typed(vNum(2.5), vNull(), vNull(), vNull(), vStr("r"), vNull())},
		{"NaN for an integer", "InvalidRecord", `field "id": the value is a number`, typed(vNum(math.NaN()), vNull(), vNull(), vNull(), vStr("r"), vNull())},
		{"bad date string", "InvalidRecord", `field "d": "2024-13" is not a valid date`, typed(vInt(2), vNull(), vStr("2024-13"), vNull(), vStr("r"), vNull())},
		{"timestamp for a date", "InvalidRecord", `field "d": the value is a typed date-time, and its jsonSchema's format is date`, typed(vInt(2), vNull(), vTS(1, 0), vNull(), vStr("r"), vNull())},
		{"date for a timestamp", "InvalidRecord", `field "ts": the value is a typed date, and its jsonSchema's format is date-time`, typed(vInt(2), vNull(), vNull(), vDate(1), vStr("r"), vNull())},
		{"required null", "InvalidRecord", `field "r": the field is required`, typed(vInt(2), vNull(), vNull(), vNull(), vNull(), vNull())},
		{"required missing", "InvalidRecord", `required field "r" is not among`, (&pbBody{tables: []pbTable{{name: "t", decl: schema, fields: []string{"id"}}}}).add(0, vInt(1)).bytes()},
		{"closed schema", "InvalidRecord", `field "x": the jsonSchema does not declare the field and has additionalProperties: false`, (&pbBody{tables: []pbTable{{name: "t",
			decl: `{"jsonSchema":{"type":"object","additionalProperties":false,"properties":{"id":{"type":"integer"}}}}`, fields: []string{"id", "x"}}}}).add(0, vInt(1), vNull()).add(0, vInt(2), vStr("x")).bytes()},
		{"null key", "MissingPrimaryKeyValue", "message 1 (table t): missing value for primary key field: id", typed(vNull(), vNull(), vNull(), vNull(), vStr("r"), vNull())},
		{"key not among the fields", "MissingPrimaryKeyValue", "message 0 (table k)", (&pbBody{tables: []pbTable{{name: "k", decl: `{"primaryKey":[["id"]]}`, fields: []string{"v"}}}}).add(0, vStr("x")).bytes()},
		{"nested key missing", "MissingPrimaryKeyValue", "message 0 (table k)", (&pbBody{tables: []pbTable{{name: "k", decl: `{"primaryKey":[["m","id"]]}`, fields: []string{"m"}}}}).add(0, vJSON(`{"other":1}`)).bytes()},
		{"big_integer with a fraction", "InvalidRecord", `field "any": big_integer "12.5" is not a base-10 integer`, typed(vInt(2), vNull(), vNull(), vNull(), vStr("r"), vBigInt("12.5"))},
		{"big_decimal not a number", "InvalidRecord", `field "any": big_decimal "1,5" is not a decimal number`, typed(vInt(2), vNull(), vNull(), vNull(), vStr("r"), vDec("1,5"))},
		{"invalid UTF-8", "InvalidRecord", `message 1 (table t), field "s": the string is not valid UTF-8`, valueBytes(byte(recordpb.KindString)<<3|byte(protowire.BytesType), 2, 0xff, 'a')},
		{"invalid JSON", "InvalidRecord", `field "any": the json value "{\"a\":" is not valid JSON`, typed(vInt(2), vNull(), vNull(), vNull(), vStr("r"), vJSON(`{"a":`))},
		{"time of day past 24:00", "InvalidRecord", `field "any": time_without_timezone 86400000000001 ns is not a time of day`, typed(vInt(2), vNull(), vNull(), vNull(), vStr("r"), vTime(86400e9+1))},
		{"date out of range", "InvalidRecord", `field "any": date 9223372036854775807 days`, typed(vInt(2), vNull(), vNull(), vNull(), vStr("r"), vDate(math.MaxInt64))},
		{"NaN into bigint", "InvalidValue", "message 0 (table ints), field n: NaN is not a value this column can hold (column type bigint)", untyped("ints", vNum(math.NaN()))},
		{"Infinity into jsonb", "InvalidValue", "message 0 (table docs), field n: Infinity is not a value", untyped("docs", vDec("Infinity"))},
		{"-Infinity into boolean", "InvalidValue", "field n: -Infinity is not a value", untyped("bools", vNum(math.Inf(-1)))},
		{"NUL in text", "InvalidValue", `message 0 (table t2), field n: a NUL character`, untyped("t2", vStr("a\x00b"))},
		{"is_null with a value", "BadProtobufBody", `frame 2 (message 1, table t), field "s": malformed Value: is_null is set together with a value`,
			valueBytes(byte(recordpb.KindString)<<3|byte(protowire.BytesType), 1, 'a', byte(recordpb.KindNull<<3), 1)},
		{"unknown value kind", "BadProtobufBody", `field "s": malformed Value: unknown field 14`, valueBytes(byte(14<<3), 1)},
		{"wrong wire type", "BadProtobufBody", `field "s": malformed Value: field 2 has wire type 0`, valueBytes(byte(recordpb.KindString<<3), 1)},
		{"malformed record", "BadProtobufBody", "frame 2 (message 1): malformed ImportRecord", func() []byte {
			b := &pbBody{tables: []pbTable{{name: "t", decl: schema, fields: fields}}}
			b.add(0, vInt(1), vNull(), vNull(), vNull(), vStr("r"), vNull())
			b.frames = append(b.frames, []byte{0x2a, 5, 1})
			return b.bytes()
		}()},
		{"malformed header", "BadProtobufBody", "frame 0 (the ImportHeader)", append([]byte{3, 0x0a, 9, 1}, good[headEnd:]...)},
		{"bad declaration", "BadProtobufBody", "the declaration of table t is not a JSON object", header(&recordpb.ImportHeader{Tables: []*recordpb.ImportTable{{Name: "t", Declaration: []byte(`[1]`)}}})},
		{"table twice", "BadProtobufBody", `table "t" is declared twice`, header(&recordpb.ImportHeader{Tables: []*recordpb.ImportTable{{Name: "t"}, {Name: "t"}}})},
		{"field twice", "BadProtobufBody", `table t lists field "a" twice`, header(&recordpb.ImportHeader{Tables: []*recordpb.ImportTable{{Name: "t", Fields: []string{"a", "b", "a"}}}})},
		{"bad field name", "InvalidFieldName", `message 0 (table t): field "_shapelog_x"`, (&pbBody{tables: []pbTable{{name: "t", decl: `{}`, fields: []string{"_shapelog_x"}}}}).add(0, vInt(1)).bytes()},
		{"bad table name", "InvalidTableName", `Invalid table name "pg_catalog.t"`, header(&recordpb.ImportHeader{Tables: []*recordpb.ImportTable{{Name: "pg_catalog.t"}}})},
		{"empty body", "BadProtobufBody", "The protobuf body is empty", nil},
		{"cut within a frame", "BadProtobufBody", "The request body ended within frame 2", cut(len(good) - 3)},
		{"cut within a length", "BadProtobufBody", "The request body ended within frame 1", cut(headEnd, 0x80)},
		{"malformed length", "BadProtobufBody", "frame 1: malformed length", cut(headEnd, bytes.Repeat([]byte{0xff}, 10)...)},
		{"frame too long", "BadProtobufBody", "frame 1: its length, 4294967295 bytes, is over", cut(headEnd, 0xff, 0xff, 0xff, 0xff, 0x0f)},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := im.ImportProtobuf(ctx, bytes.NewReader(c.body), "")
			var ie *Error
			if !errors.As(err, &ie) || ie.Status != http.StatusBadRequest || ie.Code != c.code || !strings.Contains(ie.Message, c.contains) {
				t.Fatalf("got %v, want 400 %s mentioning %q", err, c.code, c.contains)
			}
		})
	}
	// The good body goes in, and nothing of the refused ones did.
	if _, _, err := im.ImportProtobuf(ctx, bytes.NewReader(good), ""); err != nil {
		t.Fatal(err)
	}
	if got := rows(t, pool, `SELECT (SELECT count(*) FROM t)::text || ' ' || (SELECT count(*) FROM ints) || (SELECT count(*) FROM docs) || (SELECT count(*) FROM bools) || ' ' || (to_regclass('t2') IS NULL) || (to_regclass('k') IS NULL)`); got != "2 000 truetrue" {
		t.Errorf("after the refusals: %s", got)
	}
}

// TestProtobufTemporalEdges: dates and times PostgreSQL reads as the
// instants and days they are: BC, past year 9999, offsets with seconds.
func TestProtobufTemporalEdges(t *testing.T) {
	im, pool := liveSetup(t)
	decl := `{"jsonSchema":{"type":"object","properties":{"i":{"type":"integer"},"d":{"type":["null","string"],"format":"date"},` +
		`"ts":{"type":["null","string"],"format":"date-time","airbyte_type":"timestamp_without_timezone"},` +
		`"tstz":{"type":["null","string"],"format":"date-time"},"tmtz":{"type":["null","string"],"format":"time","airbyte_type":"time_with_timezone"}}}}`
	b := &pbBody{tables: []pbTable{{name: "e", decl: decl, fields: []string{"i", "d", "ts", "tstz", "tmtz"}}}}
	ides := time.Date(-43, 3, 15, 12, 0, 0, 0, time.UTC)
	b.add(0, vInt(1), vDate(daysOf(-4712, 1, 1)), vTS(daysOf(-43, 3, 15), nanosOf(12, 0, 0, 0)), vTSTZ(ides.Unix(), 0, 3600), vTimeTZ(nanosOf(12, 0, 0, 0), 1172))
	b.add(0, vInt(2), vDate(daysOf(99999, 12, 31)), vTS(daysOf(12345, 6, 7), nanosOf(1, 2, 3, 4000)), vTSTZ(time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC).Unix(), 5000, 1172), vTimeTZ(1, -12*3600))
	b.add(0, vInt(3), vDate(0), vTS(0, 0), vTSTZ(-1, 999999999, -3600), vTimeTZ(0, -1))
	if _, _, err := im.ImportProtobuf(context.Background(), bytes.NewReader(b.bytes()), ""); err != nil {
		t.Fatal(err)
	}
	got := rows(t, pool, `SELECT i, d = want_d, ts = want_ts, tstz = want_tstz, tmtz = want_tmtz FROM e JOIN (VALUES
		(1, '4713-01-01 BC'::date, '0044-03-15 12:00:00 BC'::timestamp, '0044-03-15 12:00:00+00 BC'::timestamptz, '12:00:00+00:19:32'::timetz),
		(2, '99999-12-31', '12345-06-07 01:02:03.000004', '1900-01-01 00:00:00.000005+00', '00:00:00.000000001-12'),
		(3, '1970-01-01', '1970-01-01 00:00:00', '1970-01-01 00:00:00+00', '00:00:00-00:00:01')) AS w(wi, want_d, want_ts, want_tstz, want_tmtz) ON i = wi ORDER BY i`)
	if want := "1 true true true true; 2 true true true true; 3 true true true true"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

// TestProtobufRendering: dates, times and doubles are written as
// PostgreSQL and encoding/json write them.
func TestProtobufRendering(t *testing.T) {
	for days := int64(-3e6); days < 4e6; days += 997 {
		got, bc := appendDate(nil, days)
		tm := time.Unix(days*86400, 0).UTC()
		y := tm.Year()
		if y <= 0 {
			y = 1 - y
		}
		want := fmt.Sprintf("%04d-%02d-%02d", y, tm.Month(), tm.Day())
		if string(got) != want || bc != (tm.Year() <= 0) {
			t.Fatalf("day %d: %s (BC %v), want %s (%v)", days, got, bc, want, tm)
		}
	}
	for _, c := range []struct {
		nanos uint64
		want  string
	}{{0, "00:00:00"}, {1, "00:00:00.000000001"}, {nanosOf(23, 59, 59, 5e8), "23:59:59.5"}, {nanosOf(24, 0, 0, 0), "24:00:00"}, {nanosOf(1, 2, 3, 120), "01:02:03.00000012"}} {
		if got := appendClock(nil, c.nanos); string(got) != c.want {
			t.Errorf("%d ns: %s, want %s", c.nanos, got, c.want)
		}
	}
	var w worker
	for _, f := range []float64{0, math.Copysign(0, -1), 1, -1.5, 0.1, 1e-7, 123456789012345680000, 1e21, 1.7976931348623157e308, 5e-324, 9007199254740993} {
		want, _ := json.Marshal(f)
		if got := w.double(f); string(got.text) != string(want) {
			t.Errorf("%v: %s, want %s", f, got.text, want)
		}
	}
	for _, c := range []struct {
		schema string
		types  uint8
		format string
	}{
		{`{"type":["null","integer"]}`, jtNull | jtInteger, ""},
		{`{"type":"number"}`, jtNumber | jtInteger, ""},
		{`{"$ref":"WellKnownTypes.json#/definitions/Integer"}`, jtString | jtInteger, ""},
		{`{"$ref":"WellKnownTypes.json#/definitions/TimestampWithTimezone"}`, jtString, "date-time"},
		{`{"oneOf":[{"type":"null"},{"$ref":"WellKnownTypes.json#/definitions/Number"}]}`, jtNull | jtString | jtNumber | jtInteger, ""},
		{`{"anyOf":[{"type":"string","format":"date"},{"type":"array","items":{}}]}`, jtString | jtArray, ""},
		{`{"type":"string","format":"time","pattern":"x","maxLength":3}`, jtString, "time"},
		{`{"allOf":[{"type":["string","integer"]},{"type":"integer"}]}`, jtInteger, ""},
		{`{"$ref":"#/definitions/mine"}`, jtAny, ""},
		{`true`, jtAny, ""},
		{`false`, 0, ""},
	} {
		var v any
		if err := json.Unmarshal([]byte(c.schema), &v); err != nil {
			t.Fatal(err)
		}
		if got := looseCheck(v, 0); got.types != c.types || got.format != c.format {
			t.Errorf("%s: types %b format %q, want %b %q", c.schema, got.types, got.format, c.types, c.format)
		}
	}
}
