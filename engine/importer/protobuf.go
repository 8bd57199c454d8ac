package importer

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/shapelog/shapelog/engine/recordpb"
	"github.com/shapelog/shapelog/internal/jsonscan"
)

// A protobuf import body (Content-Type: application/x-protobuf) carries
// the same request as the JSON body in recordpb's frames: a sequence of
// length-delimited frames, first an ImportHeader (each table's API name,
// its JSON declaration as the JSON body's `tables` holds it, and the field
// of each position of its records' data), then one ImportRecord per
// message to the end of the body. An ImportRecord is an Airbyte Record
// (whose fields other than data are ignored) with the index of its table
// in the header: a destination forwards the record bytes of a data channel
// as they are and appends the table.
//
// Each value is decoded once, into the form the JSON path's prepare gives
// (namedField), and from there a record goes the JSON path's way: columns,
// dedup, the live copy or the spool, the load. Values are checked against
// the declared jsonSchema per field and by kind (see kindChecks), not by
// the reference validator: the typed encoding leaves only the kinds, the
// date and time formats, required fields and closed schemas to check.
//
// Frames are read one at a time, straight into the batch they are checked
// in (at most checkBatch records, batchBytes bytes; a longer frame is a
// batch of its own), so memory does not grow with the body.

// maxFrame bounds a frame's length (the body's own limit comes first: a
// frame is read as its bytes arrive, never allocated from its length).
const maxFrame = 1<<31 - 1

// parseProtobufRequestInto is parseRequestInto for a protobuf body.
func parseProtobufRequestInto(body io.Reader, sink recordSink) (*request, error) {
	fr := &frameReader{r: bufio.NewReaderSize(body, bodyBuffer)}
	req := &request{streams: map[string]*stream{}, sink: sink}
	fail := func(err error) (*request, error) {
		req.close()
		return nil, err
	}
	n, err := fr.length()
	if err == io.EOF {
		return fail(badRequest("BadProtobufBody", "The protobuf body is empty: it must start with an ImportHeader frame"))
	} else if err != nil {
		return fail(err)
	}
	head, err := fr.readLong(n)
	if err != nil {
		return fail(err)
	}
	pr := &protoRequest{req: req}
	if err := pr.declare(head); err != nil {
		return fail(err)
	}
	var batch []protoMessage
	var arena []byte
	flush := func() error {
		err := pr.addBatch(batch)
		batch, arena = batch[:0], arena[:0] // the batch is done with it: records were spooled or copied
		return err
	}
	for {
		fr.frame++
		n, err := fr.length()
		if err == io.EOF {
			break
		} else if err != nil {
			return fail(err)
		}
		if len(batch) > 0 && (len(batch) == checkBatch || len(arena)+n > batchBytes) {
			if err := flush(); err != nil {
				return fail(err)
			}
		}
		var frame []byte
		if n > batchBytes {
			// A long record is a batch of its own, in a buffer of its own.
			if frame, err = fr.readLong(n); err != nil {
				return fail(err)
			}
		} else {
			if arena == nil {
				arena = make([]byte, 0, batchBytes)
			}
			start := len(arena)
			arena = arena[:start+n]
			if err := fr.read(arena[start:]); err != nil {
				return fail(err)
			}
			frame = arena[start : start+n : start+n]
		}
		batch = append(batch, protoMessage{idx: req.n, frame: frame})
		req.n++
		if n > batchBytes {
			if err := flush(); err != nil {
				return fail(err)
			}
		}
	}
	if err := flush(); err != nil {
		return fail(err)
	}
	req.prep = preparer{} // the load does not need its buffers
	return req, nil
}

// frameReader reads a body's length-delimited frames (recordpb.ReadFrame's
// format), reading each frame's bytes into the caller's buffer.
type frameReader struct {
	r     *bufio.Reader
	frame int // the index of the frame being read: 0 is the header
}

// length reads a frame's length: io.EOF at the body's clean end.
func (f *frameReader) length() (int, error) {
	var x uint64
	for i := 0; ; i++ {
		b, err := f.r.ReadByte()
		if err != nil {
			if i == 0 && err == io.EOF {
				return 0, io.EOF
			}
			return 0, f.failure(err)
		}
		if i == 9 && b > 1 {
			return 0, badRequest("BadProtobufBody", "frame %d: malformed length (a varint over 64 bits)", f.frame)
		}
		x |= uint64(b&0x7f) << (7 * i)
		if b < 0x80 {
			break
		}
	}
	if x > maxFrame {
		return 0, badRequest("BadProtobufBody", "frame %d: its length, %d bytes, is over the %d bytes a frame may have", f.frame, x, maxFrame)
	}
	return int(x), nil
}

// read reads a frame's bytes into dst, whose length is the frame's.
func (f *frameReader) read(dst []byte) error {
	if _, err := io.ReadFull(f.r, dst); err != nil {
		return f.failure(err)
	}
	return nil
}

// readLong reads a frame of n bytes into a new buffer, grown as its bytes
// arrive: a length the body does not have costs no memory.
func (f *frameReader) readLong(n int) ([]byte, error) {
	buf := make([]byte, 0, min(n, 1<<20))
	for len(buf) < n {
		if len(buf) == cap(buf) {
			nb := make([]byte, len(buf), min(n, 2*cap(buf)))
			copy(nb, buf)
			buf = nb
		}
		end := cap(buf)
		if err := f.read(buf[len(buf):end]); err != nil {
			return nil, err
		}
		buf = buf[:end]
	}
	return buf, nil
}

// failure explains a read that failed: a body that ends within a frame
// (or whose client stopped sending) is the client's error; anything else,
// such as the body's size limit, is returned as it is.
func (f *frameReader) failure(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return badRequest("BadProtobufBody", "The request body ended within frame %d: it was cut short (the client stopped sending?); nothing was written", f.frame)
	}
	return err
}

// protoRequest is a request read from a protobuf body: the header's
// tables, by index.
type protoRequest struct {
	req    *request
	tables []*protoTable
}

// protoTable is a table of the header: its stream and the fields of its
// records' positions, with what each may hold.
type protoTable struct {
	s         *stream
	fields    []protoField
	deletedAt int    // the position of _ab_cdc_deleted_at, or -1
	keys      []int  // the position of each key path's first field, or -1
	required  string // a required field the records lack, if any
}

type protoField struct {
	name  string
	cdc   bool // _ab_cdc_*: read, not stored
	check *kindCheck
}

// protoMessage is one record of a protobuf body, not yet checked.
type protoMessage struct {
	idx   int
	frame []byte
}

// declare reads the header frame: the request's streams, and the fields
// of each table's records.
func (p *protoRequest) declare(frame []byte) error {
	var h recordpb.ImportHeader
	if err := proto.Unmarshal(frame, &h); err != nil {
		return badRequest("BadProtobufBody", "frame 0 (the ImportHeader): %v", err)
	}
	for i, t := range h.Tables {
		if _, dup := p.req.streams[t.Name]; dup {
			return badRequest("BadProtobufBody", "frame 0 (the ImportHeader): table %q is declared twice (the second time as table %d)", t.Name, i)
		}
		var d streamDecl
		if len(t.Declaration) > 0 {
			if at, bad := jsonscan.InvalidUTF8(t.Declaration); bad {
				return badRequest("BadProtobufBody", "frame 0 (the ImportHeader): the declaration of table %s: the string at %q is not valid UTF-8", t.Name, at)
			}
			if err := json.Unmarshal(t.Declaration, &d); err != nil {
				return badRequest("BadProtobufBody", "frame 0 (the ImportHeader): the declaration of table %s is not a JSON object {\"primaryKey\", \"jsonSchema\"}: %v", t.Name, err)
			}
		}
		s, err := newStream(t.Name, d)
		if err != nil {
			return err
		}
		p.req.streams[t.Name] = s
		pt := &protoTable{s: s, deletedAt: -1, fields: make([]protoField, len(t.Fields))}
		at := make(map[string]int, len(t.Fields))
		for j, name := range t.Fields {
			if _, dup := at[name]; dup {
				return badRequest("BadProtobufBody", "frame 0 (the ImportHeader): table %s lists field %q twice", t.Name, name)
			}
			at[name] = j
			f := protoField{name: name, cdc: strings.HasPrefix(name, cdcPrefix), check: s.kinds.of(name)}
			if name == cdcPrefix+"deleted_at" {
				pt.deletedAt = j
			}
			pt.fields[j] = f
		}
		for _, k := range s.key {
			pos, ok := at[k[0]]
			if !ok {
				pos = -1
			}
			pt.keys = append(pt.keys, pos)
		}
		if s.kinds != nil {
			for _, r := range s.kinds.required {
				if _, ok := at[r]; !ok {
					pt.required = r
					break
				}
			}
		}
		p.tables = append(p.tables, pt)
	}
	return nil
}

// addBatch checks records in parallel and hands them on in order, as the
// JSON path's addBatch does.
func (p *protoRequest) addBatch(batch []protoMessage) error {
	if len(batch) == 0 {
		return nil
	}
	out := p.req.prep.all(len(batch), func(i int, w *worker) prepared { return p.prepare(batch[i], w) })
	return p.req.addPrepared(out, func(i int) int { return batch[i].idx })
}

// prepare decodes and checks one record; it only reads the request, so
// records are prepared concurrently.
func (p *protoRequest) prepare(m protoMessage, w *worker) prepared {
	entries := w.entries[:0]
	table := uint64(0)
	bad := func(err error) prepared {
		return prepared{err: badRequest("BadProtobufBody", "frame %d (message %d): malformed ImportRecord: %v", m.idx+1, m.idx, err)}
	}
	for b := m.frame; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return bad(protowire.ParseError(n))
		}
		b = b[n:]
		switch num {
		case recordpb.RecordData:
			if typ != protowire.BytesType {
				return bad(errors.New("a data entry (field 5) is not length-delimited"))
			}
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return bad(protowire.ParseError(n))
			}
			entries = append(entries, v)
			b = b[n:]
		case recordpb.ImportRecordTable:
			if typ != protowire.VarintType {
				return bad(errors.New("the table (field 16) is not a varint"))
			}
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return bad(protowire.ParseError(n))
			}
			table = v
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return bad(protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	w.entries = entries
	if table >= uint64(len(p.tables)) {
		return prepared{err: badRequest("MissingStream", "Missing stream for message %d: its table is number %d, and the ImportHeader declares %d tables", m.idx, table, len(p.tables))}
	}
	t := p.tables[table]
	api := t.s.t.api
	if len(entries) != len(t.fields) {
		return prepared{err: badRequest("InvalidRecord", "message %d (table %s) has %d values; the ImportHeader lists %d fields for the table", m.idx, api, len(entries), len(t.fields))}
	}
	if t.required != "" {
		return prepared{err: badRequest("InvalidRecord", "message %d (table %s) does not match its jsonSchema: the required field %q is not among the table's fields in the ImportHeader", m.idx, api, t.required)}
	}
	out := prepared{s: t.s, fields: w.fields(len(entries))}
	for i, e := range entries {
		f := &t.fields[i]
		v, err := w.decodeValue(e)
		if err != nil {
			var malformed *malformedValue
			if errors.As(err, &malformed) {
				return prepared{err: badRequest("BadProtobufBody", "frame %d (message %d, table %s), field %q: malformed Value: %v", m.idx+1, m.idx, api, f.name, malformed.err)}
			}
			return prepared{err: badRequest("InvalidRecord", "message %d (table %s), field %q: %v", m.idx, api, f.name, err)}
		}
		if why := f.check.refuses(v); why != "" {
			return prepared{err: badRequest("InvalidRecord", "message %d (table %s), field %q: %s", m.idx, api, f.name, why)}
		}
		if f.cdc {
			if i == t.deletedAt && v.kind != kindNull {
				out.deleted = true
			}
			continue
		}
		out.fields = append(out.fields, namedField{name: f.name, kind: v.kind, value: v.text})
	}
	for i, k := range t.s.key {
		if pos := t.keys[i]; pos < 0 || !hasKeyValue(out.fields, t.fields[pos].name, k) {
			return prepared{err: badRequest("MissingPrimaryKeyValue", "message %d (table %s): missing value for primary key field: %s", m.idx, api, k)}
		}
	}
	return out
}

// hasKeyValue says whether a record's fields hold a non-null value at key
// path k, whose first field is name.
func hasKeyValue(fields []namedField, name string, k keyPath) bool {
	for _, f := range fields {
		if f.name != name {
			continue
		}
		if f.kind == kindNull {
			return false
		}
		if len(k) == 1 {
			return true
		}
		if f.kind != kindJSON {
			return false
		}
		var v any
		if json.Unmarshal(f.value, &v) != nil {
			return false
		}
		return keyValue(map[string]any{name: v}, k) != nil
	}
	return false
}
