package importer

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/shapelog/shapelog/engine/recordpb"
	"github.com/shapelog/shapelog/internal/jsonscan"
)

// protoValue is one decoded recordpb.Value: its kind and text as a
// namedField holds them (what the JSON path makes of the equivalent JSON
// value), its JSON type (jt*) and, for the typed date and time kinds, the
// format its text is in ("date", "time" or "date-time").
type protoValue struct {
	kind     byte
	text     []byte
	jt       uint8
	temporal string
}

// malformedValue is a Value that is not valid protobuf, as opposed to a
// valid one whose value is refused.
type malformedValue struct{ err error }

func (m *malformedValue) Error() string { return m.err.Error() }

func malformed(format string, args ...any) (protoValue, error) {
	return protoValue{}, &malformedValue{fmt.Errorf(format, args...)}
}

// valueWire is the wire type of each of Value's fields.
var valueWire = [...]protowire.Type{
	recordpb.KindBoolean:         protowire.VarintType,
	recordpb.KindString:          protowire.BytesType,
	recordpb.KindInteger:         protowire.VarintType,
	recordpb.KindBigInteger:      protowire.BytesType,
	recordpb.KindNumber:          protowire.Fixed64Type,
	recordpb.KindBigDecimal:      protowire.BytesType,
	recordpb.KindDate:            protowire.VarintType,
	recordpb.KindTimeWithZone:    protowire.BytesType,
	recordpb.KindTimeWithoutZone: protowire.VarintType,
	recordpb.KindTimestampZone:   protowire.BytesType,
	recordpb.KindTimestampLocal:  protowire.BytesType,
	recordpb.KindJSON:            protowire.BytesType,
	recordpb.KindNull:            protowire.VarintType,
}

// Texts shared by every value that has them (only read).
var (
	textTrue     = []byte{'t'}
	textFalse    = []byte{'f'}
	textNaN      = []byte("NaN")
	textInf      = []byte("Infinity")
	textMinusInf = []byte("-Infinity")
)

// Ranges beyond which values are refused before PostgreSQL sees them
// (PostgreSQL's own ranges are narrower and it refuses the rest).
const (
	maxDays    = 1 << 32 // days from the epoch, either way
	maxSeconds = 1 << 44 // seconds from the epoch, either way
	dayNanos   = 86400 * 1e9
	maxOffset  = 24 * 3600 // seconds
)

// decodeValue decodes one encoded Value. The text of strings, JSON and
// big numbers is the frame's own bytes; rendered text (numbers, dates and
// times) goes to the worker's text buffer.
func (w *worker) decodeValue(b []byte) (protoValue, error) {
	var which protowire.Number
	var raw []byte
	var x uint64
	isNull, set := false, false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return malformed("%v", protowire.ParseError(n))
		}
		b = b[n:]
		if num < recordpb.KindBoolean || num > recordpb.KindNull {
			return malformed("unknown field %d (a kind of value this engine does not know)", num)
		}
		if typ != valueWire[num] {
			return malformed("field %d has wire type %d, not %d", num, typ, valueWire[num])
		}
		var v uint64
		var r []byte
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
		case protowire.Fixed64Type:
			v, n = protowire.ConsumeFixed64(b)
		default:
			r, n = protowire.ConsumeBytes(b)
		}
		if n < 0 {
			return malformed("%v", protowire.ParseError(n))
		}
		b = b[n:]
		if num == recordpb.KindNull {
			isNull = v != 0
			continue
		}
		which, raw, x, set = num, r, v, true
	}
	if isNull && set {
		return malformed("is_null is set together with a value (field %d)", which)
	}
	if !set {
		return protoValue{kind: kindNull, jt: jtNull}, nil // is_null, or nothing set
	}
	switch which {
	case recordpb.KindBoolean:
		if x != 0 {
			return protoValue{kind: kindBool, text: textTrue, jt: jtBool}, nil
		}
		return protoValue{kind: kindBool, text: textFalse, jt: jtBool}, nil
	case recordpb.KindString:
		if !utf8.Valid(raw) {
			return protoValue{}, errors.New("the string is not valid UTF-8")
		}
		return protoValue{kind: kindString, text: raw, jt: jtString}, nil
	case recordpb.KindInteger:
		start := w.begin()
		w.text = strconv.AppendInt(w.text, protowire.DecodeZigZag(x), 10)
		return protoValue{kind: kindNumber, text: w.end(start), jt: jtInteger}, nil
	case recordpb.KindBigInteger:
		sc := jsonscan.Scanner{B: raw}
		if _, ok := sc.Number(); !ok || sc.I != len(raw) || bytes.ContainsAny(raw, ".eE") {
			return protoValue{}, fmt.Errorf("big_integer %s is not a base-10 integer", quoteShort(raw))
		}
		return protoValue{kind: kindNumber, text: raw, jt: jtInteger}, nil
	case recordpb.KindNumber:
		return w.double(math.Float64frombits(x)), nil
	case recordpb.KindBigDecimal:
		switch string(raw) {
		case "NaN", "Infinity", "-Infinity":
			return protoValue{kind: kindNumber, text: raw, jt: jtNumber}, nil
		}
		sc := jsonscan.Scanner{B: raw}
		integral, ok := sc.Number()
		if !ok || sc.I != len(raw) {
			return protoValue{}, fmt.Errorf("big_decimal %s is not a decimal number (nor NaN, Infinity or -Infinity)", quoteShort(raw))
		}
		if integral {
			return protoValue{kind: kindNumber, text: raw, jt: jtInteger}, nil
		}
		return protoValue{kind: kindNumber, text: raw, jt: jtNumber}, nil
	case recordpb.KindDate:
		days := protowire.DecodeZigZag(x)
		if days < -maxDays || days > maxDays {
			return protoValue{}, fmt.Errorf("date %d days from 1970-01-01 is out of range", days)
		}
		start := w.begin()
		var bc bool
		w.text, bc = appendDate(w.text, days)
		if bc {
			w.text = append(w.text, " BC"...)
		}
		return protoValue{kind: kindString, text: w.end(start), jt: jtString, temporal: "date"}, nil
	case recordpb.KindTimeWithoutZone:
		if x > dayNanos {
			return protoValue{}, fmt.Errorf("time_without_timezone %d ns is not a time of day", x)
		}
		start := w.begin()
		w.text = appendClock(w.text, x)
		return protoValue{kind: kindString, text: w.end(start), jt: jtString, temporal: "time"}, nil
	case recordpb.KindTimeWithZone:
		return w.timeWithZone(raw)
	case recordpb.KindTimestampZone:
		return w.timestampWithZone(raw)
	case recordpb.KindTimestampLocal:
		return w.localTimestamp(raw)
	default: // KindJSON
		if !utf8.Valid(raw) {
			return protoValue{}, errors.New("the json value is not valid UTF-8")
		}
		sc := jsonscan.Scanner{B: raw}
		sc.WS()
		kind, text, jt, ok := scanValue(&sc)
		if !ok || !sc.Done() {
			return protoValue{}, fmt.Errorf("the json value %s is not valid JSON", quoteShort(raw))
		}
		return protoValue{kind: kind, text: text, jt: jt}, nil
	}
}

// double renders a double as encoding/json writes numbers (NaN and
// ±Infinity as PostgreSQL's words).
func (w *worker) double(f float64) protoValue {
	switch {
	case math.IsNaN(f):
		return protoValue{kind: kindNumber, text: textNaN, jt: jtNumber}
	case math.IsInf(f, 1):
		return protoValue{kind: kindNumber, text: textInf, jt: jtNumber}
	case math.IsInf(f, -1):
		return protoValue{kind: kindNumber, text: textMinusInf, jt: jtNumber}
	}
	start := w.begin()
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	w.text = strconv.AppendFloat(w.text, f, format, -1, 64)
	if format == 'e' { // 1e-07 → 1e-7, as encoding/json writes it
		if n := len(w.text); n-start >= 4 && w.text[n-4] == 'e' && w.text[n-3] == '-' && w.text[n-2] == '0' {
			w.text[n-2] = w.text[n-1]
			w.text = w.text[:n-1]
		}
	}
	jt := uint8(jtNumber)
	if f == math.Trunc(f) {
		jt = jtInteger
	}
	return protoValue{kind: kindNumber, text: w.end(start), jt: jt}
}

// fields3 reads a small message's varint fields 1 to 3.
func fields3(b []byte) (v [4]uint64, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return v, protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.VarintType || num > 3 {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return v, protowire.ParseError(n)
			}
			if num <= 3 {
				return v, fmt.Errorf("field %d has wire type %d, not a varint", num, typ)
			}
			b = b[n:]
			continue // an unknown field
		}
		x, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return v, protowire.ParseError(n)
		}
		v[num] = x
		b = b[n:]
	}
	return v, nil
}

func sint32(x uint64) int64 { return int64(int32(protowire.DecodeZigZag(x & math.MaxUint32))) }

func (w *worker) timeWithZone(raw []byte) (protoValue, error) {
	v, err := fields3(raw)
	if err != nil {
		return malformed("time_with_timezone: %v", err)
	}
	nanos, offset := v[1], sint32(v[2])
	if nanos > dayNanos {
		return protoValue{}, fmt.Errorf("time_with_timezone %d ns is not a time of day", nanos)
	}
	if offset <= -maxOffset || offset >= maxOffset {
		return protoValue{}, fmt.Errorf("time_with_timezone: offset %d s is out of range", offset)
	}
	start := w.begin()
	w.text = appendClock(w.text, nanos)
	w.text = appendOffset(w.text, offset)
	return protoValue{kind: kindString, text: w.end(start), jt: jtString, temporal: "time"}, nil
}

func (w *worker) timestampWithZone(raw []byte) (protoValue, error) {
	v, err := fields3(raw)
	if err != nil {
		return malformed("timestamp_with_timezone: %v", err)
	}
	sec, nano, offset := protowire.DecodeZigZag(v[1]), v[2]&math.MaxUint32, sint32(v[3])
	switch {
	case sec < -maxSeconds || sec > maxSeconds:
		return protoValue{}, fmt.Errorf("timestamp_with_timezone %d s from the epoch is out of range", sec)
	case nano >= 1e9:
		return protoValue{}, fmt.Errorf("timestamp_with_timezone: nano %d is over a second", nano)
	case offset <= -maxOffset || offset >= maxOffset:
		return protoValue{}, fmt.Errorf("timestamp_with_timezone: offset %d s is out of range", offset)
	}
	if offset%60 != 0 {
		offset = 0 // an offset with seconds (old local times) is written in UTC: the same instant
	}
	local := sec + offset
	days, secs := local/86400, local%86400
	if secs < 0 {
		days, secs = days-1, secs+86400
	}
	start := w.begin()
	var bc bool
	w.text, bc = appendDate(w.text, days)
	w.text = append(w.text, 'T')
	w.text = appendClock(w.text, uint64(secs)*1e9+nano)
	w.text = appendOffset(w.text, offset)
	if bc {
		w.text = append(w.text, " BC"...)
	}
	return protoValue{kind: kindString, text: w.end(start), jt: jtString, temporal: "date-time"}, nil
}

func (w *worker) localTimestamp(raw []byte) (protoValue, error) {
	v, err := fields3(raw)
	if err != nil {
		return malformed("timestamp_without_timezone: %v", err)
	}
	days, nanos := protowire.DecodeZigZag(v[1]), v[2]
	switch {
	case days < -maxDays || days > maxDays:
		return protoValue{}, fmt.Errorf("timestamp_without_timezone: date %d days from 1970-01-01 is out of range", days)
	case nanos >= dayNanos:
		return protoValue{}, fmt.Errorf("timestamp_without_timezone: %d ns is not a time of day", nanos)
	}
	start := w.begin()
	var bc bool
	w.text, bc = appendDate(w.text, days)
	w.text = append(w.text, 'T')
	w.text = appendClock(w.text, nanos)
	if bc {
		w.text = append(w.text, " BC"...)
	}
	return protoValue{kind: kindString, text: w.end(start), jt: jtString, temporal: "date-time"}, nil
}

// begin makes room in the worker's text buffer for one rendered value
// (at most 64 bytes) and returns where it starts. Values already rendered
// stay where they are: a full buffer is replaced (by one twice its size),
// not grown.
func (w *worker) begin() int {
	if cap(w.text)-len(w.text) < 64 {
		w.text = make([]byte, 0, max(16<<10, 2*cap(w.text)))
	}
	return len(w.text)
}

// end returns the value rendered since start.
func (w *worker) end(start int) []byte { return w.text[start:len(w.text):len(w.text)] }

// appendDate appends the proleptic Gregorian date days after 1970-01-01 as
// YYYY-MM-DD (PostgreSQL's calendar too); bc reports a year before 1, for
// which the year is written as PostgreSQL does (1 BC is year 0) and the
// caller appends " BC".
func appendDate(b []byte, days int64) (_ []byte, bc bool) {
	// Howard Hinnant's days_from_civil, inverted (civil_from_days).
	z := days + 719468
	era := z / 146097
	if z < 0 && z%146097 != 0 {
		era--
	}
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	y := yoe + era*400
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d := doy - (153*mp+2)/5 + 1
	m := mp + 3
	if mp >= 10 {
		m = mp - 9
	}
	if m <= 2 {
		y++
	}
	if y <= 0 {
		y, bc = 1-y, true
	}
	switch {
	case y < 10:
		b = append(b, "000"...)
	case y < 100:
		b = append(b, "00"...)
	case y < 1000:
		b = append(b, '0')
	}
	b = strconv.AppendInt(b, y, 10)
	b = append(b, '-', byte('0'+m/10), byte('0'+m%10), '-', byte('0'+d/10), byte('0'+d%10))
	return b, bc
}

// appendClock appends nanoseconds since midnight as HH:MM:SS, with the
// fraction (up to nine digits, trailing zeros dropped) when there is one.
func appendClock(b []byte, nanos uint64) []byte {
	secs, frac := nanos/1e9, nanos%1e9
	h, m, s := secs/3600, secs/60%60, secs%60
	b = append(b, byte('0'+h/10), byte('0'+h%10), ':', byte('0'+m/10), byte('0'+m%10), ':', byte('0'+s/10), byte('0'+s%10))
	if frac == 0 {
		return b
	}
	var digits [9]byte
	for i := 8; i >= 0; i-- {
		digits[i] = byte('0' + frac%10)
		frac /= 10
	}
	n := 9
	for digits[n-1] == '0' {
		n--
	}
	b = append(b, '.')
	return append(b, digits[:n]...)
}

// appendOffset appends a UTC offset in seconds as +HH:MM (+HH:MM:SS when
// it has seconds).
func appendOffset(b []byte, offset int64) []byte {
	sign := byte('+')
	if offset < 0 {
		sign, offset = '-', -offset
	}
	h, m, s := offset/3600, offset/60%60, offset%60
	b = append(b, sign, byte('0'+h/10), byte('0'+h%10), ':', byte('0'+m/10), byte('0'+m%10))
	if s != 0 {
		b = append(b, ':', byte('0'+s/10), byte('0'+s%10))
	}
	return b
}

// quoteShort quotes a value for an error message, cut to 40 bytes.
func quoteShort(b []byte) string {
	if len(b) > 40 {
		return strconv.Quote(string(b[:40])) + "…"
	}
	return strconv.Quote(string(b))
}

// kindChecks are what a protobuf body's values are checked against,
// compiled from a stream's jsonSchema: per declared property, the JSON
// types it allows (a superset of what the full validator accepts, read
// from type, $ref to Airbyte's well-known types, anyOf, oneOf and allOf)
// and its date or time format; the required properties, and whether the
// schema allows other properties. Nothing else of the schema is checked
// per record: the typed values need no more, and PostgreSQL still refuses
// a value its column cannot take.
type kindChecks struct {
	props    map[string]*kindCheck
	required []string
	closed   bool // additionalProperties: false
}

// kindCheck is what one field's values may be.
type kindCheck struct {
	types      uint8  // jt* bits; null is always taken (it stands for an absent field too) unless required
	format     string // "date", "time", "date-time" or ""
	check      func(string) bool
	required   bool // null is refused unless types allows it
	undeclared bool // a field a closed schema does not declare: only null is taken
}

// closedField is the check of a field a closed schema does not declare.
var closedField = &kindCheck{undeclared: true}

// of is the check of field name's values; nil checks nothing.
func (k *kindChecks) of(name string) *kindCheck {
	if k == nil {
		return nil
	}
	if c, ok := k.props[name]; ok {
		return c
	}
	if k.closed {
		return closedField
	}
	return nil
}

// refuses says why v is not a value of the field, or "".
func (c *kindCheck) refuses(v protoValue) string {
	if c == nil {
		return ""
	}
	if v.kind == kindNull {
		if c.required && c.types&jtNull == 0 {
			return "the field is required and its jsonSchema does not allow null"
		}
		return ""
	}
	if c.undeclared {
		return "the jsonSchema does not declare the field and has additionalProperties: false"
	}
	if c.types&v.jt == 0 {
		return fmt.Sprintf("the value is %s, and its jsonSchema allows %s", typeName(v.jt), typeNames(c.types))
	}
	if c.format != "" && v.jt == jtString {
		switch {
		case v.temporal != "" && v.temporal != c.format:
			return fmt.Sprintf("the value is a typed %s, and its jsonSchema's format is %s", v.temporal, c.format)
		case v.temporal == "" && c.check != nil && !c.check(unsafe.String(unsafe.SliceData(v.text), len(v.text))): // read only
			return fmt.Sprintf("%s is not a valid %s (the format its jsonSchema declares)", quoteShort(v.text), c.format)
		}
	}
	return ""
}

var jtNames = []struct {
	bit  uint8
	name string
}{{jtNull, "null"}, {jtBool, "a boolean"}, {jtInteger, "an integer"}, {jtNumber, "a number"}, {jtString, "a string"}, {jtArray, "an array"}, {jtObject, "an object"}}

func typeName(jt uint8) string {
	for _, n := range jtNames {
		if n.bit == jt {
			return n.name
		}
	}
	return "a value"
}

// typeNames lists the types of a set, "nothing" for none.
func typeNames(types uint8) string {
	if types&jtNumber != 0 {
		types &^= jtInteger // a number: integers included
	}
	var names []string
	for _, n := range jtNames {
		if types&n.bit != 0 {
			names = append(names, n.name)
		}
	}
	if len(names) == 0 {
		return "nothing but null"
	}
	return strings.Join(names, " or ")
}

// compileKindChecks compiles a jsonSchema document's kind checks.
func compileKindChecks(doc map[string]any) *kindChecks {
	k := &kindChecks{props: map[string]*kindCheck{}}
	props, _ := doc["properties"].(map[string]any)
	for name, ps := range props {
		c := looseCheck(ps, 0)
		k.props[name] = &c
	}
	if b, ok := doc["additionalProperties"].(bool); ok && !b {
		k.closed = true
	}
	if req, ok := doc["required"].([]any); ok {
		for _, r := range req {
			if name, ok := r.(string); ok {
				k.required = append(k.required, name)
				if c := k.props[name]; c != nil {
					c.required = true
				}
			}
		}
	}
	return k
}

// wellKnownKinds are the JSON types and formats of Airbyte's well-known
// types, taking their typed values as well as their strings.
var wellKnownKinds = map[string]kindCheck{
	"String": {types: jtString}, "BinaryData": {types: jtString},
	"Date": {types: jtString, format: "date"}, "TimestampWithTimezone": {types: jtString, format: "date-time"},
	"TimestampWithoutTimezone": {types: jtString, format: "date-time"}, "TimeWithTimezone": {types: jtString, format: "time"},
	"TimeWithoutTimezone": {types: jtString, format: "time"}, "Number": {types: jtString | jtNumber | jtInteger},
	"Integer": {types: jtString | jtInteger}, "Boolean": {types: jtBool},
}

// looseCheck reads what a property's schema allows: the JSON types of
// type, narrowed by a well-known $ref and by anyOf, oneOf (the union of
// their variants) and allOf (each); any other keyword only narrows what
// the full validator accepts further, and is left out.
func looseCheck(v any, depth int) kindCheck {
	c := kindCheck{types: jtAny}
	s, ok := v.(map[string]any)
	if !ok {
		if b, ok := v.(bool); ok && !b {
			c.types = 0
		}
		return c
	}
	if depth > 8 {
		return c
	}
	if t, ok := typeSet(s["type"]); ok {
		c.types = t
	}
	if ref, ok := s["$ref"].(string); ok {
		if i := strings.LastIndexByte(ref, '/'); i >= 0 && strings.Contains(ref, "WellKnownTypes.json") {
			if wk, ok := wellKnownKinds[ref[i+1:]]; ok {
				c.types &= wk.types
				c.format = wk.format
			}
		}
	}
	for _, k := range []string{"anyOf", "oneOf"} {
		if variants, ok := s[k].([]any); ok && len(variants) > 0 {
			var union uint8
			for _, x := range variants {
				union |= looseCheck(x, depth+1).types
			}
			c.types &= union
		}
	}
	if all, ok := s["allOf"].([]any); ok {
		for _, x := range all {
			c.types &= looseCheck(x, depth+1).types
		}
	}
	if f, ok := s["format"].(string); ok {
		if _, ok := formatChecks[f]; ok {
			c.format = f
		}
	}
	if c.format != "" {
		c.check = formatChecks[c.format]
	}
	return c
}
