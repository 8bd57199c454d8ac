package main

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v5"

	"github.com/shapelog/shapelog/protocol"
)

// TestDiscoveredDescriptionsSayWhatIsEmitted: a column whose values the
// source converts is described by what the records hold, not by the
// engine's words for its own JSON ("int64 represented as base10 string"),
// and array elements alike; other descriptions are the engine's.
func TestDiscoveredDescriptionsSayWhatIsEmitted(t *testing.T) {
	props := map[string]map[string]any{
		"i8":  {"type": []any{"string", "null"}, "$description": descInt64, "$pgType": "bigint"},
		"n":   {"type": "string", "$description": descNumeric, "$pgType": "numeric"},
		"f8":  {"$description": descFloat, "anyOf": []any{map[string]any{"type": "number"}, map[string]any{"type": "string", "$description": "-inf, inf, or NaN"}, map[string]any{"type": "null"}}},
		"tmz": {"type": "string", "$description": descTimeTZ, "$pgType": "time with time zone"},
		"tm":  {"type": "string", "$description": descTime},
		"ai": {"type": "array", "items": map[string]any{"anyOf": []any{
			map[string]any{"type": []any{"string", "null"}, "$description": descInt64},
			map[string]any{"type": "array", "$description": "inner dimension of a multidimensional array, nested to its depth; its elements are as above"},
		}}},
		"by": {"type": "string", "$description": descBytes},
	}
	s := newStream("t", &engineTableSchema{Properties: props, SchemaName: "public", TableName: "t"})
	var schema struct {
		Properties map[string]map[string]any `json:"properties"`
	}
	if err := json.Unmarshal(s.airbyte.JSONSchema, &schema); err != nil {
		t.Fatal(err)
	}
	for field, want := range map[string]string{
		"i8":  "JSON integer",
		"n":   "JSON number",
		"f8":  "JSON number",
		"tmz": "±HH:MM",
		"tm":  "HH:MM:SS",
		"by":  descBytes,
	} {
		got, _ := schema.Properties[field]["description"].(string)
		if !strings.Contains(got, want) || strings.Contains(got, "represented as base10 string") {
			t.Errorf("description of %s = %q, want it to say %q", field, got, want)
		}
	}
	items, _ := json.Marshal(schema.Properties["ai"]["items"])
	if !strings.Contains(string(items), "JSON integer") || strings.Contains(string(items), "base10 string") {
		t.Errorf("int8[] items: %s", items)
	}
	if c := s.columns["tmz"]; c == nil || c.conv != timeWithZone {
		t.Errorf("tmz converts with %v, want timeWithZone", c)
	}
	for field, conv := range map[string]conversion{"i8": integerString, "n": numericString, "f8": floatOrSpecial, "ai": integerString, "tm": asIs} {
		if c := s.columns[field]; c == nil || c.conv != conv {
			t.Errorf("%s converts with %v, want %v", field, c, conv)
		}
	}
}

// Airbyte's well-known temporal types (airbyte_well_known_types.yaml of the
// Airbyte protocol): the forms records must take for each airbyte_type.
var wellKnownTemporal = map[string]*regexp.Regexp{
	"time_with_timezone":         regexp.MustCompile(`^\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+\-]\d{1,2}:\d{2})$`),
	"time_without_timezone":      regexp.MustCompile(`^\d{2}:\d{2}:\d{2}(\.\d+)?$`),
	"timestamp_with_timezone":    regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+\-]\d{1,2}:\d{2})( BC)?$`),
	"timestamp_without_timezone": regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?( BC)?$`),
}

// TestTemporalValuesTakeAirbyteForms: read from PostgreSQL, time, timetz
// (hour, minute and second offsets, arrays too), timestamp and timestamptz
// values are in the form their airbyte_type's well-known type gives, and
// timetz values (and timestamptz ones) pass JSON Schema's `format`
// assertions too, as CAT's record checks make them.
func TestTemporalValuesTakeAirbyteForms(t *testing.T) {
	f := newFixture(t, `CREATE TABLE tt (id int PRIMARY KEY, tm time, tmz timetz, tmza timetz[], ts timestamp, tsz timestamptz);
		INSERT INTO tt VALUES
			(1, '12:34:56.5', '12:34:56+02', '{"01:02:03-03:30","04:05:06+00"}', '2024-01-02 03:04:05.678', '2024-01-02 03:04:05.678+00'),
			(2, '00:00:00', '12:00:00+05:30:15', '{}', '0044-03-15 12:00:00 BC', '2024-06-01 00:00:00-07');`)
	catalog, cat := f.catalog(protocol.SyncFullRefresh)
	st := cat.Streams[0]
	var schema struct {
		Properties map[string]map[string]any `json:"properties"`
	}
	if err := json.Unmarshal(st.JSONSchema, &schema); err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.Draft = jsonschema.Draft7
	c.AssertFormat = true
	formats := map[string]*jsonschema.Schema{}
	for _, field := range []string{"tmz", "tsz"} {
		b, _ := json.Marshal(schema.Properties[field])
		if err := c.AddResource(field+".json", bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		formats[field] = c.MustCompile(field + ".json")
	}
	recs := f.read(catalog, nil).Records(t)
	if len(recs) != 2 {
		t.Fatalf("%d records, want 2", len(recs))
	}
	want := map[string][]string{
		"tm":   {"12:34:56.5", "00:00:00"},
		"tmz":  {"12:34:56+02:00", "06:29:45Z"},
		"ts":   {"2024-01-02T03:04:05.678", "0044-03-15T12:00:00 BC"},
		"tsz":  {"2024-01-02T03:04:05.678Z", "2024-06-01T07:00:00Z"},
		"tmza": {`["01:02:03-03:30","04:05:06+00:00"]`, `[]`},
	}
	for i, r := range recs {
		for field, values := range want {
			got, _ := r[field].(string)
			if field == "tmza" {
				b, _ := json.Marshal(r[field])
				got = string(b)
			}
			if got != values[i] {
				t.Errorf("record %d: %s = %s, want %s", i+1, field, got, values[i])
			}
			if field == "tmza" {
				continue
			}
			airbyteType, _ := schema.Properties[field]["airbyte_type"].(string)
			if re := wellKnownTemporal[airbyteType]; re == nil || !re.MatchString(got) {
				t.Errorf("record %d: %s = %q is not Airbyte's %q form", i+1, field, got, airbyteType)
			}
			if s := formats[field]; s != nil {
				if err := s.Validate(r[field]); err != nil {
					t.Errorf("record %d: %s = %q fails its schema's format: %v", i+1, field, got, err)
				}
			}
		}
	}
	if items, _ := json.Marshal(schema.Properties["tmza"]["items"]); !strings.Contains(string(items), `"airbyte_type":"time_with_timezone"`) {
		t.Errorf("timetz[] items: %s", items)
	}
}
