package importer

import (
	"bytes"
	"encoding/json"
	"errors"
	"unsafe"

	"github.com/shapelog/shapelog/internal/jsonscan"
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
	name   string      // the property's name, shared by every record's field
	schema *fastSchema // the schema it is a property of
	types  uint8       // bit set of jt* (jtInteger accepts integral numbers)
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
				p.name, p.schema = name, fs
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
// previous one (most) skip the property lookups. A hint is one goroutine's;
// it holds for records of the same schema only (a batch may mix streams
// whose fields share names but not types).
func scanRecordHinted(data []byte, fs *fastSchema, fields []namedField, hint *[]*fastProp) ([]namedField, error) {
	sc := jsonscan.Scanner{B: data}
	sc.WS()
	if !sc.Eat('{') {
		return nil, errSlow
	}
	sc.WS()
	seen := 0
	if !sc.Eat('}') {
		for {
			sc.WS()
			name, ok := sc.Str()
			if !ok {
				return nil, errSlow
			}
			sc.WS()
			if !sc.Eat(':') {
				return nil, errSlow
			}
			sc.WS()
			kind, value, jt, ok := scanValue(&sc)
			if !ok {
				return nil, errSlow
			}
			var fieldName string
			var p *fastProp
			if pos := len(fields); hint != nil && pos < len(*hint) && (*hint)[pos] != nil && (*hint)[pos].schema == fs && (*hint)[pos].name == string(name) {
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
			sc.WS()
			if sc.Eat('}') {
				break
			}
			if !sc.Eat(',') {
				return nil, errSlow
			}
		}
	}
	sc.WS()
	if sc.I != len(sc.B) {
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

// scanValue scans one JSON value: strings come back decoded, numbers and
// literals as written, objects and arrays as their (validated) JSON text.
func scanValue(s *jsonscan.Scanner) (kind byte, value []byte, jt uint8, ok bool) {
	if s.I >= len(s.B) {
		return 0, nil, 0, false
	}
	switch c := s.B[s.I]; {
	case c == '"':
		v, ok := s.Str()
		return kindString, v, jtString, ok
	case c == '{' || c == '[':
		start := s.I
		if !s.Skip() {
			return 0, nil, 0, false
		}
		t := uint8(jtObject)
		if c == '[' {
			t = jtArray
		}
		if v := s.B[start:s.I]; !bytes.ContainsAny(v, " \t\n\r") {
			return kindJSON, v, t, true // compact already (and validated by Skip)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, s.B[start:s.I]); err != nil {
			return 0, nil, 0, false
		}
		return kindJSON, compact.Bytes(), t, true
	case c == 't' || c == 'f' || c == 'n':
		switch lit, ok := s.Literal(); {
		case !ok:
			return 0, nil, 0, false
		case lit == "true":
			return kindBool, []byte{'t'}, jtBool, true
		case lit == "false":
			return kindBool, []byte{'f'}, jtBool, true
		}
		return kindNull, nil, jtNull, true
	default:
		start := s.I
		integral, ok := s.Number()
		if !ok {
			return 0, nil, 0, false
		}
		t := uint8(jtNumber)
		if integral {
			t = jtInteger
		}
		return kindNumber, s.B[start:s.I], t, true
	}
}
