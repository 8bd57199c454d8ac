package importer

import (
	"strings"
)

// Column types the importer creates. Every JSON Schema a stream declares
// maps to one of these; docs/http-api.md ("Import type mapping") documents it.
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

// nullOnly reports whether a property's schema allows null and nothing
// else: it tells nothing about the column's type.
func nullOnly(schema any) bool {
	s, ok := schema.(map[string]any)
	if !ok {
		return false
	}
	switch t := s["type"].(type) {
	case string:
		return t == "null"
	case []any:
		for _, x := range t {
			if x != "null" {
				return false
			}
		}
		return len(t) > 0
	}
	for _, k := range []string{"anyOf", "oneOf"} {
		if variants, ok := s[k].([]any); ok && len(variants) > 0 {
			for _, v := range variants {
				if !nullOnly(v) {
					return false
				}
			}
			return true
		}
	}
	return false
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

// family groups column types by what their values are; rank orders the
// types of one family from narrow to wide.
type family uint8

const (
	famString   family = iota // other types read from strings: bytea, uuid, interval, inet, enums, …
	famText                   // text, varchar: any string
	famInt                    // smallint, integer, bigint
	famFloat                  // real, double precision
	famNumeric                // numeric
	famBool                   // boolean
	famDateTime               // date, timestamp, timestamptz
	famTime                   // time, timetz
	famJSON                   // json, jsonb: anything
	famArray                  // integer[], text[], …
)

func classify(t string) (family, int) {
	switch t = normalize(t); t {
	case "smallint":
		return famInt, 1
	case "integer":
		return famInt, 2
	case typeBigint:
		return famInt, 3
	case "real":
		return famFloat, 1
	case "double precision":
		return famFloat, 2
	case typeNumeric:
		return famNumeric, 0
	case typeBoolean:
		return famBool, 0
	case typeDate:
		return famDateTime, 1
	case typeTimestamp:
		return famDateTime, 2
	case typeTimestampTZ:
		return famDateTime, 3
	case typeTime:
		return famTime, 1
	case typeTimeTZ:
		return famTime, 2
	case typeText, "varchar":
		return famText, 0
	case typeJSONB, "json":
		return famJSON, 0
	}
	if strings.HasSuffix(t, "[]") {
		return famArray, 0
	}
	return famString, 0
}

// normalize turns format_type() output into the names used here. It runs
// for values being rendered: a switch, not a map lookup.
func normalize(t string) string {
	switch t { // the names format_type() prints for the types above
	case "timestamp without time zone":
		return typeTimestamp
	case "timestamp with time zone":
		return typeTimestampTZ
	case "time without time zone":
		return typeTime
	case "time with time zone":
		return typeTimeTZ
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
// values of type want, and whether it must change at all. It changes only
// what cannot hold the values, and never narrows:
//   - json/jsonb hold anything, text any scalar; an object, array or union
//     (jsonb) makes any other column jsonb, and so does mixing an array
//     type with another type;
//   - within integers, floats, dates and timestamps, or times the wider type
//     wins; integers and floats together, or either with numeric, make
//     numeric;
//   - a string without a format (text) fits every column read from strings
//     (date, timestamp, time, bytea, uuid, …): the values are cast;
//   - anything else (a number or boolean into a string column, a string of
//     another format, a string into a number column) makes text.
func widen(have, want string) (string, bool) {
	if normalize(have) == normalize(want) {
		return have, false
	}
	hf, hr := classify(have)
	wf, wr := classify(want)
	switch {
	case hf == famJSON:
		return have, false
	case wf == famJSON:
		return typeJSONB, true
	case hf == famText:
		return have, false
	case hf == famArray || wf == famArray:
		return typeJSONB, true
	case hf == wf && (hf == famInt || hf == famFloat || hf == famDateTime || hf == famTime):
		if hr >= wr {
			return have, false
		}
		return want, true
	case hf == famNumeric && (wf == famInt || wf == famFloat):
		return have, false
	case (hf == famInt || hf == famFloat || hf == famNumeric) && (wf == famInt || wf == famFloat || wf == famNumeric):
		return typeNumeric, true
	case wf == famText && (hf == famString || hf == famDateTime || hf == famTime):
		return have, false
	}
	return typeText, true
}
