package catalog

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/santhosh-tekuri/jsonschema/v5"
)

// roundTripCase is one column of the round-trip table: its SQL type and
// value, and the JSON AppendValue must produce for it.
type roundTripCase struct {
	name, typ, value string
	json             string // FormatJSON
	convex           string // FormatConvexJSON; "" = same as json
	kind             Kind
	skipFormat       bool // the value is documented not to satisfy the schema's "format"
}

var longBytes = func() []byte {
	b := make([]byte, 301)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}()

var roundTripCases = []roundTripCase{
	{name: "i2", typ: "int2", value: "-32768", json: `-32768`, kind: KindInt2},
	{name: "i4", typ: "int4", value: "2147483647", json: `2147483647`, kind: KindInt4},
	{name: "i8min", typ: "int8", value: "-9223372036854775808", json: `"-9223372036854775808"`, convex: `{"$integer":"AAAAAAAAAIA="}`, kind: KindInt8},
	{name: "i8max", typ: "int8", value: "9223372036854775807", json: `"9223372036854775807"`, convex: `{"$integer":"/////////38="}`, kind: KindInt8},
	{name: "i8one", typ: "bigint", value: "1", json: `"1"`, convex: `{"$integer":"AQAAAAAAAAA="}`, kind: KindInt8},
	{name: "i8neg", typ: "bigint", value: "-1", json: `"-1"`, convex: `{"$integer":"//////////8="}`, kind: KindInt8},
	{name: "oidv", typ: "oid", value: "4294967295", json: `4294967295`, kind: KindOID},
	{name: "num40", typ: "numeric", value: "1234567890123456789012345678901234567890.5", json: `"1234567890123456789012345678901234567890.5"`, kind: KindNumeric},
	{name: "numnan", typ: "numeric(10,2)", value: "'NaN'", json: `"NaN"`, kind: KindNumeric},
	{name: "f8nan", typ: "float8", value: "'NaN'", json: `"NaN"`, convex: `{"$float":"AAAAAAAA+H8="}`, kind: KindFloat8},
	{name: "f8inf", typ: "float8", value: "'Infinity'", json: `"Infinity"`, convex: `{"$float":"AAAAAAAA8H8="}`, kind: KindFloat8},
	{name: "f8ninf", typ: "float8", value: "'-Infinity'", json: `"-Infinity"`, convex: `{"$float":"AAAAAAAA8P8="}`, kind: KindFloat8},
	{name: "f8nzero", typ: "float8", value: "'-0'", json: `-0`, convex: `{"$float":"AAAAAAAAAIA="}`, kind: KindFloat8},
	{name: "f8big", typ: "float8", value: "1e300", json: `1e+300`, kind: KindFloat8},
	{name: "f8small", typ: "double precision", value: "1.5e-7", json: `1.5e-07`, kind: KindFloat8},
	{name: "f8frac", typ: "float8", value: "0.1", json: `0.1`, kind: KindFloat8},
	{name: "f4nan", typ: "float4", value: "'NaN'", json: `"NaN"`, convex: `{"$float":"AAAAAAAA+H8="}`, kind: KindFloat4},
	{name: "f4ninf", typ: "real", value: "'-Infinity'", json: `"-Infinity"`, convex: `{"$float":"AAAAAAAA8P8="}`, kind: KindFloat4},
	{name: "f4nzero", typ: "real", value: "'-0'", json: `-0`, convex: `{"$float":"AAAAAAAAAIA="}`, kind: KindFloat4},
	{name: "f4", typ: "float4", value: "0.1", json: `0.1`, kind: KindFloat4},
	{name: "f4big", typ: "float4", value: "3.4e38", json: `3.4e+38`, kind: KindFloat4},
	{name: "bt", typ: "bool", value: "true", json: `true`, kind: KindBool},
	{name: "bf", typ: "boolean", value: "false", json: `false`, kind: KindBool},
	{name: "txt", typ: "text", value: `E'h\u00e9llo "q" \\ back\nnew\ttab\x01ctl\x1f \U0001F389 \u2028 end\x7f'`,
		json: "\"h\u00e9llo \\\"q\\\" \\\\ back\\nnew\\ttab\\u0001ctl\\u001f \U0001F389 \u2028 end\x7f\"", kind: KindText},
	{name: "txtempty", typ: "text", value: "''", json: `""`, kind: KindText},
	{name: "vc", typ: "varchar(10)", value: "'abc'", json: `"abc"`, kind: KindText},
	{name: "ch", typ: "char(5)", value: "'ab'", json: `"ab   "`, kind: KindText},
	{name: "nm", typ: "name", value: "'nm'", json: `"nm"`, kind: KindText},
	{name: "uu", typ: "uuid", value: "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'", json: `"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"`, kind: KindUUID},
	{name: "dt", typ: "date", value: "'2024-01-02'", json: `"2024-01-02"`, kind: KindDate},
	{name: "tm", typ: "time", value: "'03:04:05.123456'", json: `"03:04:05.123456"`, kind: KindTime},
	{name: "tmtz", typ: "timetz", value: "'12:00:00+02'", json: `"12:00:00+02"`, kind: KindTimeTZ},
	{name: "ts", typ: "timestamp", value: "'2024-01-02 03:04:05.123456'", json: `"2024-01-02T03:04:05.123456"`, kind: KindTimestamp},
	{name: "ts0", typ: "timestamp(0)", value: "'2024-01-02 03:04:05'", json: `"2024-01-02T03:04:05"`, kind: KindTimestamp},
	{name: "tstz", typ: "timestamptz", value: "'2024-01-02 03:04:05.123456+02'", json: `"2024-01-02T01:04:05.123456Z"`, kind: KindTimestampTZ},
	{name: "iv", typ: "interval", value: "'1 year 2 months 3 days 04:05:06.5'", json: `"P1Y2M3DT4H5M6.5S"`, kind: KindInterval},
	{name: "ivneg", typ: "interval", value: "'-1 day'", json: `"P-1D"`, kind: KindInterval},
	{name: "by", typ: "bytea", value: `'\x00ff10'`, json: `"AP8Q"`, convex: `{"$bytes":"AP8Q"}`, kind: KindBytea},
	{name: "byempty", typ: "bytea", value: `''`, json: `""`, convex: `{"$bytes":""}`, kind: KindBytea},
	{name: "bylong", typ: "bytea", value: `'\x` + fmt.Sprintf("%x", longBytes) + `'`,
		json: `"` + base64.StdEncoding.EncodeToString(longBytes) + `"`, convex: `{"$bytes":"` + base64.StdEncoding.EncodeToString(longBytes) + `"}`, kind: KindBytea},
	{name: "js", typ: "json", value: `'{"b": 1,  "a": [1, 2]}'`, json: `{"b": 1,  "a": [1, 2]}`, kind: KindJSON},
	{name: "jsb", typ: "jsonb", value: `'{"b": 1,  "a": [1, "\u00e9\n"]}'`, json: `{"a": [1, "é\n"], "b": 1}`, kind: KindJSONB},
	{name: "jsbscalar", typ: "jsonb", value: `'"x"'`, json: `"x"`, kind: KindJSONB},
	{name: "a_i4", typ: "int4[]", value: "'{1,2,NULL}'", json: `[1,2,null]`, kind: KindArray},
	{name: "a_i4lb", typ: "int4[]", value: "'[0:1]={7,8}'", json: `[7,8]`, kind: KindArray},
	{name: "a_i4empty", typ: "int4[]", value: "'{}'", json: `[]`, kind: KindArray},
	{name: "a_txt", typ: "text[]", value: `ARRAY['a b', 'c"d', NULL, 'NULL', '', 'x\y', 'a,b', 'null', '{}', 'é', E'tab\there']`,
		json: `["a b","c\"d",null,"NULL","","x\\y","a,b","null","{}","é","tab\there"]`, kind: KindArray},
	{name: "a_2d", typ: "int4[][]", value: "'{{1,2},{3,4}}'", json: `[[1,2],[3,4]]`, kind: KindArray},
	{name: "a_3d", typ: "int2[]", value: "'{{{1},{NULL}},{{3},{4}}}'", json: `[[[1],[null]],[[3],[4]]]`, kind: KindArray},
	{name: "a_jsonb", typ: "jsonb[]", value: `ARRAY['{"a": 1}'::jsonb, '[1, "x"]', 'null', NULL]`, json: `[{"a": 1},[1, "x"],null,null]`, kind: KindArray},
	{name: "a_json", typ: "json[]", value: `ARRAY['{"a" : "b\\c"}'::json]`, json: `[{"a" : "b\\c"}]`, kind: KindArray},
	{name: "a_i8", typ: "int8[]", value: "'{1,-1}'", json: `["1","-1"]`, convex: `[{"$integer":"AQAAAAAAAAA="},{"$integer":"//////////8="}]`, kind: KindArray},
	{name: "a_f8", typ: "float8[]", value: "'{NaN,1.5,-0,Infinity}'", json: `["NaN",1.5,-0,"Infinity"]`,
		convex: `[{"$float":"AAAAAAAA+H8="},1.5,{"$float":"AAAAAAAAAIA="},{"$float":"AAAAAAAA8H8="}]`, kind: KindArray},
	{name: "a_num", typ: "numeric[]", value: "'{1.5,NaN,-0.000001}'", json: `["1.5","NaN","-0.000001"]`, kind: KindArray},
	{name: "a_by", typ: "bytea[]", value: `ARRAY['\x0102'::bytea, '\x']`, json: `["AQI=",""]`, convex: `[{"$bytes":"AQI="},{"$bytes":""}]`, kind: KindArray},
	{name: "a_tstz", typ: "timestamptz[]", value: `ARRAY['2024-01-02 03:04:05+00'::timestamptz, 'infinity']`, json: `["2024-01-02T03:04:05Z","infinity"]`, kind: KindArray, skipFormat: true},
	{name: "a_ts", typ: "timestamp[]", value: `ARRAY['2024-01-02 03:04:05.5'::timestamp]`, json: `["2024-01-02T03:04:05.5"]`, kind: KindArray},
	{name: "a_bool", typ: "bool[]", value: `'{t,f,NULL}'`, json: `[true,false,null]`, kind: KindArray},
	{name: "a_uuid", typ: "uuid[]", value: `'{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}'`, json: `["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]`, kind: KindArray},
	{name: "a_box", typ: "box[]", value: `ARRAY['(1,1),(0,0)'::box, '(3,3),(2,2)']`, json: `["(1,1),(0,0)","(3,3),(2,2)"]`, kind: KindArray},
	{name: "en", typ: "mood", value: "'happy'", json: `"happy"`, kind: KindEnum},
	{name: "a_en", typ: "mood[]", value: "'{sad,happy,NULL}'", json: `["sad","happy",null]`, kind: KindArray},
	{name: "d_int", typ: "posint", value: "5", json: `5`, kind: KindInt4},
	{name: "a_d_int", typ: "posint[]", value: "'{1,2}'", json: `[1,2]`, kind: KindArray},
	{name: "d_tags", typ: "tags", value: `'{x,"y z"}'`, json: `["x","y z"]`, kind: KindArray},
	{name: "d_mood", typ: "dmood", value: "'ok'", json: `"ok"`, kind: KindEnum},
	{name: "d_i8", typ: "big", value: "7", json: `"7"`, convex: `{"$integer":"BwAAAAAAAAA="}`, kind: KindInt8},
	{name: "cmp", typ: "pair", value: "ROW(1, 'a b')", json: `"(1,\"a b\")"`, kind: KindText},
	{name: "a_cmp", typ: "pair[]", value: "ARRAY[ROW(1, 'a b')::pair, NULL]", json: `["(1,\"a b\")",null]`, kind: KindArray},
	{name: "inet", typ: "inet", value: "'192.168.0.1/24'", json: `"192.168.0.1/24"`, kind: KindText},
	{name: "rng", typ: "int4range", value: "'[1,5)'", json: `"[1,5)"`, kind: KindText},
}

// createRoundTripTypes creates the enum, composite and domain types the
// round-trip cases use; bigNull is the constraint of the domain big.
func createRoundTripTypes(t *testing.T, ctx context.Context, conn *pgx.Conn, bigNull string) {
	t.Helper()
	mustExec(t, ctx, conn, `CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')`)
	mustExec(t, ctx, conn, `CREATE TYPE pair AS (a int, b text)`)
	mustExec(t, ctx, conn, `CREATE DOMAIN posint AS int4 CHECK (VALUE > 0)`)
	mustExec(t, ctx, conn, `CREATE DOMAIN tags AS text[]`)
	mustExec(t, ctx, conn, `CREATE DOMAIN dmood AS mood`)
	mustExec(t, ctx, conn, `CREATE DOMAIN big0 AS int8`)
	mustExec(t, ctx, conn, `CREATE DOMAIN big AS big0 `+bigNull)
}

func TestRoundTrip(t *testing.T) {
	ctx, conn := connect(t)
	createRoundTripTypes(t, ctx, conn, "NOT NULL")

	var cols, vals []string
	for _, c := range roundTripCases {
		cols = append(cols, c.name+" "+c.typ)
		vals = append(vals, c.value)
	}
	mustExec(t, ctx, conn, "CREATE TABLE rt ("+strings.Join(cols, ", ")+")")
	mustExec(t, ctx, conn, "INSERT INTO rt VALUES ("+strings.Join(vals, ", ")+")")

	types := NewTypes()
	tables, err := LoadTables(ctx, conn, types, Filter{Tables: []string{"rt"}})
	if err != nil {
		t.Fatal(err)
	}
	table := tables[0]
	if len(table.Columns) != len(roundTripCases) {
		t.Fatalf("%d columns, want %d", len(table.Columns), len(roundTripCases))
	}

	res := conn.PgConn().ExecParams(ctx, "SELECT * FROM rt", nil, nil, nil, nil).Read()
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	row := res.Rows[0]
	for i, c := range roundTripCases {
		col := table.Columns[i]
		if col.Name != c.name {
			t.Fatalf("column %d is %s, want %s", i, col.Name, c.name)
		}
		if col.Type.Kind != c.kind {
			t.Errorf("%s (%s): kind %v, want %v", c.name, col.Type.Name, col.Type.Kind, c.kind)
		}
		// The result's type OID is the base type for domains; the
		// table's (through LoadTables) is the declared one.
		for _, f := range []Format{FormatJSON, FormatConvexJSON} {
			want := c.json
			if f == FormatConvexJSON && c.convex != "" {
				want = c.convex
			}
			checkValue(t, c.name, col.Type, row[i], f, want, !c.skipFormat)
			rtyp, err := types.Lookup(ctx, conn, res.FieldDescriptions[i].DataTypeOID)
			if err != nil {
				t.Fatal(err)
			}
			checkValue(t, c.name+" (result type "+rtyp.Name+")", rtyp, row[i], f, want, !c.skipFormat)
		}
	}
}

// checkValue encodes text and compares it with want, checks it is JSON and
// validates it against Schema.
func checkValue(t *testing.T, name string, typ *Type, text []byte, f Format, want string, assertFormat bool) {
	t.Helper()
	prefix := []byte("prefix")
	got, err := AppendValue(prefix, typ, text, f)
	if err != nil {
		t.Errorf("%s %v: AppendValue(%q): %v", name, f, text, err)
		return
	}
	if !bytes.HasPrefix(got, []byte("prefix")) {
		t.Errorf("%s %v: dst prefix lost", name, f)
	}
	got = got[len("prefix"):]
	if string(got) != want {
		t.Errorf("%s %v: AppendValue(%q)\n got %s\nwant %s", name, f, text, got, want)
	}
	if !json.Valid(got) {
		t.Errorf("%s %v: invalid JSON %s", name, f, got)
		return
	}
	if err := validate(Schema(typ, f), got, assertFormat); err != nil {
		s, _ := json.Marshal(Schema(typ, f))
		t.Errorf("%s %v: %s does not match its schema %s: %v", name, f, got, s, err)
	}
}

// validate checks a JSON value against a draft-07 schema.
func validate(schema map[string]any, value []byte, assertFormat bool) error {
	if !assertFormat {
		schema = stripFormat(schema).(map[string]any)
	}
	raw, err := json.Marshal(schema)
	if err != nil {
		return err
	}
	c := jsonschema.NewCompiler()
	c.Draft = jsonschema.Draft7
	if err := c.AddResource("schema.json", bytes.NewReader(raw)); err != nil {
		return err
	}
	s, err := c.Compile("schema.json")
	if err != nil {
		return fmt.Errorf("compiling schema: %w", err)
	}
	d := json.NewDecoder(bytes.NewReader(value))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return err
	}
	return s.Validate(v)
}

// stripFormat removes "format" keywords.
func stripFormat(s any) any {
	switch s := s.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, v := range s {
			if k != "format" {
				out[k] = stripFormat(v)
			}
		}
		return out
	case []any:
		out := make([]any, len(s))
		for i, v := range s {
			out[i] = stripFormat(v)
		}
		return out
	}
	return s
}

// TestEdgeTemporalValues pins how values without an ISO 8601 form are
// written: infinities and BC dates stay as PostgreSQL prints them.
func TestEdgeTemporalValues(t *testing.T) {
	ctx, conn := connect(t)
	cases := []struct {
		typ, value, want string
	}{
		{"date", "'infinity'", `"infinity"`},
		{"date", "'-infinity'", `"-infinity"`},
		{"date", "'2024-01-02 BC'", `"2024-01-02 BC"`},
		{"timestamp", "'infinity'", `"infinity"`},
		{"timestamp", "'-infinity'", `"-infinity"`},
		{"timestamp", "'0044-03-15 12:00:00 BC'", `"0044-03-15T12:00:00 BC"`},
		{"timestamp", "'10000-01-02 03:04:05'", `"10000-01-02T03:04:05"`},
		{"timestamptz", "'infinity'", `"infinity"`},
		{"timestamptz", "'-infinity'", `"-infinity"`},
		{"timestamptz", "'0044-03-15 12:00:00.5+00 BC'", `"0044-03-15T12:00:00.5Z BC"`},
		{"timestamptz", "'1900-01-01 00:00:00+00'", `"1900-01-01T00:00:00Z"`},
		{"time", "'24:00:00'", `"24:00:00"`},
		{"interval", "'0'", `"PT0S"`},
	}
	types := NewTypes()
	for _, c := range cases {
		res := conn.PgConn().ExecParams(ctx, "SELECT "+c.value+"::"+c.typ, nil, nil, nil, nil).Read()
		if res.Err != nil {
			t.Fatal(res.Err)
		}
		typ, err := types.Lookup(ctx, conn, res.FieldDescriptions[0].DataTypeOID)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []Format{FormatJSON, FormatConvexJSON} {
			checkValue(t, c.typ+" "+c.value, typ, res.Rows[0][0], f, c.want, false)
		}
	}
}

// TestLookup checks type resolution details: names, domains, delimiters,
// enum order, and that vector types with a typelem stay text.
func TestLookup(t *testing.T) {
	ctx, conn := connect(t)
	mustExec(t, ctx, conn, `CREATE TYPE mood AS ENUM ('sad', 'happy')`)
	mustExec(t, ctx, conn, `ALTER TYPE mood ADD VALUE 'ok' BEFORE 'happy'`)
	mustExec(t, ctx, conn, `CREATE DOMAIN dbox AS box`)
	mustExec(t, ctx, conn, `CREATE DOMAIN ints AS int[]`)
	types := NewTypes()
	oid := func(name string) uint32 {
		var o uint32
		if err := conn.QueryRow(ctx, "SELECT $1::regtype::oid", name).Scan(&o); err != nil {
			t.Fatal(err)
		}
		return o
	}
	get := func(name string) *Type {
		typ, err := types.Lookup(ctx, conn, oid(name))
		if err != nil {
			t.Fatal(err)
		}
		return typ
	}
	if m := get("mood"); m.Kind != KindEnum || strings.Join(m.EnumValues, ",") != "sad,ok,happy" || m.Name != "mood" {
		t.Errorf("mood: %+v", m)
	}
	if m := get("mood[]"); m.Kind != KindArray || m.Elem.Kind != KindEnum || m.Name != "mood[]" {
		t.Errorf("mood[]: %+v", m)
	}
	if b := get("box[]"); b.Kind != KindArray || b.Delim != ';' || b.Elem.Delim != ';' {
		t.Errorf("box[]: %+v", b)
	}
	if b := get("dbox[]"); b.Kind != KindArray || b.Delim != ';' {
		t.Errorf("dbox[]: %+v", b)
	}
	if a := get("ints[]"); a.Kind != KindArray || a.Delim != ',' || a.Elem.Kind != KindArray || a.Elem.Elem.Kind != KindInt4 {
		t.Errorf("ints[]: %+v", a)
	}
	for _, name := range []string{"int2vector", "oidvector", "point", "tsvector", "xml", "int4range", "bit(3)"} {
		if typ := get(name); typ.Kind != KindText {
			t.Errorf("%s: kind %v, want text", name, typ.Kind)
		}
	}
	if typ := get("character varying"); typ.Name != "character varying" || typ.Kind != KindText {
		t.Errorf("varchar: %+v", typ)
	}
	if _, err := types.Lookup(ctx, conn, 4000000000); err == nil {
		t.Error("unknown OID: no error")
	}
	// An array of a domain over an array parses through both levels.
	res := conn.PgConn().ExecParams(ctx, `SELECT '{"{1,2}","{3}"}'::ints[]`, nil, nil, nil, nil).Read()
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	got, err := AppendValue(nil, get("ints[]"), res.Rows[0][0], FormatJSON)
	if err != nil || string(got) != `[[1,2],[3]]` {
		t.Errorf("ints[] %s: %s, %v", res.Rows[0][0], got, err)
	}
	types.Forget()
	if m := get("mood"); len(m.EnumValues) != 3 {
		t.Errorf("after Forget: %+v", m)
	}
	if typ, _ := types.Lookup(ctx, nil, 23); typ == nil || typ.Kind != KindInt4 {
		t.Errorf("builtin lost after Forget")
	}
}

// TestArraysMatchPostgres compares the array decoder with PostgreSQL's own
// array_to_json on random text arrays (one and two dimensions, with every
// character the array syntax treats specially) and on int arrays with
// lower bounds other than 1.
func TestArraysMatchPostgres(t *testing.T) {
	ctx, conn := connect(t)
	types := NewTypes()
	texts := types.cached(1009)
	alphabet := []string{"a", "Z", " ", "  ", ",", ";", "{", "}", "\"", "\\", "\\\\", "'", "NULL", "null", "é", "🎉", "\t", "\n", "\x01", "[", "]", ":", "="}
	rnd := rand.New(rand.NewPCG(1, 2))
	word := func() *string {
		if rnd.IntN(8) == 0 {
			return nil
		}
		var b strings.Builder
		for n := rnd.IntN(5); n > 0; n-- {
			b.WriteString(alphabet[rnd.IntN(len(alphabet))])
		}
		s := b.String()
		return &s
	}
	check := func(sql string, args ...any) {
		t.Helper()
		var text, want string
		if err := conn.QueryRow(ctx, "SELECT a::text, array_to_json(a)::text FROM ("+sql+") AS x(a)", args...).Scan(&text, &want); err != nil {
			t.Fatalf("%s %v: %v", sql, args, err)
		}
		got, err := AppendValue(nil, texts, []byte(text), FormatJSON)
		if err != nil {
			t.Fatalf("%q: %v", text, err)
		}
		var g, w any
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatalf("%q: invalid JSON %s", text, got)
		}
		if err := json.Unmarshal([]byte(want), &w); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("%q:\n got %s\nwant %s", text, got, want)
		}
	}
	for i := 0; i < 300; i++ {
		n := rnd.IntN(6)
		row1, row2 := make([]*string, n), make([]*string, n)
		for j := range n {
			row1[j], row2[j] = word(), word()
		}
		check("SELECT $1::text[]", row1)
		if n > 0 {
			check("SELECT ARRAY[$1::text[], $2::text[]]", row1, row2)
		}
	}
	for _, lit := range []string{"[0:1]={a,b}", "[-3:-2][5:6]={{a,b},{c,d}}", "{}", "{{{x}}}"} {
		check("SELECT $1::text[]", lit)
	}
}
