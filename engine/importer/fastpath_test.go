package importer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"testing"
)

var diffSchemas = []string{
	`{"type":"object","properties":{"id":{"type":"integer"},"price":{"type":["null","number"]},"name":{"type":"string"},
		"ok":{"type":"boolean"},"d":{"type":"string","format":"date"},"ts":{"type":"string","format":"date-time","airbyte_type":"timestamp_without_timezone"},
		"tags":{"type":"array"},"meta":{"type":["object","null"]},"any":{}},"required":["id"]}`,
	`{"type":"object","additionalProperties":false,"properties":{"a":{"type":"string"},"b":{"type":"integer"}}}`,
	`{"properties":{"n":{"type":"number"},"t":{"type":"string","format":"time"}}}`,
}

// validValues are values the schemas accept, per property.
var validValues = map[string][]string{
	"id": {"1", "-7", "3.0", "1e2"}, "price": {"null", "1.5", "2"}, "name": {`"n"`, `"é \"q\""`}, "ok": {"true"},
	"d": {`"2024-02-29"`}, "ts": {`"2024-01-01T10:00:00"`}, "tags": {"[]", `[1,"x"]`}, "meta": {"null", `{"a":1}`},
	"a": {`"s"`}, "b": {"5"}, "n": {"1.25", "-3"}, "t": {`"12:30:00"`, `"12:30:00Z"`},
}

// randomValue produces JSON values that are sometimes what the schemas
// want and often not.
func randomValue(rng *rand.Rand) string {
	switch rng.Intn(16) {
	case 0:
		return "null"
	case 1:
		return []string{"true", "false"}[rng.Intn(2)]
	case 2:
		return fmt.Sprint(rng.Intn(2000) - 1000)
	case 3:
		return []string{"1.0", "1.5", "-0.25", "1e3", "2.5e-3", "12345678901234567890", "1E400", "-0"}[rng.Intn(8)]
	case 4:
		return `"2024-02-29"`
	case 5:
		return `"2024-01-01T10:00:00.5"`
	case 6:
		return `"2024-01-01T10:00:00Z"`
	case 7:
		return `"12:30:00"`
	case 8:
		return `"not a date"`
	case 9:
		return `"esc\"aped \\ \u00e9 \ud83d\ude00 \n"`
	case 10:
		return `[1, "two", {"three": [3]}]`
	case 11:
		return `{"k": {"nested": true}, "z": null}`
	case 12:
		return `[]`
	case 13:
		return `{}`
	case 14:
		return `"plain"`
	default:
		return fmt.Sprintf("%q", strings.Repeat("x", rng.Intn(5)))
	}
}

// TestFastPathAgreesWithReference is the differential test: on thousands of
// random records the one-pass checker never accepts what the reference
// validator rejects, rejects nothing it accepts (for these schemas), and
// yields the same field values as the reference decoding.
func TestFastPathAgreesWithReference(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for si, schema := range diffSchemas {
		raw := json.RawMessage(schema)
		s, err := newStream("t", streamDecl{JSONSchema: &raw})
		if err != nil {
			t.Fatal(err)
		}
		if s.fast == nil {
			t.Fatalf("schema %d is not in the fast subset", si)
		}
		var names []string
		for n := range s.fast.props {
			names = append(names, n)
		}
		sort.Strings(names)
		accepted := 0
		for i := 0; i < 5000; i++ {
			if rng.Intn(10) == 0 {
				names = append(names, "extra")
			}
			var parts []string
			for _, n := range names {
				if rng.Intn(3) == 0 || (n == "id" && rng.Intn(4) > 0) {
					v := randomValue(rng)
					if good := validValues[n]; good != nil && rng.Intn(4) > 0 {
						v = good[rng.Intn(len(good))]
					}
					parts = append(parts, fmt.Sprintf("%q: %s", n, v))
				}
			}
			rec := "{" + strings.Join(parts, ", ") + "}"
			if names[len(names)-1] == "extra" {
				names = names[:len(names)-1]
			}
			fields, fastErr := scanRecord([]byte(rec), s.fast, nil)
			dec := json.NewDecoder(bytes.NewReader([]byte(rec)))
			dec.UseNumber()
			var v any
			if err := dec.Decode(&v); err != nil {
				t.Fatalf("test record is not JSON: %s", rec)
			}
			refErr := s.schema.Validate(v)
			if (fastErr == nil) != (refErr == nil) {
				t.Fatalf("schema %d, record %s: fast says %v, reference says %v", si, rec, fastErr, refErr)
			}
			if fastErr != nil {
				continue
			}
			accepted++
			obj := v.(map[string]any)
			sort.Slice(fields, func(i, j int) bool { return fields[i].name < fields[j].name })
			if len(fields) != len(obj) {
				t.Fatalf("record %s: %d fields, reference %d", rec, len(fields), len(obj))
			}
			for _, f := range fields {
				kind, text, err := encodeValue(obj[f.name])
				if err != nil {
					t.Fatal(err)
				}
				if kind != f.kind {
					t.Fatalf("record %s field %s: kind %c, reference %c", rec, f.name, f.kind, kind)
				}
				if kind == kindJSON {
					var a, b any
					_ = json.Unmarshal(f.value, &a)
					_ = json.Unmarshal(text, &b)
					if fmt.Sprint(a) != fmt.Sprint(b) {
						t.Fatalf("record %s field %s: %s vs reference %s", rec, f.name, f.value, text)
					}
					var compact bytes.Buffer
					if err := json.Compact(&compact, f.value); err != nil || !bytes.Equal(compact.Bytes(), f.value) {
						t.Fatalf("record %s field %s: %s is not compact JSON", rec, f.name, f.value)
					}
				} else if !bytes.Equal(f.value, text) {
					t.Fatalf("record %s field %s: %q vs reference %q", rec, f.name, f.value, text)
				}
			}
		}
		if accepted < 50 {
			t.Fatalf("schema %d: only %d of 5000 random records were valid; the test is not exercising acceptance", si, accepted)
		}
	}
}

func TestFastSubset(t *testing.T) {
	for _, c := range []struct {
		schema string
		fast   bool
	}{
		{`{"type":"object","properties":{"a":{"type":"string","description":"x"}}}`, true},
		{`{"type":"object","properties":{"a":{"type":"string","pattern":"^x"}}}`, false},
		{`{"type":"object","properties":{"a":{"type":"array","items":{"type":"integer"}}}}`, false},
		{`{"type":"object","properties":{"a":{"$ref":"WellKnownTypes.json#/definitions/Date"}}}`, false},
		{`{"type":"object","properties":{"a":{"type":"string","format":"email"}}}`, false},
		{`{"type":"object","minProperties":1}`, false},
		{`{"type":"array"}`, false},
	} {
		var doc map[string]any
		if err := json.Unmarshal([]byte(c.schema), &doc); err != nil {
			t.Fatal(err)
		}
		if got := compileFast(doc) != nil; got != c.fast {
			t.Errorf("%s: fast=%v, want %v", c.schema, got, c.fast)
		}
	}
}

func FuzzScanRecord(f *testing.F) {
	f.Add([]byte(`{"a":"x","b":[1,{"c":null}],"d":1.5e3}`))
	f.Add([]byte(`{"a":"\ud800","b":-0}`))
	var doc map[string]any
	_ = json.Unmarshal([]byte(diffSchemas[0]), &doc)
	fs := compileFast(doc)
	f.Fuzz(func(t *testing.T, data []byte) {
		fields, err := scanRecord(data, fs, nil)
		if err == nil && !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q (%d fields)", data, len(fields))
		}
	})
}

// TestFastPathHintIsPerSchema: the position hint a worker keeps from one
// record does not check the next record, of another stream whose field of
// the same name has another type, by the first stream's rule.
func TestFastPathHintIsPerSchema(t *testing.T) {
	compile := func(doc string) *fastSchema {
		var m map[string]any
		if err := json.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatal(err)
		}
		return compileFast(m)
	}
	text := compile(`{"type":"object","properties":{"v":{"type":"string"}}}`)
	number := compile(`{"type":"object","properties":{"v":{"type":"integer"}}}`)
	var hint []*fastProp
	if _, err := scanRecordHinted([]byte(`{"v":"x"}`), text, nil, &hint); err != nil {
		t.Fatalf("a string for a string: %v", err)
	}
	if _, err := scanRecordHinted([]byte(`{"v":"x"}`), number, nil, &hint); err != errSlow {
		t.Fatalf("a string for an integer passed the fast path (%v): the hint of another schema checked it", err)
	}
}
