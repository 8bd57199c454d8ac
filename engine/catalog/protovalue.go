package catalog

import (
	"encoding/base64"
	"math"
	"strconv"
	"unicode/utf8"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/shapelog/shapelog/engine/recordpb"
)

// AppendProtoValue appends one data entry (field 5 of a Record or an export
// Document, see recordpb) holding the PostgreSQL text value text of type t,
// as PostgreSQL prints it under SessionSettings; nil text is NULL
// (is_null). It is the protobuf counterpart of AppendValue, for Airbyte's
// record encoding:
//
//   - int2, int4, int8, oid: integer (sint64).
//   - float4, float8: number (double); NaN, Infinity and -Infinity kept.
//   - numeric: big_decimal, PostgreSQL's text ("NaN", "Infinity" too).
//   - bool: boolean.
//   - json, jsonb: json, the JSON text.
//   - arrays: json, the array as shapelog's source emits it from the JSON
//     export: AppendValue's FormatJSON array with int8 and numeric elements
//     as JSON numbers, and the elements JSON cannot carry (NaN, ±Infinity
//     in float and numeric arrays) as null, which nulled reports (the
//     record's meta then says the field was NULLED).
//   - bytea: string, base64 (standard, padded) as the JSON export writes it.
//   - date, time, timetz, timestamp, timestamptz: their typed kinds (date,
//     time_without_timezone, time_with_timezone, timestamp_without_timezone,
//     timestamp_with_timezone), which Airbyte's destinations require for
//     fields declared with these airbyte_types; ±infinity is null, nulled.
//   - every other type (text, varchar, uuid, interval, enum,
//     composite, range, inet, money, …): string, the text, that is the
//     string the JSON export writes, unescaped (invalid UTF-8 becomes
//     U+FFFD as there).
//
// Values are written straight from text, without allocating except for
// strings that are not valid UTF-8. Malformed input is an error naming the
// type, and dst is returned as it was.
func AppendProtoValue(dst []byte, t *Type, text []byte) (out []byte, nulled bool, err error) {
	if text == nil {
		return recordpb.AppendNull(dst), false, nil
	}
	if t == nil {
		return dst, false, errNilType
	}
	switch t.Kind {
	case KindInt2, KindInt4, KindInt8:
		v, ok := parseJSONInt64(text)
		if !ok {
			return dst, false, valueError(t, text, "not a 64-bit integer")
		}
		return recordpb.AppendInteger(dst, v), false, nil
	case KindOID:
		v, ok := parseJSONInt64(text)
		if !ok || v < 0 || text[0] == '-' {
			return dst, false, valueError(t, text, "not an unsigned integer")
		}
		return recordpb.AppendInteger(dst, v), false, nil
	case KindFloat4, KindFloat8:
		v, err := parseFloatText(t, text)
		if err != nil {
			return dst, false, err
		}
		return recordpb.AppendNumber(dst, v), false, nil
	case KindNumeric:
		return recordpb.AppendBytesKind(dst, recordpb.KindBigDecimal, text), false, nil
	case KindBool:
		if len(text) == 1 {
			switch text[0] {
			case 't':
				return recordpb.AppendBool(dst, true), false, nil
			case 'f':
				return recordpb.AppendBool(dst, false), false, nil
			}
		}
		return dst, false, valueError(t, text, "not t or f")
	case KindJSON, KindJSONB:
		if len(text) == 0 {
			return dst, false, valueError(t, text, "empty JSON text")
		}
		return recordpb.AppendBytesKind(dst, recordpb.KindJSON, text), false, nil
	case KindArray:
		return appendProtoArray(dst, t, text)
	case KindBytea:
		out, err := appendProtoBytea(dst, t, text)
		return out, false, err
	case KindDate, KindTime, KindTimeTZ, KindTimestamp, KindTimestampTZ:
		return appendProtoTemporal(dst, t, text)
	case KindUUID, KindInterval:
		// ASCII whatever the encoding.
		return recordpb.AppendBytesKind(dst, recordpb.KindString, text), false, nil
	default:
		return appendProtoString(dst, text), false, nil
	}
}

// parseJSONInt64 parses -?(0|[1-9][0-9]*) into an int64.
func parseJSONInt64(b []byte) (int64, bool) {
	if !isJSONInt(b) {
		return 0, false
	}
	return parseInt64(b)
}

// parseFloatText parses a float4 or float8 text: a JSON number, NaN,
// Infinity or -Infinity.
func parseFloatText(t *Type, text []byte) (float64, error) {
	switch string(text) {
	case "NaN":
		return math.NaN(), nil
	case "Infinity":
		return math.Inf(1), nil
	case "-Infinity":
		return math.Inf(-1), nil
	}
	if !isJSONNumber(text) {
		return 0, valueError(t, text, "not a number")
	}
	// ParseFloat keeps no reference to its argument (its errors copy it).
	v, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(text), len(text)), 64)
	if err != nil {
		return 0, valueError(t, text, "out of range")
	}
	return v, nil
}

// appendBytesHeader appends the head of a data entry of a string-typed
// kind whose content, n bytes, the caller appends next.
func appendBytesHeader(dst []byte, kind protowire.Number, n int) []byte {
	dst = protowire.AppendTag(dst, recordpb.RecordData, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(1+protowire.SizeBytes(n)))
	dst = protowire.AppendTag(dst, kind, protowire.BytesType)
	return protowire.AppendVarint(dst, uint64(n))
}

// appendProtoString appends s as a string, invalid UTF-8 replaced by
// U+FFFD as AppendString does (protobuf strings are UTF-8).
func appendProtoString(dst, s []byte) []byte {
	if utf8.Valid(s) {
		return recordpb.AppendBytesKind(dst, recordpb.KindString, s)
	}
	dst, start := recordpb.BeginBytesKind(dst, recordpb.KindString)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = utf8.AppendRune(dst, utf8.RuneError)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return recordpb.EndBytesKind(dst, start)
}

// appendProtoBytea writes a hex bytea's bytes in base64.
func appendProtoBytea(dst []byte, t *Type, text []byte) ([]byte, error) {
	hex, err := byteaHex(t, text)
	if err != nil {
		return dst, err
	}
	start := len(dst)
	dst = appendBytesHeader(dst, recordpb.KindString, base64.StdEncoding.EncodedLen(len(hex)/2))
	dst, ok := appendBase64OfHex(dst, hex)
	if !ok {
		return dst[:start], valueError(t, text, "invalid hex digit")
	}
	return dst, nil
}

// appendProtoArray writes an array as JSON: AppendValue's FormatJSON
// encoding, then, for elements of int8, numeric or a float type, quoted
// numbers unquoted and the other quoted values (NaN, Infinity, -Infinity)
// replaced by null.
func appendProtoArray(dst []byte, t *Type, text []byte) ([]byte, bool, error) {
	orig := len(dst)
	dst, start := recordpb.BeginBytesKind(dst, recordpb.KindJSON)
	dst, err := appendArray(dst, t, text, FormatJSON)
	if err != nil {
		return dst[:orig], false, err
	}
	nulled := false
	elem := t.Elem
	for elem != nil && elem.Kind == KindArray {
		elem = elem.Elem
	}
	if elem != nil {
		switch elem.Kind {
		case KindInt8, KindNumeric, KindFloat4, KindFloat8:
			var ok bool
			if dst, nulled, ok = unquoteNumbers(dst, start); !ok {
				return dst[:orig], false, valueError(t, text, "an element is not a number")
			}
		}
	}
	return recordpb.EndBytesKind(dst, start), nulled, nil
}

// unquoteNumbers rewrites, in place, the JSON array of numbers, numbers as
// strings, nulls and nested arrays in b[start:]: a string holding a JSON
// number becomes that number, any other string null (nulled). ok is false
// for a string too short to make room for its null, which no element of
// these types is.
func unquoteNumbers(b []byte, start int) (out []byte, nulled, ok bool) {
	w := start
	for r := start; r < len(b); {
		c := b[r]
		if c != '"' {
			b[w] = c
			w++
			r++
			continue
		}
		end := r + 1
		for end < len(b) && b[end] != '"' {
			if b[end] == '\\' {
				end++
			}
			end++
		}
		if end >= len(b) {
			return b, false, false
		}
		if inner := b[r+1 : end]; isJSONNumber(inner) {
			w += copy(b[w:], inner)
		} else {
			if w+4 > end+1 {
				return b, false, false
			}
			w += copy(b[w:], "null")
			nulled = true
		}
		r = end + 1
	}
	return b[:w], nulled, true
}
