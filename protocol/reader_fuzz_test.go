package protocol

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// expectedMessage is what ReadMessage must return for one line, decided by
// encoding/json alone: a message, or (nil) a *LineError.
func expectedMessage(line []byte) *InputMessage {
	m := &InputMessage{}
	if json.Unmarshal(line, m) != nil || m.Type == "" ||
		(m.Type == TypeRecord && (m.Record == nil || m.Record.Stream == "" || len(m.Record.Data) == 0 || m.Record.Data[0] != '{')) ||
		(m.Type == TypeState && (len(m.State) == 0 || m.State[0] != '{')) {
		return nil
	}
	return m
}

// FuzzReader feeds arbitrary input to a Reader with a tiny buffer (lines
// span many reads) and a small line limit, and checks every line against
// a model: lines are counted from 1, blank ones skipped, ones over the
// limit reported and skipped; every other line gives exactly the message
// encoding/json decodes from it (the one-pass reader must agree with it,
// to the byte of every field), or a *LineError when encoding/json or the
// checks reject it. Nothing may panic, and no other error may occur.
func FuzzReader(f *testing.F) {
	for _, s := range []string{
		`{"type":"RECORD","record":{"stream":"s","namespace":"public","data":{"a":1,"b":"x\u00e9"},"emitted_at":1700000000000}}`,
		`{"type":"STATE","state":{"type":"STREAM","stream":{"stream_descriptor":{"name":"s"}},"id":7}}` + "\n\n" + `not json` + "\r\n" + `{"type":"LOG"}`,
		`{"Type":"RECORD","Record":{"Stream":"s","Data":{}}}`,
		`{"type":"RECORD","record":{"stream":"\xff","data":{"\xfe":"\ud800"},"emitted_at":1e3}}`,
		`{"type":"TRACE","trace":{"type":"ERROR","emitted_at":1.5,"error":{"message":"m"}}}`,
	} {
		f.Add([]byte(s), uint16(0))
		f.Add([]byte(s), uint16(40))
	}
	f.Fuzz(func(t *testing.T, in []byte, limit uint16) {
		max := MaxLineLength
		if limit > 0 {
			max = int(limit)
		}
		r := &Reader{r: bufio.NewReaderSize(bytes.NewReader(in), 16), max: max}
		raw := bytes.Split(in, []byte("\n"))
		if len(raw[len(raw)-1]) == 0 {
			raw = raw[:len(raw)-1] // the input ends with a newline
		}
		for n, line := range raw {
			long := len(line) > max
			trimmed := bytes.TrimSpace(line)
			if len(trimmed) == 0 && !long {
				continue
			}
			m, err := r.ReadMessage()
			var le *LineError
			if err != nil && !errors.As(err, &le) {
				t.Fatalf("line %d: %T %v", n+1, err, err)
			}
			if r.Line() != n+1 || (le != nil && le.Line != n+1) {
				t.Fatalf("at line %d the reader says line %d (error %v)", n+1, r.Line(), err)
			}
			if long {
				if le == nil || !strings.Contains(le.Error(), "longer than") {
					t.Fatalf("line %d (%d bytes, limit %d): %v", n+1, len(line), max, err)
				}
				continue
			}
			want := expectedMessage(trimmed)
			switch {
			case want == nil && err == nil:
				t.Fatalf("line %q taken as %+v; encoding/json rejects it", trimmed, m)
			case want != nil && err != nil:
				t.Fatalf("line %q rejected (%v); encoding/json takes it", trimmed, err)
			case want != nil && !reflect.DeepEqual(normalize(m), normalize(want)):
				t.Fatalf("line %q:\nread          %+v\nencoding/json %+v", trimmed, m, want)
			}
		}
		if m, err := r.ReadMessage(); err != io.EOF {
			t.Fatalf("after the last line: %+v, %v", m, err)
		}
	})
}

// normalize makes messages comparable: raw JSON compacted as encoding/json
// would keep it, pointers followed.
func normalize(m *InputMessage) map[string]any {
	out := map[string]any{"type": m.Type, "state": string(m.State), "trace": m.Trace}
	if rec := m.Record; rec != nil {
		ns := "<nil>"
		if rec.Namespace != nil {
			ns = "=" + *rec.Namespace
		}
		out["record"] = []any{rec.Stream, ns, string(rec.Data), rec.EmittedAt, rec.Meta}
	}
	return out
}
