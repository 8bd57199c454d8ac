package importer

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// The fast path checks and encodes a record in one pass over its bytes,
// without building a map: most Airbyte schemas are a flat object of typed
// properties, and for those decoding into `any` and walking the generic
// validator costs most of an import. santhosh-tekuri/jsonschema stays the
// reference: schemas outside the subset go to it, and so does every record
// the fast path rejects, so error messages (and the final verdict) are its.
// A differential test keeps the two in agreement.

// fastSchema is a compiled flat object schema.
type fastSchema struct {
	props      map[string]*fastProp
	required   []string
	additional bool // additionalProperties (true unless false)
}

// fastProp is one property's constraint: the JSON types it may have and,
// for strings, a format check.
type fastProp struct {
	name   string // the property's name, shared by every record's field
	types  uint8  // bit set of jt* (jtInteger accepts integral numbers)
	format func(string) bool
}

const (
	jtNull = 1 << iota
	jtBool
	jtInteger
	jtNumber
	jtString
	jtArray
	jtObject
	jtAny = jtNull | jtBool | jtInteger | jtNumber | jtString | jtArray | jtObject
)

var typeBits = map[string]uint8{"null": jtNull, "boolean": jtBool, "integer": jtInteger, "number": jtNumber | jtInteger,
	"string": jtString, "array": jtArray, "object": jtObject}

// annotations are keywords that never affect validity.
var annotations = map[string]bool{"$schema": true, "$comment": true, "title": true, "description": true, "default": true,
	"examples": true, "airbyte_type": true, "contentEncoding": true, "contentMediaType": true, "readOnly": true,
	"writeOnly": true, "$description": true, "order": true, "airbyte_secret": true, pgTypeKeyword: true}

// compileFast compiles a schema document into the fast subset, or nil.
func compileFast(doc map[string]any) *fastSchema {
	fs := &fastSchema{props: map[string]*fastProp{}, additional: true}
	for k, v := range doc {
		switch {
		case annotations[k]:
		case k == "type":
			if t, ok := typeSet(v); !ok || t != jtObject {
				return nil
			}
		case k == "properties":
			props, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			for name, ps := range props {
				p := compileProp(ps)
				if p == nil {
					return nil
				}
				p.name = name
				fs.props[name] = p
			}
		case k == "required":
			req, ok := v.([]any)
			if !ok {
				return nil
			}
			for _, r := range req {
				s, ok := r.(string)
				if !ok {
					return nil
				}
				fs.required = append(fs.required, s)
			}
		case k == "additionalProperties":
			b, ok := v.(bool)
			if !ok {
				return nil
			}
			fs.additional = b
		default:
			return nil
		}
	}
	return fs
}

func typeSet(v any) (uint8, bool) {
	switch t := v.(type) {
	case string:
		b, ok := typeBits[t]
		return b, ok
	case []any:
		var set uint8
		for _, x := range t {
			s, ok := x.(string)
			if !ok {
				return 0, false
			}
			b, ok := typeBits[s]
			if !ok {
				return 0, false
			}
			set |= b
		}
		return set, len(t) > 0
	}
	return 0, false
}

func compileProp(v any) *fastProp {
	if b, ok := v.(bool); ok {
		if !b {
			return nil
		}
		return &fastProp{types: jtAny}
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	p := &fastProp{types: jtAny}
	for k, x := range m {
		switch {
		case annotations[k]:
		case k == "type":
			t, ok := typeSet(x)
			if !ok {
				return nil
			}
			p.types = t
		case k == "format":
			f, ok := x.(string)
			if !ok {
				return nil
			}
			if check, ok := formatChecks[f]; ok {
				p.format = check
			} else if _, known := knownFormats[f]; known {
				return nil // asserted by the reference validator: leave it to it
			}
		default:
			return nil
		}
	}
	return p
}

// knownFormats are formats the reference validator asserts besides ours.
var knownFormats = map[string]bool{"email": true, "idn-email": true, "hostname": true, "idn-hostname": true, "ipv4": true,
	"ipv6": true, "uri": true, "uri-reference": true, "iri": true, "iri-reference": true, "uri-template": true,
	"json-pointer": true, "relative-json-pointer": true, "regex": true, "uuid": true, "period": true, "duration": true}

// errSlow sends a record to the reference path.
var errSlow = errors.New("not handled by the fast path")

// scanRecord checks a record against fs and returns its fields, or errSlow
// when the record is invalid (or not a JSON object) so the reference
// validator can say why. Fields alias buf-owned copies.
func scanRecord(data []byte, fs *fastSchema, fields []namedField) ([]namedField, error) {
	return scanRecordHinted(data, fs, fields, nil)
}

// scanRecordHinted is scanRecord remembering in hint which property each
// position held, so records with their fields in the same order as the
// previous one (most) skip the property lookups. A hint is one goroutine's.
func scanRecordHinted(data []byte, fs *fastSchema, fields []namedField, hint *[]*fastProp) ([]namedField, error) {
	sc := scanner{b: data}
	sc.ws()
	if !sc.eat('{') {
		return nil, errSlow
	}
	sc.ws()
	seen := 0
	if !sc.eat('}') {
		for {
			sc.ws()
			name, ok := sc.str()
			if !ok {
				return nil, errSlow
			}
			sc.ws()
			if !sc.eat(':') {
				return nil, errSlow
			}
			sc.ws()
			kind, value, jt, ok := sc.value()
			if !ok {
				return nil, errSlow
			}
			var fieldName string
			var p *fastProp
			if pos := len(fields); hint != nil && pos < len(*hint) && (*hint)[pos] != nil && (*hint)[pos].name == string(name) {
				p = (*hint)[pos]
			} else {
				p = fs.props[string(name)]
				if hint != nil && p != nil {
					for len(*hint) <= pos {
						*hint = append(*hint, nil)
					}
					(*hint)[pos] = p
				}
			}
			if p != nil {
				if p.types&jt == 0 || (p.format != nil && jt == jtString && !p.format(unsafe.String(unsafe.SliceData(value), len(value)))) {
					return nil, errSlow
				}
				fieldName = p.name
			} else if !fs.additional {
				return nil, errSlow
			} else {
				fieldName = string(name)
			}
			fields = append(fields, namedField{name: fieldName, kind: kind, value: value})
			seen++
			sc.ws()
			if sc.eat('}') {
				break
			}
			if !sc.eat(',') {
				return nil, errSlow
			}
		}
	}
	sc.ws()
	if sc.i != len(sc.b) {
		return nil, errSlow
	}
	for _, r := range fs.required {
		found := false
		for i := range fields {
			if fields[i].name == r {
				found = true
				break
			}
		}
		if !found {
			return nil, errSlow
		}
	}
	// Duplicate names: JSON decoders keep the last; leave that to the
	// reference path.
	if seen > 1 {
		for i := range fields {
			for j := i + 1; j < len(fields); j++ {
				if fields[i].name == fields[j].name {
					return nil, errSlow
				}
			}
		}
	}
	return fields, nil
}

type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) && (s.b[s.i] == ' ' || s.b[s.i] == '\t' || s.b[s.i] == '\n' || s.b[s.i] == '\r') {
		s.i++
	}
}

func (s *scanner) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// value scans one JSON value: strings come back decoded, numbers and
// literals as written, objects and arrays as their (validated) JSON text.
func (s *scanner) value() (kind byte, value []byte, jt uint8, ok bool) {
	if s.i >= len(s.b) {
		return 0, nil, 0, false
	}
	switch c := s.b[s.i]; {
	case c == '"':
		v, ok := s.str()
		return kindString, v, jtString, ok
	case c == '{' || c == '[':
		start := s.i
		if !s.skip() {
			return 0, nil, 0, false
		}
		t := uint8(jtObject)
		if c == '[' {
			t = jtArray
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, s.b[start:s.i]); err != nil {
			return 0, nil, 0, false
		}
		return kindJSON, compact.Bytes(), t, true
	case c == 't' || c == 'f' || c == 'n':
		for _, lit := range []string{"true", "false", "null"} {
			if len(s.b)-s.i >= len(lit) && string(s.b[s.i:s.i+len(lit)]) == lit {
				s.i += len(lit)
				switch lit {
				case "true":
					return kindBool, []byte{'t'}, jtBool, true
				case "false":
					return kindBool, []byte{'f'}, jtBool, true
				}
				return kindNull, nil, jtNull, true
			}
		}
		return 0, nil, 0, false
	default:
		start := s.i
		integral, ok := s.number()
		if !ok {
			return 0, nil, 0, false
		}
		t := uint8(jtNumber)
		if integral {
			t = jtInteger
		}
		return kindNumber, s.b[start:s.i], t, true
	}
}

// number scans a JSON number; integral reports whether its value is a
// whole number (1, 1.0 and 1e3 are; the schema's "integer" accepts them).
func (s *scanner) number() (integral, ok bool) {
	start := s.i
	if s.i < len(s.b) && s.b[s.i] == '-' {
		s.i++
	}
	if s.i >= len(s.b) {
		return false, false
	}
	if s.b[s.i] == '0' {
		s.i++
	} else if s.b[s.i] >= '1' && s.b[s.i] <= '9' {
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
		}
	} else {
		return false, false
	}
	simple := true
	if s.i < len(s.b) && s.b[s.i] == '.' {
		simple = false
		s.i++
		if s.i >= len(s.b) || s.b[s.i] < '0' || s.b[s.i] > '9' {
			return false, false
		}
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		simple = false
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if s.i >= len(s.b) || s.b[s.i] < '0' || s.b[s.i] > '9' {
			return false, false
		}
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
		}
	}
	if simple {
		return true, true
	}
	return integralNumber(s.b[start:s.i]), true
}

// integralNumber reports whether a valid JSON number's value is a whole
// number, exactly, from its digits: the value is D × 10^(E - len(fraction))
// with D the digits of the integer part and fraction, so it is whole when D
// is zero or its trailing zeros make up for the negative power.
func integralNumber(num []byte) bool {
	i := 0
	if i < len(num) && num[i] == '-' {
		i++
	}
	intStart := i
	for i < len(num) && num[i] >= '0' && num[i] <= '9' {
		i++
	}
	intDigits := num[intStart:i]
	var frac []byte
	if i < len(num) && num[i] == '.' {
		i++
		fs := i
		for i < len(num) && num[i] >= '0' && num[i] <= '9' {
			i++
		}
		frac = num[fs:i]
	}
	exp := int64(0)
	if i < len(num) && (num[i] == 'e' || num[i] == 'E') {
		i++
		neg := false
		if i < len(num) && (num[i] == '+' || num[i] == '-') {
			neg = num[i] == '-'
			i++
		}
		for ; i < len(num); i++ {
			if exp < 1<<40 { // saturate: no number has that many digits
				exp = exp*10 + int64(num[i]-'0')
			}
		}
		if neg {
			exp = -exp
		}
	}
	// Trailing zeros of D (the integer digits followed by the fraction's).
	zeros, nonzero := int64(0), false
	for j := len(frac) - 1; j >= 0 && !nonzero; j-- {
		if frac[j] == '0' {
			zeros++
		} else {
			nonzero = true
		}
	}
	for j := len(intDigits) - 1; j >= 0 && !nonzero; j-- {
		if intDigits[j] == '0' {
			zeros++
		} else {
			nonzero = true
		}
	}
	if !nonzero {
		return true // zero
	}
	return exp-int64(len(frac))+zeros >= 0
}

// str scans a JSON string and returns it decoded.
func (s *scanner) str() ([]byte, bool) {
	if !s.eat('"') {
		return nil, false
	}
	start := s.i
	var high byte
	for s.i < len(s.b) {
		c := s.b[s.i]
		if strSpecial[c] {
			switch {
			case c == '"':
				v := s.b[start:s.i]
				s.i++
				if high >= utf8.RuneSelf && !utf8.Valid(v) {
					return []byte(string([]rune(string(v)))), true
				}
				return v, true
			case c == '\\':
				return s.strSlow(start)
			default: // a control character
				return nil, false
			}
		}
		high |= c
		s.i++
	}
	return nil, false
}

// strSpecial are the bytes that end a string's plain run: its closing
// quote, an escape, and control characters (invalid in JSON strings).
var strSpecial = func() (t [256]bool) {
	for c := 0; c < 0x20; c++ {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

// strSlow decodes a string with escapes from start.
func (s *scanner) strSlow(start int) ([]byte, bool) {
	out := append([]byte(nil), s.b[start:s.i]...)
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			if !utf8.Valid(out) {
				out = []byte(string([]rune(string(out))))
			}
			return out, true
		case c < 0x20:
			return nil, false
		case c != '\\':
			out = append(out, c)
			s.i++
			continue
		}
		if s.i+1 >= len(s.b) {
			return nil, false
		}
		e := s.b[s.i+1]
		s.i += 2
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := s.hex4()
			if !ok {
				return nil, false
			}
			if utf16.IsSurrogate(r) {
				if s.i+1 < len(s.b) && s.b[s.i] == '\\' && s.b[s.i+1] == 'u' {
					s.i += 2
					r2, ok := s.hex4()
					if !ok {
						return nil, false
					}
					r = utf16.DecodeRune(r, r2)
				} else {
					r = utf8.RuneError
				}
			}
			out = utf8.AppendRune(out, r)
		default:
			return nil, false
		}
	}
	return nil, false
}

func (s *scanner) hex4() (rune, bool) {
	if s.i+4 > len(s.b) {
		return 0, false
	}
	v, err := strconv.ParseUint(string(s.b[s.i:s.i+4]), 16, 32)
	if err != nil {
		return 0, false
	}
	s.i += 4
	return rune(v), true
}

// skip validates and skips a nested object or array.
func (s *scanner) skip() bool {
	open := s.b[s.i]
	s.i++
	s.ws()
	closer := byte('}')
	if open == '[' {
		closer = ']'
	}
	if s.eat(closer) {
		return true
	}
	for {
		s.ws()
		if open == '{' {
			if _, ok := s.str(); !ok {
				return false
			}
			s.ws()
			if !s.eat(':') {
				return false
			}
			s.ws()
		}
		if _, _, _, ok := s.value(); !ok {
			return false
		}
		s.ws()
		if s.eat(closer) {
			return true
		}
		if !s.eat(',') {
			return false
		}
	}
}
