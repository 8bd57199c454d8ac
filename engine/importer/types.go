package importer

import (
	"strings"
)

// Column types the importer creates. Every JSON Schema a stream declares
// maps to one of these; README "Import type mapping" documents it.
const (
	typeText        = "text"
	typeBigint      = "bigint"
	typeNumeric     = "numeric"
	typeBoolean     = "boolean"
	typeDate        = "date"
	typeTimestamp   = "timestamp"
	typeTimestampTZ = "timestamptz"
	typeTime        = "time"
	typeTimeTZ      = "timetz"
	typeBytea       = "bytea"
	typeJSONB       = "jsonb"
)

// wellKnown maps Airbyte's WellKnownTypes.json definitions to column types.
var wellKnown = map[string]string{
	"String":                   typeText,
	"BinaryData":               typeBytea,
	"Date":                     typeDate,
	"TimestampWithTimezone":    typeTimestampTZ,
	"TimestampWithoutTimezone": typeTimestamp,
	"TimeWithTimezone":         typeTimeTZ,
	"TimeWithoutTimezone":      typeTime,
	"Number":                   typeNumeric,
	"Integer":                  typeBigint,
	"Boolean":                  typeBoolean,
}

// columnType is the column type for a property's JSON Schema.
func columnType(schema any) string {
	s, ok := schema.(map[string]any)
	if !ok {
		return typeJSONB
	}
	if ref, ok := s["$ref"].(string); ok {
		if i := strings.LastIndexByte(ref, '/'); i >= 0 {
			if t, ok := wellKnown[ref[i+1:]]; ok {
				return t
			}
		}
		return typeJSONB
	}
	for _, k := range []string{"anyOf", "oneOf"} {
		if variants, ok := s[k].([]any); ok {
			t := ""
			for _, v := range variants {
				vt := columnType(v)
				if isNullSchema(v) {
					continue
				}
				if t != "" && t != vt {
					return typeJSONB
				}
				t = vt
			}
			if t == "" {
				return typeJSONB
			}
			return t
		}
	}
	var types []string
	switch t := s["type"].(type) {
	case string:
		types = []string{t}
	case []any:
		for _, x := range t {
			if x, ok := x.(string); ok && x != "null" {
				types = append(types, x)
			}
		}
	}
	if len(types) == 2 && contains(types, "integer") && contains(types, "number") {
		return typeNumeric
	}
	if len(types) != 1 {
		return typeJSONB
	}
	airbyteType, _ := s["airbyte_type"].(string)
	format, _ := s["format"].(string)
	switch types[0] {
	case "string":
		switch {
		case format == "date":
			return typeDate
		case format == "date-time" && airbyteType == "timestamp_without_timezone":
			return typeTimestamp
		case format == "date-time":
			return typeTimestampTZ
		case format == "time" && airbyteType == "time_with_timezone":
			return typeTimeTZ
		case format == "time":
			return typeTime
		case s["contentEncoding"] == "base64" || airbyteType == "binary_data":
			return typeBytea
		}
		return typeText
	case "integer":
		return typeBigint
	case "number":
		if airbyteType == "integer" {
			return typeBigint
		}
		return typeNumeric
	case "boolean":
		return typeBoolean
	}
	return typeJSONB
}

func isNullSchema(v any) bool {
	s, ok := v.(map[string]any)
	return ok && s["type"] == "null"
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// valueType is the column type for a field the schema does not declare,
// from its first non-null JSON value's kind.
func valueType(kind byte) string {
	switch kind {
	case kindString:
		return typeText
	case kindNumber:
		return typeNumeric
	case kindBool:
		return typeBoolean
	}
	return typeJSONB
}

// ranks order the types of a family from narrow to wide.
var ranks = map[string][2]int{ // family, rank
	"smallint": {1, 1}, "integer": {1, 2}, typeBigint: {1, 3}, typeNumeric: {1, 5},
	"real": {1, 3}, "double precision": {1, 4},
	typeDate: {2, 1}, "timestamp without time zone": {2, 2}, typeTimestamp: {2, 2}, "timestamp with time zone": {2, 3}, typeTimestampTZ: {2, 3},
	"time without time zone": {3, 1}, typeTime: {3, 1}, "time with time zone": {3, 2}, typeTimeTZ: {3, 2},
}

// canonical names format_type() prints for the types above.
var canonical = map[string]string{
	"timestamp without time zone": typeTimestamp, "timestamp with time zone": typeTimestampTZ,
	"time without time zone": typeTime, "time with time zone": typeTimeTZ,
}

// normalize turns format_type() output into the names used here.
func normalize(t string) string {
	if c, ok := canonical[t]; ok {
		return c
	}
	if strings.HasPrefix(t, "character varying") || strings.HasPrefix(t, "character(") || t == "character" {
		return "varchar"
	}
	if strings.HasPrefix(t, "numeric(") {
		return typeNumeric
	}
	return t
}

// widen returns the type a column of type have must become to also hold
// values of type want, and whether it must change at all. Within a family
// (integers and numerics, dates and timestamps, times) the wider type wins;
// jsonb absorbs anything; otherwise text does.
func widen(have, want string) (string, bool) {
	have, want = normalize(have), normalize(want)
	if have == want {
		return have, false
	}
	if have == typeJSONB {
		return have, false
	}
	if have == typeText || have == "varchar" {
		if want == typeJSONB {
			return typeJSONB, true
		}
		return typeText, have != typeText
	}
	h, hok := ranks[have]
	w, wok := ranks[want]
	if hok && wok && h[0] == w[0] {
		if h[1] >= w[1] {
			return have, false
		}
		return want, true
	}
	if want == typeJSONB {
		return typeJSONB, true
	}
	return typeText, true
}
