package protocol

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/shapelog/shapelog/internal/jsonscan"
)

// MaxLineLength is the longest line a Reader takes, in bytes: four times
// the engine's default import request limit (64 MiB), which a record never
// exceeds. It bounds the memory a line without a newline can take.
const MaxLineLength = 256 << 20

// Reader reads newline-delimited messages up to MaxLineLength long.
type Reader struct {
	r    *bufio.Reader
	line int
	buf  []byte
	max  int // MaxLineLength; smaller in tests
}

// NewReader reads messages from r (usually stdin).
func NewReader(r io.Reader) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 1<<20), max: MaxLineLength}
}

// Line is the number of the line Next returned last (1-based).
func (r *Reader) Line() int { return r.line }

// Next returns the next non-blank line without its newline, or io.EOF. The
// slice is valid until the next call. A line longer than MaxLineLength is
// skipped and reported as a *LineError; reading can go on after it.
func (r *Reader) Next() ([]byte, error) {
	for {
		r.buf = r.buf[:0]
		tooLong := false
		for {
			chunk, err := r.r.ReadSlice('\n')
			n := len(r.buf) + len(chunk)
			if err == nil {
				n-- // the newline
			}
			if !tooLong && n > r.max {
				tooLong = true
				r.buf = r.buf[:0]
			}
			if !tooLong {
				r.buf = append(r.buf, chunk...)
			}
			if err == nil {
				break
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			if err == io.EOF && (len(r.buf) > 0 || tooLong) {
				break
			}
			return nil, err
		}
		r.line++
		if tooLong {
			return nil, &LineError{Line: r.line, Err: fmt.Errorf("the line is longer than %d bytes", r.max)}
		}
		if line := bytes.TrimSpace(r.buf); len(line) > 0 {
			return line, nil
		}
	}
}

// InputMessage is a message read from stdin: the envelope decoded, the
// payloads kept raw where they are echoed or forwarded.
type InputMessage struct {
	Type   string          `json:"type"`
	Record *InputRecord    `json:"record"`
	State  json.RawMessage `json:"state"`
	Trace  *Trace          `json:"trace"`
}

// InputRecord is a record read from stdin; Data is kept as sent.
type InputRecord struct {
	Stream    string          `json:"stream"`
	Namespace *string         `json:"namespace"`
	Data      json.RawMessage `json:"data"`
	EmittedAt int64           `json:"emitted_at"`
	Meta      *RecordMeta     `json:"meta"`
	// PartitionID names the STATE covering the record (speed mode).
	PartitionID string `json:"partition_id"`
}

// Descriptor returns the record's stream descriptor.
func (r *InputRecord) Descriptor() StreamDescriptor {
	d := StreamDescriptor{Name: r.Stream, Namespace: r.Namespace}
	if d.Namespace != nil && *d.Namespace == "" {
		d.Namespace = nil
	}
	return d
}

// LineError is a line that is not a valid message.
type LineError struct {
	Line int
	Err  error
}

func (e *LineError) Error() string {
	return fmt.Sprintf("input line %d is not a valid Airbyte message: %v", e.Line, e.Err)
}

func (e *LineError) Unwrap() error { return e.Err }

// ReadMessage returns the next message, io.EOF at the end, or a
// *LineError naming a malformed line. A record's Data is a slice of the
// line and stays valid until the next call.
func (r *Reader) ReadMessage() (*InputMessage, error) {
	line, err := r.Next()
	if err != nil {
		return nil, err
	}
	m, ok := scanMessage(line)
	if !ok {
		// Not the common shape, or not valid: encoding/json decides, and
		// says what is wrong.
		m = &InputMessage{}
		if err := json.Unmarshal(line, m); err != nil {
			return nil, &LineError{Line: r.line, Err: err}
		}
	}
	if m.Type == "" {
		return nil, &LineError{Line: r.line, Err: errors.New(`the "type" field is missing`)}
	}
	if m.Type == TypeRecord && (m.Record == nil || m.Record.Stream == "") {
		return nil, &LineError{Line: r.line, Err: errors.New(`a RECORD needs "record" with a "stream"`)}
	}
	if m.Type == TypeRecord && (len(m.Record.Data) == 0 || m.Record.Data[0] != '{') {
		return nil, &LineError{Line: r.line, Err: errors.New(`a RECORD's "data" must be a JSON object`)}
	}
	if m.Type == TypeState && (len(m.State) == 0 || m.State[0] != '{') {
		return nil, &LineError{Line: r.line, Err: errors.New(`a STATE needs a "state" object`)}
	}
	return m, nil
}

// scanMessage reads a message in one pass over the line (a source sends
// millions of records; encoding/json would validate, decode and copy each
// in three). It handles the exact field names with their usual types and
// returns false for anything else, valid or not, for encoding/json to
// decide: it matches field names case-insensitively and reports errors.
func scanMessage(line []byte) (*InputMessage, bool) {
	m := &InputMessage{}
	s := jsonscan.Scanner{B: line}
	ok := scanObject(&s, func(name string) bool {
		switch name {
		case "type":
			v, ok := scanString(&s)
			m.Type = v
			return ok
		case "record":
			if m.Record != nil || s.I >= len(s.B) || s.B[s.I] != '{' {
				return false // null, or a repeated field encoding/json would merge
			}
			m.Record = &InputRecord{}
			return scanRecord(&s, m.Record)
		case "state", "trace":
			start := s.I
			if !s.Skip() {
				return false
			}
			raw := bytes.Clone(line[start:s.I])
			if name == "state" {
				m.State = raw
				return true
			}
			return json.Unmarshal(raw, &m.Trace) == nil
		}
		return !isFieldName(name, "type", "record", "state", "trace") && s.Skip()
	})
	return m, ok && s.Done()
}

// scanRecord reads a RECORD's fields; data stays a slice of the line.
func scanRecord(s *jsonscan.Scanner, r *InputRecord) bool {
	return scanObject(s, func(name string) bool {
		switch name {
		case "stream":
			v, ok := scanString(s)
			r.Stream = v
			return ok
		case "namespace":
			if lit, ok := s.Literal(); ok {
				r.Namespace = nil // a repeated field: the last one counts
				return lit == "null"
			}
			v, ok := scanString(s)
			r.Namespace = &v
			return ok
		case "data":
			start := s.I
			ok := s.Skip()
			r.Data = s.B[start:s.I]
			return ok
		case "emitted_at":
			start := s.I
			if integral, ok := s.Number(); !ok || !integral {
				return false
			}
			v, err := strconv.ParseInt(string(s.B[start:s.I]), 10, 64)
			r.EmittedAt = v
			return err == nil
		case "meta":
			start := s.I
			return s.Skip() && json.Unmarshal(s.B[start:s.I], &r.Meta) == nil
		case "partition_id":
			v, ok := scanString(s)
			r.PartitionID = v
			return ok
		}
		return !isFieldName(name, "stream", "namespace", "data", "emitted_at", "meta", "partition_id") && s.Skip()
	})
}

// scanObject reads an object, calling field for each member with the
// scanner at its value.
func scanObject(s *jsonscan.Scanner, field func(name string) bool) bool {
	s.WS()
	if !s.Eat('{') {
		return false
	}
	s.WS()
	if s.Eat('}') {
		return true
	}
	for {
		s.WS()
		name, ok := s.Str()
		if !ok {
			return false
		}
		s.WS()
		if !s.Eat(':') {
			return false
		}
		s.WS()
		if !field(string(name)) {
			return false
		}
		s.WS()
		if s.Eat('}') {
			return true
		}
		if !s.Eat(',') {
			return false
		}
	}
}

func scanString(s *jsonscan.Scanner) (string, bool) {
	v, ok := s.Str()
	return string(v), ok
}

// isFieldName reports whether name is one of fields in another case, which
// encoding/json would match.
func isFieldName(name string, fields ...string) bool {
	for _, f := range fields {
		if strings.EqualFold(name, f) {
			return true
		}
	}
	return false
}

// Writer writes messages to stdout, one per line, from any goroutine. It
// buffers; Flush (or a message that must be seen at once) empties the
// buffer.
type Writer struct {
	mu  sync.Mutex
	w   *bufio.Writer
	err error
}

// NewWriter writes to w (usually stdout).
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: bufio.NewWriterSize(w, 256<<10)}
}

// Write writes one message. STATE, TRACE, CONTROL and status messages are
// flushed at once so the platform sees progress promptly.
func (w *Writer) Write(m *Message) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return w.WriteLine(b, m.Type != TypeRecord && m.Type != TypeLog)
}

// WriteLine writes an already encoded message and, if flush, flushes.
func (w *Writer) WriteLine(line []byte, flush bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	if _, err := w.w.Write(line); err != nil {
		w.err = err
		return err
	}
	if err := w.w.WriteByte('\n'); err != nil {
		w.err = err
		return err
	}
	if flush {
		w.err = w.w.Flush()
	}
	return w.err
}

// WriteLines writes already encoded, newline-terminated messages.
func (w *Writer) WriteLines(lines []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		_, w.err = w.w.Write(lines)
	}
	return w.err
}

// Flush writes out buffered messages.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = w.w.Flush()
	}
	return w.err
}

// RecordEncoder builds RECORD lines for one stream without reflection: the
// head (type, stream, namespace) is encoded once.
type RecordEncoder struct {
	head []byte
}

// NewRecordEncoder returns an encoder for records of d.
func NewRecordEncoder(d StreamDescriptor) *RecordEncoder {
	name, _ := json.Marshal(d.Name)
	head := append([]byte(`{"type":"RECORD","record":{"stream":`), name...)
	if d.Namespace != nil {
		ns, _ := json.Marshal(*d.Namespace)
		head = append(append(head, `,"namespace":`...), ns...)
	}
	return &RecordEncoder{head: append(head, `,"emitted_at":`...)}
}

// Append appends a RECORD line (without newline) whose data is the JSON
// object data, and meta (if not nil) its changes. A partition (speed mode)
// ties the record to the STATE naming it.
func (e *RecordEncoder) Append(dst []byte, emittedAt int64, data []byte, meta *RecordMeta, partition string) []byte {
	dst = append(dst, e.head...)
	dst = strconv.AppendInt(dst, emittedAt, 10)
	dst = append(dst, `,"data":`...)
	dst = append(dst, data...)
	if meta != nil {
		m, _ := json.Marshal(meta)
		dst = append(append(dst, `,"meta":`...), m...)
	}
	if partition != "" {
		p, _ := json.Marshal(partition)
		dst = append(append(dst, `,"partition_id":`...), p...)
	}
	return append(dst, "}}"...)
}

// EchoState returns the STATE message line for the raw state object with
// destinationStats.recordCount set to count; every other field, known or
// not, is kept as received.
func EchoState(state json.RawMessage, count int64) ([]byte, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(state, &fields); err != nil {
		return nil, err
	}
	stats, _ := json.Marshal(StateStats{RecordCount: Count(count)})
	fields["destinationStats"] = stats
	b, err := json.Marshal(fields)
	if err != nil {
		return nil, err
	}
	return append(append([]byte(`{"type":"STATE","state":`), b...), '}'), nil
}
