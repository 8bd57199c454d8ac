package protocol

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
)

// Reader reads newline-delimited messages of any length.
type Reader struct {
	r    *bufio.Reader
	line int
	buf  []byte
}

// NewReader reads messages from r (usually stdin).
func NewReader(r io.Reader) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 1<<20)}
}

// Line is the number of the line Next returned last (1-based).
func (r *Reader) Line() int { return r.line }

// Next returns the next non-blank line without its newline, or io.EOF. The
// slice is valid until the next call.
func (r *Reader) Next() ([]byte, error) {
	for {
		r.buf = r.buf[:0]
		for {
			chunk, err := r.r.ReadSlice('\n')
			r.buf = append(r.buf, chunk...)
			if err == nil {
				break
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			if err == io.EOF && len(r.buf) > 0 {
				break
			}
			return nil, err
		}
		r.line++
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
// *LineError naming a malformed line.
func (r *Reader) ReadMessage() (*InputMessage, error) {
	line, err := r.Next()
	if err != nil {
		return nil, err
	}
	var m InputMessage
	if err := json.Unmarshal(line, &m); err != nil {
		return nil, &LineError{Line: r.line, Err: err}
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
	return &m, nil
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
// object data, and meta (if not nil) its changes.
func (e *RecordEncoder) Append(dst []byte, emittedAt int64, data []byte, meta *RecordMeta) []byte {
	dst = append(dst, e.head...)
	dst = strconv.AppendInt(dst, emittedAt, 10)
	dst = append(dst, `,"data":`...)
	dst = append(dst, data...)
	if meta != nil {
		m, _ := json.Marshal(meta)
		dst = append(append(dst, `,"meta":`...), m...)
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
