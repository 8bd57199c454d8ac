package main

import (
	"encoding/json"
	"testing"
)

// benchDoc is a firenibble-shaped engine document (16 mixed columns).
const benchDoc = `{"_table":"firenibble","_ts":1795358120602309683,"_id":"\"public\".\"firenibble\"/\"123456\"","f0":"123456","f1":"9876543210","f2":"42","f3":7,"f4":0.123456789,"f5":12345.678,"f6":-1.5e-7,"f7":3.14159,"f8":"abcdefghijklmnop","f9":"qrstuvwxyz012345","f10":"ABCDEFGHIJKLMNOP","f11":"QRSTUVWXYZ678901","f12":"some text here!!","f13":"2024-01-02","f14":"2023-12-31","f15":"1999-09-09"}`

func benchStream() *stream {
	props := map[string]map[string]any{}
	for _, f := range []string{"f0", "f1", "f2"} {
		props[f] = map[string]any{"type": "string", "$description": descInt64}
	}
	props["f3"] = map[string]any{"type": "integer"}
	for _, f := range []string{"f4", "f5", "f6", "f7"} {
		props[f] = map[string]any{"$description": descFloat, "anyOf": []any{map[string]any{"type": "number"}, map[string]any{"type": "string"}}}
	}
	for _, f := range []string{"f8", "f9", "f10", "f11", "f12"} {
		props[f] = map[string]any{"type": "string"}
	}
	for _, f := range []string{"f13", "f14", "f15"} {
		props[f] = map[string]any{"type": "string", "format": "date"}
	}
	return newStream("firenibble", &engineTableSchema{Properties: props, SchemaName: "public", TableName: "firenibble", PrimaryKey: []string{"f0"}})
}

func TestAppendRecordConvertsAndAddsCDCFields(t *testing.T) {
	w := newRecordWriter(benchStream())
	line, err := w.appendRecord(nil, []byte(benchDoc), 1700000000000, "")
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Record struct {
			Data map[string]json.RawMessage `json:"data"`
		} `json:"record"`
	}
	if err := json.Unmarshal(line, &m); err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	for field, want := range map[string]string{
		"f0": "123456", "f1": "9876543210", "f3": "7", "f4": "0.123456789", "f13": `"2024-01-02"`,
		"_ab_cdc_lsn": "1795358120602309683", "_ab_cdc_updated_at": `"2026-11-22T14:35:20.602309683Z"`, "_ab_cdc_deleted_at": "null",
	} {
		if got := string(m.Record.Data[field]); got != want {
			t.Errorf("%s = %s, want %s", field, got, want)
		}
	}
	if _, ok := m.Record.Data["_id"]; ok {
		t.Error("engine system fields must not reach records")
	}
}

func BenchmarkAppendRecord(b *testing.B) {
	w := newRecordWriter(benchStream())
	var buf []byte
	b.SetBytes(int64(len(benchDoc)))
	for b.Loop() {
		buf, _ = w.appendRecord(buf[:0], []byte(benchDoc), 1700000000000, "")
	}
}

func TestConvertArraysWithNastyElements(t *testing.T) {
	for _, tc := range []struct {
		in   string
		conv conversion
		want string
		ok   bool
	}{
		{`["1",null,"-9223372036854775808"]`, integerString, `[1,null,-9223372036854775808]`, true},
		{`[["1","2"],["3",null]]`, integerString, `[[1,2],[3,null]]`, true},
		{`[]`, integerString, `[]`, true},
		{`[[],[]]`, numericString, `[[],[]]`, true},
		{`["1.5","NaN","Infinity"]`, numericString, `[1.5,null,null]`, false},
		{`[1.5,"NaN",-0.25]`, floatOrSpecial, `[1.5,null,-0.25]`, false},
		{`["12345678901234567890.000001"]`, numericString, `[12345678901234567890.000001]`, true},
		{`"NaN"`, numericString, `null`, false},
		{`"-0"`, numericString, `-0`, true},
		{`"00"`, integerString, `null`, false}, // not a JSON number: never emitted as one
		{`null`, integerString, `null`, true},
	} {
		got, ok := convert(nil, []byte(tc.in), tc.conv)
		if string(got) != tc.want || ok != tc.ok {
			t.Errorf("convert(%s) = %s, %v; want %s, %v", tc.in, got, ok, tc.want, tc.ok)
		}
		var v any
		if err := json.Unmarshal(got, &v); err != nil {
			t.Errorf("convert(%s) = %s is not JSON: %v", tc.in, got, err)
		}
	}
	// Strings in arrays that are passed through keep brackets, commas,
	// quotes and backslashes.
	in := `["a]b","c,d","e\"f","g\\",""]`
	if got, _ := convert(nil, []byte(in), asIs); string(got) != in {
		t.Errorf("as-is array changed: %s", got)
	}
}

// TestConvertTimeWithZone: timetz values take Airbyte's time_with_timezone
// form, an RFC 3339 full-time, whatever offset PostgreSQL printed.
func TestConvertTimeWithZone(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`"12:34:56+02"`, `"12:34:56+02:00"`},
		{`"12:34:56.123456-08"`, `"12:34:56.123456-08:00"`},
		{`"00:00:00+00"`, `"00:00:00+00:00"`},
		{`"12:34:56+05:30"`, `"12:34:56+05:30"`},
		{`"24:00:00-11"`, `"24:00:00-11:00"`},
		{`"12:00:00+05:30:15"`, `"06:29:45Z"`},     // offset with seconds: the same time in UTC
		{`"01:00:00.5-10:00:30"`, `"11:00:30.5Z"`}, // west of UTC
		{`"03:00:00+05:30:15"`, `"21:29:45Z"`},     // the day before, in UTC
		{`["12:34:56+02",null,["01:02:03-03:30"]]`, `["12:34:56+02:00",null,["01:02:03-03:30"]]`},
		{`null`, `null`},
		{`"not a time"`, `"not a time"`}, // passed through, never invented
	} {
		got, ok := convert(nil, []byte(tc.in), timeWithZone)
		if string(got) != tc.want || !ok {
			t.Errorf("convert(%s) = %s, %v; want %s, true", tc.in, got, ok, tc.want)
		}
	}
}
