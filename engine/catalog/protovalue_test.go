package catalog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shapelog/shapelog/engine/recordpb"
	"github.com/shapelog/shapelog/engine/recordpb/recordpbtest"
)

// decodeProtoValue decodes the one data entry in b.
func decodeProtoValue(t *testing.T, b []byte) *recordpb.Value {
	t.Helper()
	var rec recordpb.Record
	if err := proto.Unmarshal(b, &rec); err != nil {
		t.Fatalf("%x: %v", b, err)
	}
	if len(rec.Data) != 1 {
		t.Fatalf("%x: %d values", b, len(rec.Data))
	}
	return rec.Data[0]
}

func pvString(s string) *recordpb.Value {
	return &recordpb.Value{Kind: &recordpb.Value_String_{String_: s}}
}
func pvInt(v int64) *recordpb.Value {
	return &recordpb.Value{Kind: &recordpb.Value_Integer{Integer: v}}
}
func pvNum(v float64) *recordpb.Value {
	return &recordpb.Value{Kind: &recordpb.Value_Number{Number: v}}
}
func pvDec(s string) *recordpb.Value {
	return &recordpb.Value{Kind: &recordpb.Value_BigDecimal{BigDecimal: s}}
}
func pvJSON(s string) *recordpb.Value {
	return &recordpb.Value{Kind: &recordpb.Value_Json{Json: []byte(s)}}
}

func pvBool(v bool) *recordpb.Value {
	return &recordpb.Value{Kind: &recordpb.Value_Boolean{Boolean: v}}
}

// sameValue compares values, NaN equal to NaN and -0 unequal to 0.
func sameValue(a, b *recordpb.Value) bool {
	x, ok1 := a.GetKind().(*recordpb.Value_Number)
	y, ok2 := b.GetKind().(*recordpb.Value_Number)
	if !ok1 || !ok2 {
		return proto.Equal(a, b)
	}
	if math.IsNaN(x.Number) || math.IsNaN(y.Number) {
		return math.IsNaN(x.Number) && math.IsNaN(y.Number) && a.IsNull == b.IsNull
	}
	return math.Float64bits(x.Number) == math.Float64bits(y.Number) && a.IsNull == b.IsNull
}

func TestAppendProtoValue(t *testing.T) {
	typ := func(k Kind) *Type { return &Type{Kind: k, Name: k.String(), Delim: ','} }
	arr := func(k Kind) *Type { return &Type{Kind: KindArray, Name: k.String() + "[]", Elem: typ(k), Delim: ','} }
	cases := []struct {
		typ    *Type
		text   string
		null   bool
		want   *recordpb.Value
		nulled bool
	}{
		{typ: typ(KindInt4), null: true, want: &recordpb.Value{IsNull: true}},
		{typ: arr(KindFloat8), null: true, want: &recordpb.Value{IsNull: true}},
		{typ: typ(KindInt2), text: "-32768", want: pvInt(-32768)},
		{typ: typ(KindInt4), text: "0", want: pvInt(0)},
		{typ: typ(KindInt8), text: "-9223372036854775808", want: pvInt(math.MinInt64)},
		{typ: typ(KindInt8), text: "9223372036854775807", want: pvInt(math.MaxInt64)},
		{typ: typ(KindOID), text: "4294967295", want: pvInt(4294967295)},
		{typ: typ(KindFloat8), text: "NaN", want: pvNum(math.NaN())},
		{typ: typ(KindFloat8), text: "Infinity", want: pvNum(math.Inf(1))},
		{typ: typ(KindFloat4), text: "-Infinity", want: pvNum(math.Inf(-1))},
		{typ: typ(KindFloat8), text: "-0", want: pvNum(math.Copysign(0, -1))},
		{typ: typ(KindFloat8), text: "1e+300", want: pvNum(1e300)},
		{typ: typ(KindFloat4), text: "0.1", want: pvNum(0.1)},
		{typ: typ(KindNumeric), text: "1234567890123456789012345678901234567890.5", want: pvDec("1234567890123456789012345678901234567890.5")},
		{typ: typ(KindNumeric), text: "NaN", want: pvDec("NaN")},
		{typ: typ(KindNumeric), text: "-Infinity", want: pvDec("-Infinity")},
		{typ: typ(KindBool), text: "t", want: pvBool(true)},
		{typ: typ(KindBool), text: "f", want: pvBool(false)},
		{typ: typ(KindJSONB), text: `{"a": [1, "é"]}`, want: pvJSON(`{"a": [1, "é"]}`)},
		{typ: typ(KindText), text: "h\u00e9llo \"q\" \\ \n\x01 \U0001F389", want: pvString("h\u00e9llo \"q\" \\ \n\x01 \U0001F389")},
		{typ: typ(KindText), text: "", want: pvString("")},
		{typ: typ(KindText), text: "bad \xff\xfe utf8 \xe2\x82", want: pvString("bad \ufffd\ufffd utf8 \ufffd\ufffd")},
		{typ: typ(KindText), text: strings.Repeat("é", 200), want: pvString(strings.Repeat("é", 200))},
		{typ: typ(KindUUID), text: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", want: pvString("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")},
		{typ: typ(KindDate), text: "2024-01-02 BC", want: recordpbtest.Date(-2023, 1, 2)},
		{typ: typ(KindDate), text: "1970-01-01", want: recordpbtest.Date(1970, 1, 1)},
		{typ: typ(KindDate), text: "12345-06-07", want: recordpbtest.Date(12345, 6, 7)},
		{typ: typ(KindDate), text: "infinity", want: &recordpb.Value{IsNull: true}, nulled: true},
		{typ: typ(KindTime), text: "03:04:05.123456", want: recordpbtest.Time(3, 4, 5, 123456000)},
		{typ: typ(KindTime), text: "24:00:00", want: recordpbtest.Time(24, 0, 0, 0)},
		{typ: typ(KindTimeTZ), text: "12:00:00+02", want: recordpbtest.TimeTZ(12, 0, 0, 0, 7200)},
		{typ: typ(KindTimeTZ), text: "12:00:00.5-11", want: recordpbtest.TimeTZ(12, 0, 0, 500000000, -39600)},
		{typ: typ(KindTimeTZ), text: "12:00:00+05:30", want: recordpbtest.TimeTZ(12, 0, 0, 0, 19800)},
		{typ: typ(KindTimeTZ), text: "12:00:00-01:02:03", want: recordpbtest.TimeTZ(12, 0, 0, 0, -3723)},
		{typ: typ(KindInterval), text: "P1Y2M3DT4H5M6.5S", want: pvString("P1Y2M3DT4H5M6.5S")},
		{typ: typ(KindTimestamp), text: "2024-01-02 03:04:05.123456", want: recordpbtest.Timestamp(time.Date(2024, 1, 2, 3, 4, 5, 123456000, time.UTC), false)},
		{typ: typ(KindTimestamp), text: "0044-03-15 12:00:00 BC", want: recordpbtest.Timestamp(time.Date(-43, 3, 15, 12, 0, 0, 0, time.UTC), false)},
		{typ: typ(KindTimestamp), text: "infinity", want: &recordpb.Value{IsNull: true}, nulled: true},
		{typ: typ(KindTimestampTZ), text: "2024-01-02 03:04:05+00", want: recordpbtest.Timestamp(time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC), true)},
		{typ: typ(KindTimestampTZ), text: "0044-03-15 12:00:00+00 BC", want: recordpbtest.Timestamp(time.Date(-43, 3, 15, 12, 0, 0, 0, time.UTC), true)},
		{typ: typ(KindTimestampTZ), text: "2024-01-02 03:04:05+05:30", want: recordpbtest.Timestamp(time.Date(2024, 1, 2, 3, 4, 5, 0, time.FixedZone("", 19800)), true)},
		{typ: typ(KindTimestampTZ), text: "-infinity", want: &recordpb.Value{IsNull: true}, nulled: true},
		{typ: typ(KindBytea), text: `\x00ff10`, want: pvString("AP8Q")},
		{typ: typ(KindBytea), text: `\x`, want: pvString("")},
		{typ: typ(KindBytea), text: `\x` + strings.Repeat("ab", 1000), want: pvString(strings.Repeat("q6ur", 333) + "qw==")},
		{typ: typ(KindEnum), text: "happy", want: pvString("happy")},
		{typ: arr(KindInt4), text: "{1,2,NULL}", want: pvJSON(`[1,2,null]`)},
		{typ: arr(KindInt4), text: "{}", want: pvJSON(`[]`)},
		{typ: arr(KindInt4), text: "{{1,2},{3,NULL}}", want: pvJSON(`[[1,2],[3,null]]`)},
		{typ: arr(KindInt8), text: "{1,-9223372036854775808,NULL}", want: pvJSON(`[1,-9223372036854775808,null]`)},
		{typ: arr(KindInt8), text: "{{{1}},{{2}}}", want: pvJSON(`[[[1]],[[2]]]`)},
		{typ: arr(KindNumeric), text: "{1.5,NaN,-0.000001,Infinity}", want: pvJSON(`[1.5,null,-0.000001,null]`), nulled: true},
		{typ: arr(KindNumeric), text: "{1.5,NULL}", want: pvJSON(`[1.5,null]`)},
		{typ: arr(KindFloat8), text: "{NaN,1.5,-0,Infinity,-Infinity,1e+300}", want: pvJSON(`[null,1.5,-0,null,null,1e+300]`), nulled: true},
		{typ: arr(KindFloat4), text: "{{NaN},{2}}", want: pvJSON(`[[null],[2]]`), nulled: true},
		{typ: arr(KindText), text: `{"a \"b\"",NULL,é}`, want: pvJSON(`["a \"b\"",null,"é"]`)},
		{typ: arr(KindBytea), text: `{"\\x0102"}`, want: pvJSON(`["AQI="]`)},
		{typ: arr(KindTimestampTZ), text: `{"2024-01-02 03:04:05+00"}`, want: pvJSON(`["2024-01-02T03:04:05Z"]`)},
		{typ: arr(KindTimeTZ), text: `{12:00:00+02}`, want: pvJSON(`["12:00:00+02"]`)},
		{typ: arr(KindJSONB), text: `{"{\"a\": 1}",NULL}`, want: pvJSON(`[{"a": 1},null]`)},
	}
	for _, c := range cases {
		var text []byte
		if !c.null {
			text = []byte(c.text)
		}
		name := fmt.Sprintf("%s %q", c.typ.Name, c.text)
		got, nulled, err := AppendProtoValue([]byte("prefix"), c.typ, text)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !bytes.HasPrefix(got, []byte("prefix")) {
			t.Errorf("%s: dst prefix lost", name)
			continue
		}
		v := decodeProtoValue(t, got[len("prefix"):])
		if !sameValue(v, c.want) || nulled != c.nulled {
			t.Errorf("%s: got %v (nulled %v), want %v (nulled %v)", name, v, nulled, c.want, c.nulled)
		}
	}

	// Malformed text is an error and leaves dst as it was.
	for _, c := range []struct {
		k    Kind
		text string
	}{
		{KindInt4, "1.5"}, {KindInt4, "01"}, {KindInt8, "9223372036854775808"}, {KindInt8, "+1"}, {KindOID, "-1"},
		{KindFloat8, "inf"}, {KindFloat8, "0x1p-2"}, {KindBool, "true"}, {KindJSONB, ""},
		{KindBytea, "00ff"}, {KindBytea, `\x0`}, {KindBytea, `\xzz`},
	} {
		got, _, err := AppendProtoValue([]byte("prefix"), typ(c.k), []byte(c.text))
		if err == nil || string(got) != "prefix" {
			t.Errorf("%v %q: %q, %v; want an error and dst unchanged", c.k, c.text, got, err)
		}
	}
	for _, c := range []struct {
		t    *Type
		text string
	}{{arr(KindInt4), "{1,"}, {arr(KindInt8), "{x}"}, {arr(KindFloat8), "{inf}"}, {&Type{Kind: KindArray}, "{}"}} {
		got, _, err := AppendProtoValue([]byte("prefix"), c.t, []byte(c.text))
		if err == nil || string(got) != "prefix" {
			t.Errorf("%s %q: %q, %v; want an error and dst unchanged", c.t.Name, c.text, got, err)
		}
	}
	if _, _, err := AppendProtoValue(nil, nil, []byte("1")); err == nil {
		t.Error("nil type accepted")
	}
}

// The common values are written without allocating.
func TestAppendProtoValueAllocs(t *testing.T) {
	typ := func(k Kind) *Type { return &Type{Kind: k, Name: k.String(), Delim: ','} }
	vals := []struct {
		t    *Type
		text string
	}{
		{typ(KindInt4), "12345"}, {typ(KindInt8), "-9223372036854775808"}, {typ(KindFloat8), "1.5e-07"},
		{typ(KindFloat8), "NaN"}, {typ(KindNumeric), "12.50"}, {typ(KindBool), "t"}, {typ(KindText), "héllo wörld"},
		{typ(KindUUID), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}, {typ(KindTimestampTZ), "2024-01-02 03:04:05.123456+00"},
		{typ(KindTimeTZ), "12:00:00+02"}, {typ(KindBytea), `\x00ff10`}, {typ(KindJSONB), `{"a": 1}`},
		{&Type{Kind: KindArray, Elem: typ(KindInt8), Delim: ','}, "{1,2,3}"},
	}
	buf := make([]byte, 0, 4096)
	for _, v := range vals {
		text := []byte(v.text)
		if n := testing.AllocsPerRun(100, func() {
			var err error
			if buf, _, err = AppendProtoValue(buf[:0], v.t, text); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("%v %q: %v allocations per value", v.t.Kind, v.text, n)
		}
	}
}

// expectedProto is the value the protobuf encoding must hold for a value
// the JSON export (format=json) writes as js for a column of type typ,
// following the conversions shapelog's source applies to the JSON export
// (int8 and numeric strings to numbers, in arrays NaN and ±Infinity to
// null), except that protobuf carries float specials and numeric text as
// they are, and timetz gets a ±HH:MM offset.
func expectedProto(t *testing.T, typ *Type, js string) (*recordpb.Value, bool) {
	t.Helper()
	if js == "null" {
		return &recordpb.Value{IsNull: true}, false
	}
	var v any
	d := json.NewDecoder(strings.NewReader(js))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	str, _ := v.(string)
	switch typ.Kind {
	case KindInt2, KindInt4, KindOID, KindInt8:
		n, err := strconv.ParseInt(fmt.Sprint(v), 10, 64)
		if err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		return pvInt(n), false
	case KindFloat4, KindFloat8:
		s := fmt.Sprint(v)
		f, err := strconv.ParseFloat(s, 64) // parses NaN, Infinity, -Infinity too
		if err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		return pvNum(f), false
	case KindNumeric:
		return pvDec(str), false
	case KindBool:
		return pvBool(v.(bool)), false
	case KindJSON, KindJSONB:
		return pvJSON(js), false
	case KindArray:
		elem := typ.Elem
		for elem.Kind == KindArray {
			elem = elem.Elem
		}
		conv, nulled := recordpbtest.SourceArray(v, elemClass(elem.Kind))
		b, _ := json.Marshal(conv)
		return pvJSON(string(b)), nulled
	case KindDate, KindTime, KindTimeTZ, KindTimestamp, KindTimestampTZ:
		v, err := recordpbtest.Temporal(temporalTypes[typ.Kind], str)
		if err != nil {
			t.Fatal(err)
		}
		return v, false
	}
	return pvString(str), false
}

// elemClass is how recordpbtest.SourceArray names an array element kind.
func elemClass(k Kind) string {
	switch k {
	case KindFloat4, KindFloat8:
		return "float"
	case KindInt8:
		return "int8"
	case KindNumeric:
		return "numeric"
	}
	return ""
}

var temporalTypes = map[Kind]string{KindDate: "date", KindTime: "time", KindTimeTZ: "timetz", KindTimestamp: "timestamp", KindTimestampTZ: "timestamptz"}

// sameJSONValue compares json values structurally (numbers by their text),
// other values with sameValue.
func sameJSONValue(t *testing.T, got, want *recordpb.Value) bool {
	t.Helper()
	g, ok1 := got.GetKind().(*recordpb.Value_Json)
	w, ok2 := want.GetKind().(*recordpb.Value_Json)
	if !ok1 || !ok2 {
		return sameValue(got, want)
	}
	dec := func(b []byte) any {
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		var v any
		if err := d.Decode(&v); err != nil {
			t.Errorf("%s: %v", b, err)
		}
		return v
	}
	return reflect.DeepEqual(dec(g.Json), dec(w.Json))
}

// protoExtraCases are values the protobuf encoding treats apart, besides
// roundTripCases.
var protoExtraCases = []roundTripCase{
	{name: "p_numinf", typ: "numeric", value: "'Infinity'", json: `"Infinity"`, kind: KindNumeric},
	{name: "p_numninf", typ: "numeric", value: "'-Infinity'", json: `"-Infinity"`, kind: KindNumeric},
	{name: "p_f4inf", typ: "float4", value: "'Infinity'", json: `"Infinity"`, kind: KindFloat4},
	{name: "p_tmtz530", typ: "timetz", value: "'12:00:00+05:30'", json: `"12:00:00+05:30"`, kind: KindTimeTZ},
	{name: "p_tmtzneg", typ: "timetz", value: "'23:59:59.999-11'", json: `"23:59:59.999-11"`, kind: KindTimeTZ},
	{name: "p_tmtzsec", typ: "timetz", value: "'12:00:00-01:02:03'", json: `"12:00:00-01:02:03"`, kind: KindTimeTZ},
	{name: "p_uni", typ: "text", value: `E'\u00e9\u4e2d\U0001F600\uFFFD'`, json: "\"\u00e9\u4e2d\U0001F600\uFFFD\"", kind: KindText},
	{name: "p_a_numspec", typ: "numeric[]", value: "'{Infinity,-Infinity,2}'", json: `["Infinity","-Infinity","2"]`, kind: KindArray},
	{name: "p_a_f4", typ: "float4[]", value: "'{{NaN,1},{-Infinity,0.5}}'", json: `[["NaN",1],["-Infinity",0.5]]`, kind: KindArray},
	{name: "p_a_i8nested", typ: "int8[]", value: "'{{1,2},{NULL,-3}}'", json: `[["1","2"],[null,"-3"]]`, kind: KindArray},
	{name: "p_a_i8empty", typ: "int8[]", value: "'{}'", json: `[]`, kind: KindArray},
	{name: "p_a_numempty", typ: "numeric[]", value: "ARRAY[]::numeric[]", json: `[]`, kind: KindArray},
	{name: "p_a_tmtz", typ: "timetz[]", value: "'{12:00:00+02}'", json: `["12:00:00+02"]`, kind: KindArray},
	{name: "p_money", typ: "money", value: "12.5", json: `"$12.50"`, kind: KindText},
	{name: "p_d_big", typ: "big[]", value: "'{7,NULL}'", json: `["7",null]`, kind: KindArray},
}

// TestProtoRoundTrip encodes what a real PostgreSQL sends for every type of
// TestRoundTrip and more, and for NULL in every column, and checks each
// value against the JSON export's value of the same text.
func TestProtoRoundTrip(t *testing.T) {
	ctx, conn := connect(t)
	createRoundTripTypes(t, ctx, conn, "") // big nullable here: the second row is all NULL
	mustExec(t, ctx, conn, `SET lc_monetary = 'C'`)

	cases := append(append([]roundTripCase{}, roundTripCases...), protoExtraCases...)
	var cols, vals, nulls []string
	for _, c := range cases {
		cols = append(cols, c.name+" "+c.typ)
		vals = append(vals, c.value)
		nulls = append(nulls, "NULL")
	}
	mustExec(t, ctx, conn, "CREATE TABLE prt ("+strings.Join(cols, ", ")+")")
	mustExec(t, ctx, conn, "INSERT INTO prt VALUES ("+strings.Join(vals, ", ")+"), ("+strings.Join(nulls, ", ")+")")
	types := NewTypes()
	tables, err := LoadTables(ctx, conn, types, Filter{Tables: []string{"prt"}})
	if err != nil {
		t.Fatal(err)
	}
	table := tables[0]
	res := conn.PgConn().ExecParams(ctx, "SELECT * FROM prt ORDER BY i2 NULLS LAST", nil, nil, nil, nil).Read()
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if len(res.Rows) != 2 {
		t.Fatalf("%d rows", len(res.Rows))
	}
	var record []byte
	for i, c := range cases {
		col := table.Columns[i]
		if col.Name != c.name {
			t.Fatalf("column %d is %s, want %s", i, col.Name, c.name)
		}
		text := res.Rows[0][i]
		js, err := AppendValue(nil, col.Type, text, FormatJSON)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if string(js) != c.json {
			t.Errorf("%s: JSON export %s, the test expects %s", c.name, js, c.json)
		}
		want, wantNulled := expectedProto(t, col.Type, string(js))
		start := len(record)
		var nulled bool
		record, nulled, err = AppendProtoValue(record, col.Type, text)
		if err != nil {
			t.Errorf("%s: AppendProtoValue(%q): %v", c.name, text, err)
			continue
		}
		got := decodeProtoValue(t, record[start:])
		if !sameJSONValue(t, got, want) || nulled != wantNulled {
			t.Errorf("%s (%s): AppendProtoValue(%q)\n got %v (nulled %v)\nwant %v (nulled %v)", c.name, col.Type.Name, text, got, nulled, want, wantNulled)
		}
		// NULL, in the second row.
		if res.Rows[1][i] != nil {
			t.Fatalf("%s: row 2 is not NULL", c.name)
		}
		b, nulled, err := AppendProtoValue(nil, col.Type, res.Rows[1][i])
		if v := decodeProtoValue(t, b); err != nil || nulled || !v.IsNull || v.Kind != nil {
			t.Errorf("%s: NULL encoded as %v, %v, %v", c.name, v, nulled, err)
		}
	}
	// The entries appended one after another make a record's data.
	var rec recordpb.Record
	if err := proto.Unmarshal(record, &rec); err != nil || len(rec.Data) != len(cases) {
		t.Fatalf("the values as one record: %d values, %v", len(rec.Data), err)
	}
}
