// Package jsonscan reads JSON text in place, in one pass and without
// building values: the engine's importer checks records with it and the
// destination connector reads its input lines with it. encoding/json
// validates a document, then decodes it, then copies raw parts; on hot
// paths that triple pass dominated the profile.
package jsonscan

import (
	"bytes"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// Scanner reads the JSON text B from position I.
type Scanner struct {
	B []byte
	I int
}

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
// no escapes, else a new slice. Invalid UTF-8 becomes U+FFFD, as
// encoding/json decodes it.
func (s *Scanner) Str() ([]byte, bool) {
	if !s.Eat('"') {
		return nil, false
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
		s.I++
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
func (s *Scanner) strSlow(start int) ([]byte, bool) {
	out := append([]byte(nil), s.B[start:s.I]...)
	for s.I < len(s.B) {
		c := s.B[s.I]
		switch {
		case c == '"':
			s.I++
			if !utf8.Valid(out) {
				out = []byte(string([]rune(string(out))))
			}
			return out, true
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
				if s.I+1 < len(s.B) && s.B[s.I] == '\\' && s.B[s.I+1] == 'u' {
					s.I += 2
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
func QuoteOrBackslash(b []byte) int {
	q := bytes.IndexByte(b, '"')
	if q < 0 {
		q = len(b)
	}
	if k := bytes.IndexByte(b[:q], '\\'); k >= 0 {
		return k
	}
	if q == len(b) {
		return -1
	}
	return q
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
