// Package jsonscan reads JSON text in place, in one pass and without
// building values: the engine's importer checks records with it and the
// destination connector reads its input lines with it. encoding/json
// validates a document, then decodes it, then copies raw parts; on hot
// paths that triple pass dominated the profile.
package jsonscan

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// Scanner reads the JSON text B from position I.
type Scanner struct {
	B     []byte
	I     int
	depth int // of the nested values being read
}

// MaxDepth is how deeply values may nest, as in encoding/json: deeper
// input is refused rather than exhausting the stack.
const MaxDepth = 10000

// WS skips whitespace.
func (s *Scanner) WS() {
	for s.I < len(s.B) && (s.B[s.I] == ' ' || s.B[s.I] == '\t' || s.B[s.I] == '\n' || s.B[s.I] == '\r') {
		s.I++
	}
}

// Eat consumes c if it is next.
func (s *Scanner) Eat(c byte) bool {
	if s.I < len(s.B) && s.B[s.I] == c {
		s.I++
		return true
	}
	return false
}

// Done reports whether only whitespace is left.
func (s *Scanner) Done() bool {
	s.WS()
	return s.I == len(s.B)
}

// Literal scans true, false or null and returns it.
func (s *Scanner) Literal() (string, bool) {
	for _, lit := range [...]string{"true", "false", "null"} {
		if len(s.B)-s.I >= len(lit) && string(s.B[s.I:s.I+len(lit)]) == lit {
			s.I += len(lit)
			return lit, true
		}
	}
	return "", false
}

// Number scans a JSON number; integral reports whether its value is a whole
// number (1, 1.0 and 1e3 are; JSON Schema's "integer" accepts them).
func (s *Scanner) Number() (integral, ok bool) {
	start := s.I
	if s.I < len(s.B) && s.B[s.I] == '-' {
		s.I++
	}
	if s.I >= len(s.B) {
		return false, false
	}
	if s.B[s.I] == '0' {
		s.I++
	} else if s.B[s.I] >= '1' && s.B[s.I] <= '9' {
		s.digits()
	} else {
		return false, false
	}
	simple := true
	if s.I < len(s.B) && s.B[s.I] == '.' {
		simple = false
		s.I++
		if !s.digits() {
			return false, false
		}
	}
	if s.I < len(s.B) && (s.B[s.I] == 'e' || s.B[s.I] == 'E') {
		simple = false
		s.I++
		if s.I < len(s.B) && (s.B[s.I] == '+' || s.B[s.I] == '-') {
			s.I++
		}
		if !s.digits() {
			return false, false
		}
	}
	if simple {
		return true, true
	}
	return IntegralNumber(s.B[start:s.I]), true
}

// digits skips a run of digits and reports whether there was one.
func (s *Scanner) digits() bool {
	start := s.I
	for s.I < len(s.B) && s.B[s.I] >= '0' && s.B[s.I] <= '9' {
		s.I++
	}
	return s.I > start
}

// IntegralNumber reports whether a valid JSON number's value is a whole
// number, exactly, from its digits: the value is D × 10^(E - len(fraction))
// with D the digits of the integer part and fraction, so it is whole when D
// is zero or its trailing zeros make up for the negative power.
func IntegralNumber(num []byte) bool {
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

// Str scans a JSON string and returns it decoded: a slice of B when it has
// no escapes, else a new slice. A string that is not valid UTF-8 is
// refused (encoding/json would replace the bad bytes with U+FFFD, changing
// the data silently); InvalidUTF8 finds where it is.
func (s *Scanner) Str() ([]byte, bool) {
	v, _, ok := s.str()
	return v, ok
}

// str is Str, also saying whether v is a new slice rather than part of B.
func (s *Scanner) str() (v []byte, copied, ok bool) {
	if !s.Eat('"') {
		return nil, false, false
	}
	start := s.I
	var high byte
	for s.I < len(s.B) {
		c := s.B[s.I]
		if strSpecial[c] {
			switch {
			case c == '"':
				v := s.B[start:s.I]
				s.I++
				return v, false, high < utf8.RuneSelf || utf8.Valid(v)
			case c == '\\':
				v, ok := s.strSlow(start)
				return v, true, ok
			default: // a control character
				return nil, false, false
			}
		}
		high |= c
		s.I++
	}
	return nil, false, false
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

// strSlow decodes a string with escapes from start, into one copy sized
// by the string's written length (escapes only shrink).
func (s *Scanner) strSlow(start int) ([]byte, bool) {
	end := Scanner{B: s.B, I: start - 1}
	if !end.skipString() {
		return nil, false
	}
	out := append(make([]byte, 0, end.I-1-start), s.B[start:s.I]...)
	for s.I < len(s.B) {
		c := s.B[s.I]
		switch {
		case c == '"':
			s.I++
			return out, utf8.Valid(out)
		case c < 0x20:
			return nil, false
		case c != '\\':
			out = append(out, c)
			s.I++
			continue
		}
		if s.I+1 >= len(s.B) {
			return nil, false
		}
		e := s.B[s.I+1]
		s.I += 2
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
				// A pair takes the next escape; anything else leaves it to
				// be read on its own, as encoding/json does.
				pair := utf8.RuneError
				if s.I+1 < len(s.B) && s.B[s.I] == '\\' && s.B[s.I+1] == 'u' {
					next := s.I
					s.I += 2
					r2, ok := s.hex4()
					if !ok {
						return nil, false
					}
					if pair = utf16.DecodeRune(r, r2); pair == utf8.RuneError {
						s.I = next
					}
				}
				r = pair
			}
			out = utf8.AppendRune(out, r)
		default:
			return nil, false
		}
	}
	return nil, false
}

func (s *Scanner) hex4() (rune, bool) {
	if s.I+4 > len(s.B) {
		return 0, false
	}
	v, err := strconv.ParseUint(string(s.B[s.I:s.I+4]), 16, 32)
	if err != nil {
		return 0, false
	}
	s.I += 4
	return rune(v), true
}

// Skip validates and skips one value of any kind.
func (s *Scanner) Skip() bool {
	if s.I >= len(s.B) {
		return false
	}
	switch c := s.B[s.I]; {
	case c == '"':
		_, ok := s.Str()
		return ok
	case c == '{' || c == '[':
		return s.skipNested()
	case c == 't' || c == 'f' || c == 'n':
		_, ok := s.Literal()
		return ok
	default:
		_, ok := s.Number()
		return ok
	}
}

// skipNested validates and skips an object or array.
func (s *Scanner) skipNested() bool {
	if s.depth++; s.depth > MaxDepth {
		return false
	}
	defer func() { s.depth-- }()
	open := s.B[s.I]
	s.I++
	s.WS()
	closer := byte('}')
	if open == '[' {
		closer = ']'
	}
	if s.Eat(closer) {
		return true
	}
	for {
		s.WS()
		if open == '{' {
			if _, ok := s.Str(); !ok {
				return false
			}
			s.WS()
			if !s.Eat(':') {
				return false
			}
			s.WS()
		}
		if !s.Skip() {
			return false
		}
		s.WS()
		if s.Eat(closer) {
			return true
		}
		if !s.Eat(',') {
			return false
		}
	}
}

// QuoteOrBackslash is the index of the first '"' or '\\' in b, or -1.
// It looks through windows that double in size, so finding each escape of
// a long string costs about the distance to it, not to the string's end.
func QuoteOrBackslash(b []byte) int {
	for start, size := 0, 64; start < len(b); start, size = start+size, 2*size {
		w := b[start:min(start+size, len(b))]
		q := bytes.IndexByte(w, '"')
		if q < 0 {
			q = len(w)
		}
		if k := bytes.IndexByte(w[:q], '\\'); k >= 0 {
			return start + k
		}
		if q < len(w) {
			return start + q
		}
	}
	return -1
}

// skipString passes over a string by its boundaries (its quote at I)
// without checking its contents.
func (s *Scanner) skipString() bool {
	i := s.I + 1
	for {
		k := QuoteOrBackslash(s.B[i:])
		if k < 0 {
			return false
		}
		i += k
		if s.B[i] == '"' {
			s.I = i + 1
			return true
		}
		i += 2 // a backslash and what it escapes
		if i > len(s.B) {
			return false
		}
	}
}

// SkipBounds passes over one value by its boundaries: a nested value's
// strings and brackets are matched but its contents are not checked (the
// caller validates it later, when it parses it). Scalars are validated.
func (s *Scanner) SkipBounds() bool {
	if s.I >= len(s.B) {
		return false
	}
	switch s.B[s.I] {
	case '{', '[':
		depth := 0
		for s.I < len(s.B) {
			switch s.B[s.I] {
			case '"':
				if !s.skipString() {
					return false
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
			}
			s.I++
			if depth == 0 {
				return true
			}
		}
		return false
	}
	return s.Skip()
}

// InvalidUTF8 finds the first string of the JSON value b (a member name or
// a string value) that is not valid UTF-8 and returns its JSON Pointer
// (RFC 6901; a member name's is its member's). found is false when b is
// valid UTF-8, or when what precedes the bad string is not JSON.
func InvalidUTF8(b []byte) (pointer string, found bool) {
	if utf8.Valid(b) {
		return "", false
	}
	s := Scanner{B: b}
	s.WS()
	pointer, found, _ = s.invalidUTF8(nil)
	return pointer, found
}

// invalidUTF8 walks one value for InvalidUTF8, at path; ok is false when
// the value is malformed, ending the walk. The pointer is built only for
// the bad string found, so the walk costs the input's size whatever its
// nesting.
func (s *Scanner) invalidUTF8(path []pathStep) (pointer string, found, ok bool) {
	if s.I >= len(s.B) {
		return "", false, false
	}
	switch c := s.B[s.I]; c {
	case '"':
		start := s.I
		if !s.skipString() {
			return "", false, false
		}
		if utf8.Valid(s.B[start:s.I]) {
			return "", false, true
		}
		return pointerOf(path), true, true
	case '{', '[':
		if s.depth++; s.depth > MaxDepth {
			return "", false, false
		}
		defer func() { s.depth-- }()
		s.I++
		for i := 0; ; i++ {
			s.WS()
			if s.Eat('}') || s.Eat(']') {
				return "", false, true
			}
			if i > 0 && !s.Eat(',') {
				return "", false, false
			}
			s.WS()
			step := pathStep{index: i}
			if c == '{' {
				start := s.I
				if s.I >= len(s.B) || s.B[s.I] != '"' || !s.skipString() {
					return "", false, false
				}
				step.raw = s.B[start:s.I]
				if !utf8.Valid(step.raw) {
					return pointerOf(append(path, step)), true, true
				}
				s.WS()
				if !s.Eat(':') {
					return "", false, false
				}
				s.WS()
			}
			if pointer, found, ok = s.invalidUTF8(append(path, step)); found || !ok {
				return pointer, found, ok
			}
		}
	default:
		return "", false, s.Skip()
	}
}

// pathStep is one step of a JSON Pointer: a member, by its name as written
// (quotes included), or an element, by its index.
type pathStep struct {
	raw   []byte
	index int
}

// pointerOf is path as a JSON Pointer.
func pointerOf(path []pathStep) string {
	var b strings.Builder
	for _, p := range path {
		b.WriteByte('/')
		if p.raw == nil {
			b.WriteString(strconv.Itoa(p.index))
			continue
		}
		name := p.raw[1 : len(p.raw)-1]
		if v, ok := (&Scanner{B: p.raw}).Str(); ok {
			name = v
		}
		b.WriteString(pointerEscaper.Replace(string(name)))
	}
	return b.String()
}

// pointerEscaper escapes a member name for a JSON Pointer.
var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

// Value decodes one JSON value as encoding/json decodes into an any with
// UseNumber: objects as map[string]any (the last of repeated names wins),
// arrays as []any, strings, numbers as json.Number, booleans and nil. It
// copies no more than it must: a string with escapes keeps the slice it
// was decoded into, others are copied out of B once.
func (s *Scanner) Value() (any, bool) {
	if s.I >= len(s.B) {
		return nil, false
	}
	switch c := s.B[s.I]; {
	case c == '"':
		v, copied, ok := s.str()
		if copied {
			return unsafe.String(unsafe.SliceData(v), len(v)), ok
		}
		return string(v), ok
	case c == '{' || c == '[':
		return s.nested()
	case c == 't' || c == 'f' || c == 'n':
		switch lit, ok := s.Literal(); {
		case !ok:
			return nil, false
		case lit == "null":
			return nil, true
		default:
			return lit == "true", true
		}
	default:
		start := s.I
		if _, ok := s.Number(); !ok {
			return nil, false
		}
		return json.Number(s.B[start:s.I]), true
	}
}

// nested is Value for an object or array.
func (s *Scanner) nested() (any, bool) {
	if s.depth++; s.depth > MaxDepth {
		return nil, false
	}
	defer func() { s.depth-- }()
	obj := s.B[s.I] == '{'
	s.I++
	var m map[string]any
	var a []any
	closer := byte(']')
	if obj {
		m, closer = map[string]any{}, '}'
	} else {
		a = []any{}
	}
	s.WS()
	for more := !s.Eat(closer); more; {
		s.WS()
		var name []byte
		if obj {
			var ok bool
			if name, ok = s.Str(); !ok {
				return nil, false
			}
			s.WS()
			if !s.Eat(':') {
				return nil, false
			}
			s.WS()
		}
		v, ok := s.Value()
		if !ok {
			return nil, false
		}
		if obj {
			m[string(name)] = v
		} else {
			a = append(a, v)
		}
		s.WS()
		if more = !s.Eat(closer); more && !s.Eat(',') {
			return nil, false
		}
	}
	if obj {
		return m, true
	}
	return a, true
}
