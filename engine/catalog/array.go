package catalog

import "strconv"

// maxArrayDims is PostgreSQL's MAXDIM, the most dimensions an array has.
const maxArrayDims = 6

// arrayParser reads PostgreSQL's array text syntax and writes JSON:
//
//	[lo:hi][lo:hi]={{elem,elem},{elem,NULL}}
//
// The dimension decoration is optional (PostgreSQL prints it only when a
// lower bound is not 1) and is dropped. Elements are separated by the
// element type's delimiter; an element is a nested {…}, a double-quoted
// string with backslash escapes, or an unquoted string (backslash escapes
// allowed, surrounding whitespace ignored) where NULL, in any case, is SQL
// NULL.
type arrayParser struct {
	t       *Type // the array type, for errors
	elem    *Type
	f       Format
	s       []byte
	i       int
	delim   byte
	scratch []byte // unescaped element text
}

func appendArray(dst []byte, t *Type, text []byte, f Format) ([]byte, error) {
	if t.Elem == nil {
		return dst, valueError(t, text, "array type without an element type")
	}
	var scratch [256]byte
	p := arrayParser{t: t, elem: t.Elem, f: f, s: text, delim: arrayDelim(t), scratch: scratch[:0]}
	start := len(dst)
	dst, err := p.parse(dst)
	if err != nil {
		return dst[:start], err
	}
	return dst, nil
}

// arrayDelim is the delimiter between t's elements.
func arrayDelim(t *Type) byte {
	if t.Delim != 0 {
		return t.Delim
	}
	if t.Elem.Kind != KindArray && t.Elem.Delim != 0 {
		return t.Elem.Delim
	}
	return ','
}

func (p *arrayParser) err(reason string) error { return valueError(p.t, p.s, reason) }

// elementErr reports an invalid element as an error of the array.
func (p *arrayParser) elementErr(err error) error {
	if ve, ok := err.(*ValueError); ok {
		return p.err("element " + strconv.Quote(ve.Value) + ": invalid " + ve.Type + ": " + ve.Reason)
	}
	return p.err(err.Error())
}

// appendElement encodes one element's text.
func (p *arrayParser) appendElement(dst, text []byte) ([]byte, error) {
	dst, err := AppendValue(dst, p.elem, text, p.f)
	if err != nil {
		return dst, p.elementErr(err)
	}
	return dst, nil
}

func isArraySpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

func (p *arrayParser) skipSpace() {
	for p.i < len(p.s) && isArraySpace(p.s[p.i]) {
		p.i++
	}
}

func (p *arrayParser) parse(dst []byte) ([]byte, error) {
	p.skipSpace()
	if p.i < len(p.s) && p.s[p.i] == '[' {
		if err := p.dimensions(); err != nil {
			return dst, err
		}
	}
	p.skipSpace()
	if p.i >= len(p.s) || p.s[p.i] != '{' {
		return dst, p.err("array must start with {")
	}
	p.i++
	dst, err := p.level(dst, 1)
	if err != nil {
		return dst, err
	}
	p.skipSpace()
	if p.i != len(p.s) {
		return dst, p.err("junk after closing }")
	}
	return dst, nil
}

// dimensions skips "[lo:hi]…=" (or "[hi]…="), checking its syntax.
func (p *arrayParser) dimensions() error {
	n := 0
	for p.i < len(p.s) && p.s[p.i] == '[' {
		if n++; n > maxArrayDims {
			return p.err("too many dimensions")
		}
		p.i++
		if !p.integer() {
			return p.err("bad dimension bound")
		}
		if p.i < len(p.s) && p.s[p.i] == ':' {
			p.i++
			if !p.integer() {
				return p.err("bad dimension bound")
			}
		}
		if p.i >= len(p.s) || p.s[p.i] != ']' {
			return p.err("missing ] in dimensions")
		}
		p.i++
	}
	p.skipSpace()
	if p.i >= len(p.s) || p.s[p.i] != '=' {
		return p.err("missing = after dimensions")
	}
	p.i++
	return nil
}

// integer skips an optionally signed decimal integer.
func (p *arrayParser) integer() bool {
	if p.i < len(p.s) && (p.s[p.i] == '-' || p.s[p.i] == '+') {
		p.i++
	}
	start := p.i
	for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
		p.i++
	}
	return p.i > start
}

// level writes one {…} level; p.i is just past its '{'. A level holds
// either sub-arrays only or elements only.
func (p *arrayParser) level(dst []byte, depth int) ([]byte, error) {
	dst = append(dst, '[')
	p.skipSpace()
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
		return append(dst, ']'), nil
	}
	var err error
	nested := false
	for n := 0; ; n++ {
		p.skipSpace()
		if p.i >= len(p.s) {
			return dst, p.err("unterminated array")
		}
		if sub := p.s[p.i] == '{'; n == 0 {
			nested = sub
		} else if sub != nested {
			return dst, p.err("sub-arrays mixed with elements")
		}
		if nested {
			if depth >= maxArrayDims {
				return dst, p.err("too many dimensions")
			}
			p.i++
			dst, err = p.level(dst, depth+1)
		} else {
			dst, err = p.element(dst)
		}
		if err != nil {
			return dst, err
		}
		p.skipSpace()
		if p.i >= len(p.s) {
			return dst, p.err("unterminated array")
		}
		switch p.s[p.i] {
		case p.delim:
			p.i++
			dst = append(dst, ',')
		case '}':
			p.i++
			return append(dst, ']'), nil
		default:
			return dst, p.err("expected delimiter or }")
		}
	}
}

// element writes one element; p.i is at its first byte (not whitespace).
func (p *arrayParser) element(dst []byte) ([]byte, error) {
	s := p.s
	if s[p.i] == '"' {
		p.i++
		start, escaped := p.i, false
		for {
			if p.i >= len(s) {
				return dst, p.err("unterminated quoted element")
			}
			c := s[p.i]
			if c == '"' {
				break
			}
			if c == '\\' {
				escaped = true
				p.i++
				if p.i >= len(s) {
					return dst, p.err("unterminated quoted element")
				}
			}
			p.i++
		}
		raw := s[start:p.i]
		p.i++ // closing quote
		if escaped {
			raw = p.unescape(raw)
		}
		return p.appendElement(dst, raw)
	}
	start, end, escaped := p.i, p.i, false
	for p.i < len(s) {
		c := s[p.i]
		if c == p.delim || c == '}' {
			break
		}
		switch {
		case c == '\\':
			escaped = true
			p.i += 2
			if p.i > len(s) {
				return dst, p.err("backslash at end of input")
			}
			end = p.i
			continue
		case c == '{' || c == '"':
			return dst, p.err("unexpected " + string(c) + " in unquoted element")
		case !isArraySpace(c):
			end = p.i + 1
		}
		p.i++
	}
	raw := s[start:end]
	if len(raw) == 0 {
		return dst, p.err("empty unquoted element")
	}
	if escaped {
		raw = p.unescape(raw)
	} else if isNULL(raw) {
		return append(dst, "null"...), nil
	}
	return p.appendElement(dst, raw)
}

// unescape removes backslash escapes from raw into p.scratch (growing it
// only for elements longer than its stack buffer).
func (p *arrayParser) unescape(raw []byte) []byte {
	if cap(p.scratch) < len(raw) {
		p.scratch = make([]byte, len(raw))
	}
	b := p.scratch[:len(raw)]
	n := 0
	for i := 0; i < len(raw); i++ {
		if raw[i] == '\\' && i+1 < len(raw) {
			i++
		}
		b[n] = raw[i]
		n++
	}
	return b[:n]
}

// isNULL reports whether an unquoted element is NULL (case-insensitive).
func isNULL(b []byte) bool {
	return len(b) == 4 && b[0]|0x20 == 'n' && b[1]|0x20 == 'u' && b[2]|0x20 == 'l' && b[3]|0x20 == 'l'
}
