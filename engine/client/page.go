package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
)

// Pages are decoded with a small scanner instead of encoding/json: it only
// finds where each top-level value and each document starts and ends, which
// is most of the client's work on a large snapshot. Documents are handed out
// as raw JSON for the caller to decode as it likes, as the body arrives: a
// document_deltas page ends on a transaction boundary, so one large
// transaction is one large page, and holding it would take its size.

var errSyntax = errors.New("malformed JSON in response")

// ObjectFields calls fn with each member of the JSON object b: the key as
// written (a JSON string, quotes included; see FieldName) and the raw value.
// Both slices alias b. It checks the structure, not every value's syntax.
func ObjectFields(b []byte, fn func(key, value []byte) error) error {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return errSyntax
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return errSyntax
		}
		keyEnd, err := scanValue(b, i)
		if err != nil {
			return err
		}
		key := b[i:keyEnd:keyEnd]
		i = skipSpace(b, keyEnd)
		if i >= len(b) || b[i] != ':' {
			return errSyntax
		}
		i = skipSpace(b, i+1)
		end, err := scanValue(b, i)
		if err != nil {
			return err
		}
		if err := fn(key, b[i:end:end]); err != nil {
			return err
		}
		i = skipSpace(b, end)
		if i >= len(b) {
			return errSyntax
		}
		if b[i] == '}' {
			return nil
		}
		if b[i] != ',' {
			return errSyntax
		}
		i = skipSpace(b, i+1)
	}
}

// FieldName decodes a key ObjectFields returned.
func FieldName(key []byte) (string, error) {
	if bytes.IndexByte(key, '\\') < 0 {
		return string(key[1 : len(key)-1]), nil
	}
	var name string
	err := json.Unmarshal(key, &name)
	return name, err
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\t' || b[i] == '\r') {
		i++
	}
	return i
}

// scanValue returns the end of the JSON value starting at b[i].
func scanValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errSyntax
	}
	switch b[i] {
	case '"':
		return scanString(b, i)
	case '{', '[':
		// One pass over the bytes: strings are skipped inline, which beats
		// a call per (usually short) string.
		depth, inString := 0, false
		for j := i; j < len(b); j++ {
			c := b[j]
			if inString {
				if c == '\\' {
					j++
				} else if c == '"' {
					inString = false
				}
				continue
			}
			switch c {
			case '"':
				inString = true
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, errSyntax
	default:
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\n' && b[j] != '\t' && b[j] != '\r' {
			j++
		}
		if j == i {
			return 0, errSyntax
		}
		return j, nil
	}
}

// scanString returns the end of the string starting at b[i], jumping from
// quote to quote.
func scanString(b []byte, i int) (int, error) {
	j := i + 1
	for {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			return 0, errSyntax
		}
		j += k
		// The quote is escaped if an odd number of backslashes precede it.
		n := 0
		for p := j - 1; p > i && b[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			return j + 1, nil
		}
		j++
	}
}

// pageOut is where do streams a list_snapshot or document_deltas body:
// each document of "values" goes to each (valid only during the call), the
// other members named in scalars are decoded into them.
type pageOut struct {
	each    func(doc []byte) error
	scalars map[string]any
}

// streamPage reads a page body from r as it arrives, in the memory of its
// largest document.
func streamPage(r io.Reader, out *pageOut) error {
	sc := &streamScanner{r: r, buf: make([]byte, 0, 64<<10)}
	if err := sc.expect('{'); err != nil {
		return err
	}
	seen := map[string]bool{}
	c, err := sc.peek()
	if err != nil {
		return err
	}
	for c != '}' {
		key, err := sc.value()
		if err != nil {
			return err
		}
		if key[0] != '"' {
			return errSyntax
		}
		name, err := FieldName(key)
		if err != nil {
			return err
		}
		seen[name] = true
		if err := sc.expect(':'); err != nil {
			return err
		}
		if name == "values" {
			if err := sc.array(out.each); err != nil {
				return err
			}
		} else {
			v, err := sc.value()
			if err != nil {
				return err
			}
			if dst := out.scalars[name]; dst != nil {
				if err := json.Unmarshal(v, dst); err != nil {
					return fmt.Errorf("decoding %s: %w", name, err)
				}
			}
		}
		if c, err = sc.peek(); err != nil {
			return err
		}
		if c == ',' {
			sc.pos++
			if c, err = sc.peek(); err != nil {
				return err
			}
			if c == '}' {
				return errSyntax
			}
		} else if c != '}' {
			return errSyntax
		}
	}
	if !seen["values"] {
		return fmt.Errorf("%w: no values", errSyntax)
	}
	for k := range out.scalars {
		if !seen[k] {
			return fmt.Errorf("%w: no %s", errSyntax, k)
		}
	}
	return nil
}

// streamScanner finds JSON values in a stream, keeping one buffer that
// grows only to the largest value.
type streamScanner struct {
	r   io.Reader
	buf []byte
	pos int
	eof bool
}

// more moves what is unread to the front and fills the rest of the
// buffer, doubling it first when what is unread fills it: a value longer
// than the buffer is then rescanned over geometrically growing spans,
// linear in its size overall.
func (s *streamScanner) more() error {
	if s.eof {
		return errSyntax
	}
	if s.pos > 0 {
		s.buf = s.buf[:copy(s.buf, s.buf[s.pos:])]
		s.pos = 0
	}
	if len(s.buf) == cap(s.buf) {
		s.buf = slices.Grow(s.buf, len(s.buf))
	}
	for len(s.buf) < cap(s.buf) {
		n, err := s.r.Read(s.buf[len(s.buf):cap(s.buf)])
		s.buf = s.buf[:len(s.buf)+n]
		if err == io.EOF {
			s.eof = true
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// peek returns the next byte that is not white space, without taking it.
func (s *streamScanner) peek() (byte, error) {
	for {
		s.pos = skipSpace(s.buf, s.pos)
		if s.pos < len(s.buf) {
			return s.buf[s.pos], nil
		}
		if err := s.more(); err != nil {
			return 0, err
		}
	}
}

func (s *streamScanner) expect(c byte) error {
	got, err := s.peek()
	if err != nil {
		return err
	}
	if got != c {
		return errSyntax
	}
	s.pos++
	return nil
}

// value returns the next value, valid until the next call.
func (s *streamScanner) value() ([]byte, error) {
	for {
		if _, err := s.peek(); err != nil {
			return nil, err
		}
		// A value running to the end of what was read may go on.
		if end, err := scanValue(s.buf, s.pos); err == nil && (end < len(s.buf) || s.eof) {
			v := s.buf[s.pos:end:end]
			s.pos = end
			return v, nil
		}
		if err := s.more(); err != nil {
			return nil, err
		}
	}
}

// array passes each element of the array that comes next to each.
func (s *streamScanner) array(each func([]byte) error) error {
	if err := s.expect('['); err != nil {
		return err
	}
	if c, err := s.peek(); err != nil || c == ']' {
		s.pos++
		return err
	}
	for {
		v, err := s.value()
		if err != nil {
			return err
		}
		if err := each(v); err != nil {
			return err
		}
		c, err := s.peek()
		if err != nil {
			return err
		}
		s.pos++
		if c == ']' {
			return nil
		}
		if c != ',' {
			return errSyntax
		}
	}
}

// collected keeps streamed documents for a page that returns them all.
type collected struct {
	docs []byte
	ends []int
}

func (c *collected) add(doc []byte) error {
	c.docs = append(c.docs, doc...)
	c.ends = append(c.ends, len(c.docs))
	return nil
}

func (c *collected) values() []json.RawMessage {
	out := make([]json.RawMessage, len(c.ends))
	start := 0
	for i, end := range c.ends {
		out[i] = c.docs[start:end:end]
		start = end
	}
	return out
}
