package catalog

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"
)

// AppendValue appends the JSON encoding of one non-NULL PostgreSQL text value
// of type t, as PostgreSQL prints it under SessionSettings, in format f.
//
//   - int2, int4, oid: JSON number, as printed.
//   - int8: "123" (FormatJSON) or {"$integer":"<base64 of 8 bytes LE>"}.
//   - float4, float8: JSON number, as printed (PostgreSQL prints the
//     shortest exact form); NaN, Infinity, -Infinity are strings in
//     FormatJSON and {"$float":"<base64 of float64 LE>"} in FormatConvexJSON,
//     as is -0 there (FormatJSON keeps the number -0).
//   - numeric: the decimal text as a JSON string ("NaN", "Infinity" too).
//   - bool: true / false.
//   - date, time, timetz, interval: the text as a string (ISO 8601 under the
//     session settings; "infinity", "-infinity" and BC dates such as
//     "2024-01-02 BC" stay as PostgreSQL prints them).
//   - timestamp: "2024-01-02T03:04:05.123456"; timestamptz:
//     "2024-01-02T03:04:05.123456Z" (the "+00" offset becomes "Z").
//     "infinity" and "-infinity" stay as they are; BC values keep
//     PostgreSQL's trailing " BC" ("0044-03-15T12:00:00Z BC"), and years
//     past 9999 keep their five digits.
//   - bytea (hex output): base64 (standard, padded) string in FormatJSON,
//     {"$bytes":"<base64>"} in FormatConvexJSON.
//   - json, jsonb: the JSON text verbatim (PostgreSQL only stores valid JSON).
//   - arrays: JSON arrays (nested for several dimensions) whose elements
//     follow these rules; NULL elements are null.
//   - everything else (text, varchar, bpchar with its padding, uuid, enums,
//     composite, range, inet, …): the text as a JSON string.
//
// Malformed input is an error naming the type; AppendValue never panics.
// On error dst may hold a partial value.
func AppendValue(dst []byte, t *Type, text []byte, f Format) ([]byte, error) {
	if t == nil {
		return dst, errNilType
	}
	switch t.Kind {
	case KindInt2, KindInt4:
		if !isJSONInt(text) {
			return dst, valueError(t, text, "not an integer")
		}
		return append(dst, text...), nil
	case KindOID:
		if !isUint(text) {
			return dst, valueError(t, text, "not an unsigned integer")
		}
		return append(dst, text...), nil
	case KindInt8:
		return appendInt8(dst, t, text, f)
	case KindFloat4, KindFloat8:
		return appendFloat(dst, t, text, f)
	case KindBool:
		if len(text) == 1 {
			switch text[0] {
			case 't':
				return append(dst, "true"...), nil
			case 'f':
				return append(dst, "false"...), nil
			}
		}
		return dst, valueError(t, text, "not t or f")
	case KindTimestamp:
		return appendTimestamp(dst, text, false), nil
	case KindTimestampTZ:
		return appendTimestamp(dst, text, true), nil
	case KindBytea:
		return appendBytea(dst, t, text, f)
	case KindJSON, KindJSONB:
		if len(text) == 0 {
			return dst, valueError(t, text, "empty JSON text")
		}
		return append(dst, text...), nil
	case KindArray:
		return appendArray(dst, t, text, f)
	default:
		// text-like, numeric, uuid, date, time, timetz, interval, enum and
		// every other type.
		return AppendString(dst, text), nil
	}
}

// ValueError reports a text value that is not valid for its type.
type ValueError struct {
	Type   string // the PostgreSQL type name
	Value  string // the value, shortened to 64 bytes
	Reason string
}

// Error implements error.
func (e *ValueError) Error() string {
	return fmt.Sprintf("catalog: invalid %s value %q: %s", e.Type, e.Value, e.Reason)
}

func valueError(t *Type, text []byte, reason string) error {
	v := text
	if len(v) > 64 {
		v = v[:64]
	}
	return &ValueError{Type: t.name(), Value: string(v), Reason: reason}
}

// isJSONInt reports whether b is -?(0|[1-9][0-9]*).
func isJSONInt(b []byte) bool {
	if len(b) > 0 && b[0] == '-' {
		b = b[1:]
	}
	if len(b) == 0 || (b[0] == '0' && len(b) > 1) {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// isUint reports whether b is (0|[1-9][0-9]*).
func isUint(b []byte) bool {
	return len(b) > 0 && b[0] != '-' && isJSONInt(b)
}

// parseInt64 parses a decimal int64 without allocating.
func parseInt64(b []byte) (int64, bool) {
	neg := false
	if len(b) > 0 && (b[0] == '-' || b[0] == '+') {
		neg = b[0] == '-'
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var u uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		u = u*10 + uint64(c-'0') // 19 digits cannot overflow uint64
	}
	if neg {
		if u > 1<<63 {
			return 0, false
		}
		return -int64(u), true
	}
	if u > math.MaxInt64 {
		return 0, false
	}
	return int64(u), true
}

func appendInt8(dst []byte, t *Type, text []byte, f Format) ([]byte, error) {
	v, ok := parseInt64(text)
	if !ok || !isJSONInt(text) {
		return dst, valueError(t, text, "not a 64-bit integer")
	}
	if f != FormatConvexJSON {
		dst = append(dst, '"')
		dst = append(dst, text...)
		return append(dst, '"'), nil
	}
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(v))
	dst = append(dst, `{"$integer":"`...)
	dst = base64.StdEncoding.AppendEncode(dst, b[:])
	return append(dst, `"}`...), nil
}

// isJSONNumber reports whether b is a JSON number:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func isJSONNumber(b []byte) bool {
	i, n := 0, len(b)
	if i < n && b[i] == '-' {
		i++
	}
	if i >= n {
		return false
	}
	if b[i] == '0' {
		i++
	} else if b[i] >= '1' && b[i] <= '9' {
		for i < n && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	} else {
		return false
	}
	if i < n && b[i] == '.' {
		i++
		start := i
		for i < n && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == start {
			return false
		}
	}
	if i < n && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < n && (b[i] == '+' || b[i] == '-') {
			i++
		}
		start := i
		for i < n && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == start {
			return false
		}
	}
	return i == n
}

// The $float encodings of the special values, base64 of the float64's
// little-endian bytes.
const (
	floatNaN     = `{"$float":"AAAAAAAA+H8="}`
	floatInf     = `{"$float":"AAAAAAAA8H8="}`
	floatNegInf  = `{"$float":"AAAAAAAA8P8="}`
	floatNegZero = `{"$float":"AAAAAAAAAIA="}`
)

func appendFloat(dst []byte, t *Type, text []byte, f Format) ([]byte, error) {
	if len(text) > 0 {
		switch c := text[0]; {
		case c == 'N' && string(text) == "NaN":
			if f == FormatConvexJSON {
				return append(dst, floatNaN...), nil
			}
			return append(dst, `"NaN"`...), nil
		case c == 'I' && string(text) == "Infinity":
			if f == FormatConvexJSON {
				return append(dst, floatInf...), nil
			}
			return append(dst, `"Infinity"`...), nil
		case c == '-' && len(text) > 1 && text[1] == 'I' && string(text) == "-Infinity":
			if f == FormatConvexJSON {
				return append(dst, floatNegInf...), nil
			}
			return append(dst, `"-Infinity"`...), nil
		case c == '-' && f == FormatConvexJSON && isNegZero(text):
			return append(dst, floatNegZero...), nil
		}
	}
	if !isJSONNumber(text) {
		return dst, valueError(t, text, "not a number")
	}
	return append(dst, text...), nil
}

// isNegZero reports whether a valid float text is a negative zero ("-0",
// "-0.0", "-0e5", …).
func isNegZero(b []byte) bool {
	if len(b) < 2 || b[0] != '-' {
		return false
	}
	for _, c := range b[1:] {
		switch {
		case c == 'e' || c == 'E':
			return true
		case c != '0' && c != '.':
			return false
		}
	}
	return true
}

// appendTimestamp writes a timestamp as ISO 8601: the space between date
// and time becomes 'T', and with tz a "+00" offset becomes 'Z'. Values
// without a space (infinity, -infinity) are written as they are; a trailing
// " BC" is kept.
func appendTimestamp(dst []byte, text []byte, tz bool) []byte {
	sp := -1
	for i, c := range text {
		if c == ' ' {
			sp = i
			break
		}
	}
	if sp < 0 {
		return AppendString(dst, text)
	}
	body, suffix := text, []byte(nil)
	if n := len(body); n >= 3 && body[n-3] == ' ' && body[n-2] == 'B' && body[n-1] == 'C' && n-3 > sp {
		body, suffix = body[:n-3], body[n-3:]
	}
	dst = append(dst, '"')
	dst = appendStringBody(dst, body[:sp])
	dst = append(dst, 'T')
	rest := body[sp+1:]
	if n := len(rest); tz && n >= 3 && rest[n-3] == '+' && rest[n-2] == '0' && rest[n-1] == '0' {
		dst = appendStringBody(dst, rest[:n-3])
		dst = append(dst, 'Z')
	} else {
		dst = appendStringBody(dst, rest)
	}
	dst = appendStringBody(dst, suffix)
	return append(dst, '"')
}

// hexVal maps a hex digit to its value and anything else to 0xff.
var hexVal = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = byte(c - '0')
	}
	for c := 'a'; c <= 'f'; c++ {
		t[c] = byte(c-'a') + 10
		t[c-'a'+'A'] = byte(c-'a') + 10
	}
	return t
}()

// byteaHex returns the hex digits of PostgreSQL's hex bytea output.
func byteaHex(t *Type, text []byte) ([]byte, error) {
	if len(text) < 2 || text[0] != '\\' || text[1] != 'x' {
		return nil, valueError(t, text, `not hex bytea output (\x…): set bytea_output = hex`)
	}
	if len(text)%2 != 0 {
		return nil, valueError(t, text, "odd number of hex digits")
	}
	return text[2:], nil
}

func appendBytea(dst []byte, t *Type, text []byte, f Format) ([]byte, error) {
	hex, err := byteaHex(t, text)
	if err != nil {
		return dst, err
	}
	start := len(dst)
	if f == FormatConvexJSON {
		dst = append(dst, `{"$bytes":"`...)
	} else {
		dst = append(dst, '"')
	}
	dst, ok := appendBase64OfHex(dst, hex)
	if !ok {
		return dst[:start], valueError(t, text, "invalid hex digit")
	}
	if f == FormatConvexJSON {
		return append(dst, `"}`...), nil
	}
	return append(dst, '"'), nil
}

// appendBase64OfHex appends the base64 of the bytes an even number of hex
// digits spell; ok is false at an invalid digit.
func appendBase64OfHex(dst, hex []byte) ([]byte, bool) {
	// Decode in chunks whose length is a multiple of 3 so that the base64
	// of the chunks concatenates to the base64 of the whole.
	var buf [96]byte
	for len(hex) > 0 {
		n := min(len(hex)/2, len(buf))
		for i := 0; i < n; i++ {
			hi, lo := hexVal[hex[2*i]], hexVal[hex[2*i+1]]
			if hi > 15 || lo > 15 {
				return dst, false
			}
			buf[i] = hi<<4 | lo
		}
		dst = base64.StdEncoding.AppendEncode(dst, buf[:n])
		hex = hex[2*n:]
	}
	return dst, true
}

// safeASCII marks the ASCII bytes a JSON string can hold unescaped.
var safeASCII = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD.
func AppendString(dst, s []byte) []byte {
	dst = append(dst, '"')
	dst = appendStringBody(dst, s)
	return append(dst, '"')
}

// appendStringBody appends s escaped for the inside of a JSON string.
func appendStringBody(dst, s []byte) []byte {
	start := 0
	for i := 0; i < len(s); {
		// Skip eight plain ASCII bytes at a time: most text needs no escaping.
		for i+8 <= len(s) && !needsEscape8(binary.LittleEndian.Uint64(s[i:])) {
			i += 8
		}
		if i >= len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			if safeASCII[c] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	return append(dst, s[start:]...)
}

// needsEscape8 reports whether any of the eight bytes in v is a control
// character, '"', '\\' or non-ASCII (SWAR: a byte-wise zero test on v's
// transforms).
func needsEscape8(v uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	hasZero := func(x uint64) uint64 { return (x - ones) & ^x & highs }
	lt0x20 := (v - 0x20*ones) & ^v & highs
	return (lt0x20 | hasZero(v^('"'*ones)) | hasZero(v^('\\'*ones)) | v&highs) != 0
}

var errNilType = errors.New("catalog: nil type")
