package importer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/shapelog/shapelog/internal/jsonscan"
)

// bodyReader walks a request body's JSON top level and splits arrays into
// their elements by finding boundaries only (strings, escapes, nesting);
// the elements are validated when they are parsed, in parallel. It keeps
// one buffer, so memory does not grow with the body.
type bodyReader struct {
	r        io.Reader
	buf      []byte
	pos, end int
	err      error // from r, reported once the buffer is drained
	consumed int64
}

func newBodyReader(r io.Reader) *bodyReader { return newBodyReaderSize(r, bodyBuffer) }

// bodyBuffer is a body reader's buffer size; it grows only to hold a value
// longer than that.
const bodyBuffer = 256 << 10

func newBodyReaderSize(r io.Reader, size int) *bodyReader {
	return &bodyReader{r: r, buf: make([]byte, size)}
}

// detach gives the last value read to the caller for good: the reader
// goes on in a new buffer, so the value need not be copied out.
func (b *bodyReader) detach() {
	nb := make([]byte, max(bodyBuffer, b.end-b.pos))
	b.end = copy(nb, b.buf[b.pos:b.end])
	b.consumed += int64(b.pos)
	b.pos = 0
	b.buf = nb
}

// fill makes at least n unread bytes available if the body has them.
func (b *bodyReader) fill(n int) bool {
	for b.end-b.pos < n && b.err == nil {
		// Move the unread bytes to the front only when the buffer is full:
		// reads are often much smaller than the buffer.
		if b.end == len(b.buf) && b.pos > 0 {
			copy(b.buf, b.buf[b.pos:b.end])
			b.end -= b.pos
			b.consumed += int64(b.pos)
			b.pos = 0
		}
		if b.end == len(b.buf) {
			nb := make([]byte, 2*len(b.buf))
			copy(nb, b.buf[:b.end])
			b.buf = nb
		}
		m, err := b.r.Read(b.buf[b.end:])
		b.end += m
		if err != nil {
			b.err = err
		}
	}
	return b.end-b.pos >= n
}

func (b *bodyReader) failure() error {
	if b.err != nil && !errors.Is(b.err, io.EOF) {
		return b.err
	}
	return badRequest("BadJsonBody", "Failed to parse the JSON body: unexpected end of input")
}

func (b *bodyReader) syntax(what string) error {
	return badRequest("BadJsonBody", "Failed to parse the JSON body: %s at byte %d", what, b.consumed+int64(b.pos))
}

// ws skips whitespace and returns the next byte without consuming it.
func (b *bodyReader) ws() (byte, error) {
	for {
		if !b.fill(1) {
			return 0, b.failure()
		}
		c := b.buf[b.pos]
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return c, nil
		}
		b.pos++
	}
}

func (b *bodyReader) expect(c byte) error {
	got, err := b.ws()
	if err != nil {
		return err
	}
	if got != c {
		return b.syntax(fmt.Sprintf("expected %q, found %q", c, got))
	}
	b.pos++
	return nil
}

// value returns the next JSON value's bytes (valid until the next call).
// While scanning, b.pos stays at the value's start and off counts from it,
// so refilling (which may move the buffer) keeps positions right.
func (b *bodyReader) value() ([]byte, error) {
	c, err := b.ws()
	if err != nil {
		return nil, err
	}
	at := func(off int) (byte, bool) {
		if b.pos+off >= b.end && !b.fill(off+1) {
			return 0, false
		}
		return b.buf[b.pos+off], true
	}
	off := 0
	switch {
	case c == '"':
		if off, err = b.stringEnd(0); err != nil {
			return nil, err
		}
	case c == '{' || c == '[':
		depth := 0
	scan:
		for {
			if b.pos+off >= b.end && !b.fill(off+1) {
				return nil, b.failure()
			}
			buf := b.buf[b.pos+off : b.end]
			for i, ch := range buf {
				if !structural[ch] {
					continue
				}
				switch ch {
				case '"':
					if off, err = b.stringEnd(off + i); err != nil {
						return nil, err
					}
					continue scan // the buffer may have moved
				case '{', '[':
					depth++
				default:
					if depth--; depth == 0 {
						off += i + 1
						break scan
					}
				}
			}
			off += len(buf)
		}
	default:
		for {
			ch, ok := at(off)
			if !ok || ch == ',' || ch == '}' || ch == ']' || ch == ' ' || ch == '\n' || ch == '\t' || ch == '\r' {
				break
			}
			off++
		}
		if off == 0 {
			return nil, b.syntax("expected a value")
		}
	}
	v := b.buf[b.pos : b.pos+off]
	b.pos += off
	return v, nil
}

// structural are the bytes that delimit nested values.
var structural = [256]bool{'"': true, '{': true, '}': true, '[': true, ']': true}

// stringEnd returns the offset just past the string whose quote is at off.
func (b *bodyReader) stringEnd(off int) (int, error) {
	off++
	for {
		if b.pos+off >= b.end && !b.fill(off+1) {
			return 0, b.failure()
		}
		k := jsonscan.QuoteOrBackslash(b.buf[b.pos+off : b.end])
		if k < 0 {
			off = b.end - b.pos
			continue
		}
		off += k
		if b.buf[b.pos+off] == '"' {
			return off + 1, nil
		}
		off += 2 // a backslash and what it escapes
	}
}

// key reads an object member's name and its colon.
func (b *bodyReader) key() (string, error) {
	raw, err := b.value()
	if err != nil {
		return "", err
	}
	var k string
	if err := json.Unmarshal(raw, &k); err != nil {
		return "", b.syntax("expected a member name")
	}
	return k, b.expect(':')
}

// next consumes a ',' (true: another element follows) or the closer.
func (b *bodyReader) next(closer byte) (bool, error) {
	c, err := b.ws()
	if err != nil {
		return false, err
	}
	b.pos++
	switch c {
	case ',':
		return true, nil
	case closer:
		return false, nil
	}
	return false, b.syntax(fmt.Sprintf("expected ',' or %q, found %q", closer, c))
}

// splitMessage extracts the tableName and data of message idx.
func splitMessage(raw []byte, idx int) (table string, data []byte, err error) {
	table, data, err = splitFields(raw)
	if err != nil {
		if at, bad := jsonscan.InvalidUTF8(raw); bad {
			return "", nil, badRequest("BadJsonBody", "message %d: the string at %q is not valid UTF-8", idx, at)
		}
		return "", nil, badRequest("BadJsonBody", "message %d: %v", idx, err)
	}
	return table, data, nil
}

// splitFields is splitMessage's scan.
func splitFields(raw []byte) (table string, data []byte, err error) {
	sc := jsonscan.Scanner{B: raw}
	sc.WS()
	if !sc.Eat('{') {
		return "", nil, errors.New("a message must be an object")
	}
	haveTable := false
	sc.WS()
	if sc.Eat('}') {
		return "", nil, errors.New("a message needs tableName and data")
	}
	for {
		sc.WS()
		name, ok := sc.Str()
		if !ok {
			return "", nil, errors.New("malformed message")
		}
		sc.WS()
		if !sc.Eat(':') {
			return "", nil, errors.New("malformed message")
		}
		sc.WS()
		start := sc.I
		switch string(name) {
		case "tableName":
			t, ok := sc.Str()
			if !ok {
				return "", nil, errors.New("tableName must be a string")
			}
			table, haveTable = string(t), true
		default:
			if !sc.SkipBounds() {
				return "", nil, errors.New("malformed message")
			}
			if string(name) == "data" {
				data = raw[start:sc.I]
			}
		}
		sc.WS()
		if sc.Eat('}') {
			break
		}
		if !sc.Eat(',') {
			return "", nil, errors.New("malformed message")
		}
	}
	if !haveTable {
		return "", nil, errors.New("a message needs a tableName")
	}
	if data == nil {
		data = []byte("null")
	}
	return table, data, nil
}
