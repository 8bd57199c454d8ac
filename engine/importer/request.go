package importer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sort"
	"strings"
	"sync"
	"unsafe"

	"github.com/shapelog/shapelog/internal/jsonscan"
)

// request is a parsed import_airbyte_records body.
type request struct {
	streams map[string]*stream
	n       int
	sink    recordSink // where checked records go
	prep    preparer
}

func (r *request) close() {
	for _, s := range r.streams {
		s.spool.close()
	}
}

// parseRequest reads and validates a whole request body, streaming: records
// go to per-table spools, so memory does not grow with the body. Any
// invalid record fails the whole request before anything is written.
func parseRequest(body io.Reader) (*request, error) { return parseRequestInto(body, spoolSink{}) }

// parseRequestInto is parseRequest handing each checked record to sink:
// the spools, or the live copy (see live).
func parseRequestInto(body io.Reader, sink recordSink) (*request, error) {
	br := newBodyReader(body)
	req := &request{streams: map[string]*stream{}, sink: sink}
	fail := func(err error) (*request, error) {
		req.close()
		return nil, err
	}
	if err := br.expect('{'); err != nil {
		return fail(err)
	}
	var early *spool // messages that came before "tables"
	defer func() {
		if early != nil {
			early.close()
		}
	}()
	sawTables, sawMessages := false, false
	if c, err := br.ws(); err != nil {
		return fail(err)
	} else if c == '}' {
		br.pos++
	} else {
		for more := true; more; {
			key, err := br.key()
			if err != nil {
				return fail(err)
			}
			if (key == "tables" && sawTables) || (key == "messages" && sawMessages) {
				// A second one would replace the first's streams or records.
				return fail(badRequest("BadJsonBody", "Failed to parse the JSON body: `%s` appears twice", key))
			}
			switch key {
			case "tables":
				raw, err := br.value()
				if err != nil {
					return fail(err)
				}
				if at, bad := jsonscan.InvalidUTF8(raw); bad {
					return fail(badRequest("BadJsonBody", "Failed to parse `tables`: the string at %q is not valid UTF-8", at))
				}
				var decls map[string]streamDecl
				if err := json.Unmarshal(raw, &decls); err != nil {
					return fail(badRequest("BadJsonBody", "Failed to parse `tables`: %v", err))
				}
				for api, d := range decls {
					s, err := newStream(api, d)
					if err != nil {
						return fail(err)
					}
					req.streams[api] = s
				}
				sawTables = true
				if early != nil {
					if err := req.replay(early); err != nil {
						return fail(err)
					}
				}
			case "messages":
				sawMessages = true
				if early, err = req.readMessages(br, sawTables); err != nil {
					return fail(err)
				}
			default:
				// Not ours, but still JSON: malformed JSON anywhere is a 400.
				raw, err := br.value()
				if err != nil {
					return fail(err)
				}
				if !json.Valid(raw) {
					return fail(badRequest("BadJsonBody", "Failed to parse the JSON body: the value of `%s` is not valid JSON", key))
				}
			}
			if more, err = br.next('}'); err != nil {
				return fail(err)
			}
		}
	}
	if c, err := br.ws(); err == nil {
		return fail(br.syntax(fmt.Sprintf("unexpected %q after the body", c)))
	} else if br.err != nil && !errors.Is(br.err, io.EOF) {
		return fail(br.err)
	}
	if !sawTables || !sawMessages {
		return fail(badRequest("BadJsonBody", "The body must have both `tables` and `messages`"))
	}
	req.prep = preparer{} // the load does not need its buffers
	return req, nil
}

// readMessages reads the messages array, checking records in parallel
// batches; before the tables are known it only spools them (returned).
func (r *request) readMessages(br *bodyReader, haveTables bool) (*spool, error) {
	if err := br.expect('['); err != nil {
		return nil, err
	}
	var early *spool
	if !haveTables {
		early = &spool{}
	}
	if c, err := br.ws(); err != nil {
		return early, err
	} else if c == ']' {
		br.pos++
		return early, nil
	}
	var batch []message
	var arena []byte
	for more := true; more; {
		raw, err := br.value()
		if err != nil {
			return early, err
		}
		if early != nil {
			if err := early.add(false, []field{{kind: kindJSON, value: raw}}); err != nil {
				return early, err
			}
		} else {
			table, data, err := splitMessage(raw, r.n)
			if err != nil {
				return nil, err
			}
			// The batch's records share one copy (the body's buffer is
			// reused), of at most batchBytes: a batch is checked, then
			// spooled or copied, before the next is read.
			if len(batch) > 0 && len(arena)+len(data) > batchBytes {
				if err := r.addBatch(batch); err != nil {
					return nil, err
				}
				batch, arena = batch[:0], arena[:0]
			}
			if len(data) > batchBytes {
				// A long record is a batch of its own, in the body's
				// buffer, which the body reader leaves to it.
				br.detach()
				if err := r.addBatch([]message{{idx: r.n, table: table, data: data}}); err != nil {
					return nil, err
				}
			} else {
				if arena == nil {
					arena = make([]byte, 0, batchBytes)
				}
				start := len(arena)
				arena = append(arena, data...)
				batch = append(batch, message{idx: r.n, table: table, data: arena[start:len(arena):len(arena)]})
			}
			if len(batch) == checkBatch {
				if err := r.addBatch(batch); err != nil {
					return nil, err
				}
				batch = batch[:0]
				arena = arena[:0] // the batch is done with it: records were spooled or copied
			}
		}
		r.n++
		if more, err = br.next(']'); err != nil {
			return early, err
		}
	}
	return early, r.addBatch(batch)
}

// checkBatch is how many messages are checked in parallel at a time, and
// batchBytes how many bytes of them at most (one longer message is a batch
// of its own).
const (
	checkBatch = 512
	batchBytes = 1 << 20
)

// replay adds messages spooled before the table declarations arrived.
func (r *request) replay(early *spool) error {
	rd, err := early.reader()
	if err != nil {
		return err
	}
	var rec record
	for i := 0; i < early.n; i++ {
		if err := readRecord(rd, &rec); err != nil {
			return err
		}
		table, data, err := splitMessage(rec.fields[0].value, i)
		if err != nil {
			return err
		}
		if err := r.addBatch([]message{{idx: i, table: table, data: data}}); err != nil {
			return err
		}
	}
	return nil
}

// message is one decoded-but-unchecked message of a request.
type message struct {
	idx   int
	table string
	data  json.RawMessage
}

// prepared is a checked message, ready to spool.
type prepared struct {
	s       *stream
	deleted bool
	fields  []namedField
	err     error
}

type namedField struct {
	name  string
	kind  byte
	value []byte
}

// addBatch checks messages in parallel (decoding and schema validation are
// most of an import's CPU) and spools them in order. The first invalid
// message, by index, fails the request.
func (r *request) addBatch(batch []message) error {
	out := r.prep.all(len(batch), func(i int, w *worker) prepared { return r.prepare(batch[i], w) })
	return r.addPrepared(out, func(i int) int { return batch[i].idx })
}

// preparer prepares a request's batches. It keeps its workers, with their
// buffers, and its results from one batch to the next: a batch's prepared
// records are done with once addPrepared has returned (spooled or copied).
type preparer struct {
	workers []worker
	out     []prepared
}

// all runs prep for items 0 to n-1, in parallel when there are enough of
// them; each goroutine has its own worker. The results are valid until the
// next call.
func (p *preparer) all(n int, prep func(i int, w *worker) prepared) []prepared {
	if cap(p.out) < n {
		p.out = make([]prepared, n)
	}
	out := p.out[:n]
	workers := max(1, min(runtime.GOMAXPROCS(0), (n+63)/64))
	for len(p.workers) < workers {
		p.workers = append(p.workers, worker{})
	}
	for i := range workers {
		p.workers[i].reset()
	}
	if workers == 1 {
		for i := range out {
			out[i] = prep(i, &p.workers[0])
		}
		return out
	}
	var wg sync.WaitGroup
	chunk := (n + workers - 1) / workers
	for w := range workers {
		lo, hi, wk := w*chunk, min((w+1)*chunk, n), &p.workers[w]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := lo; i < hi; i++ {
				out[i] = prep(i, wk)
			}
		}()
	}
	wg.Wait()
	return out
}

// addPrepared gives prepared records their columns and hands them to the
// sink, in order; idx is each one's message index. The first error wins.
func (r *request) addPrepared(out []prepared, idx func(i int) int) error {
	var fields []field
	for i := range out {
		p := &out[i]
		if p.err != nil {
			return p.err
		}
		fields = fields[:0]
		for pos, f := range p.fields {
			col, why := p.s.columnAt(pos, f.name, f.kind, f.value)
			if why != "" {
				return badRequest("InvalidFieldName", "message %d (table %s): %s", idx(i), p.s.t.api, why)
			}
			fields = append(fields, field{col: col, kind: f.kind, value: f.value})
		}
		if p.s.key != nil {
			p.s.keys.note(p.s, p.deleted, fields)
		}
		if err := r.sink.add(r, p.s, p.deleted, fields, idx(i)); err != nil {
			return err
		}
	}
	return nil
}

// recordSink takes a request's checked records in order: fields are the
// record's values with their columns (valid only during the call), msg its
// message index. The parser hands records over, the sink loads them.
type recordSink interface {
	add(r *request, s *stream, deleted bool, fields []field, msg int) error
}

// spoolSink keeps every record in its stream's spool, to be loaded once the
// whole body has been read.
type spoolSink struct{}

func (spoolSink) add(_ *request, s *stream, deleted bool, fields []field, msg int) error {
	return s.keep(deleted, fields, msg)
}

// keep spools one record of s.
func (s *stream) keep(deleted bool, fields []field, msg int) error {
	if err := s.spool.add(deleted, fields); err != nil {
		return err
	}
	s.msgIdx = append(s.msgIdx, int32(msg))
	return nil
}

// worker is what one goroutine preparing messages keeps between them.
type worker struct {
	hint []*fastProp  // see scanRecordHinted
	slab []namedField // records' fields are cut from it
	most int          // the most fields a record had
	// For protobuf bodies: a record's data entries, and the text of the
	// values that are rendered (numbers, dates), kept until the batch is
	// spooled or copied.
	entries [][]byte
	text    []byte
}

// reset readies the worker for a batch: the previous batch's records are
// done with, so its buffers are reused from their start.
func (w *worker) reset() {
	w.slab, w.text, w.hint = w.slab[:0], w.text[:0], w.hint[:0]
}

// fields returns an empty slice for a record's fields, with room for n.
// A full slab is replaced by one twice its size (the records cut from it
// keep it), so that a worker soon has one slab for a whole batch.
func (w *worker) fields(n int) []namedField {
	if cap(w.slab)-len(w.slab) < n {
		w.slab = make([]namedField, 0, max(1024, n, 2*cap(w.slab)))
	}
	f := w.slab[len(w.slab) : len(w.slab) : len(w.slab)+n]
	w.slab = w.slab[:len(w.slab)+n]
	return f
}

// prepare decodes, validates and encodes one message; it only reads the
// request, so messages are prepared concurrently.
func (r *request) prepare(m message, w *worker) prepared {
	s := r.streams[m.table]
	if s == nil {
		return prepared{err: badRequest("MissingStream", "Missing stream for table %s (message %d): declare it in `tables`", m.table, m.idx)}
	}
	if p, ok := r.prepareFast(s, m, w); ok {
		return p
	}
	if at, bad := jsonscan.InvalidUTF8(m.data); bad {
		return prepared{err: badRequest("InvalidRecord", "message %d (table %s), field %q: the string is not valid UTF-8", m.idx, m.table, at)}
	}
	sc := jsonscan.Scanner{B: m.data}
	v, ok := sc.Value()
	if !ok || !sc.Done() {
		why := "malformed"
		if err := json.Unmarshal(m.data, new(any)); err != nil { // encoding/json says what is wrong
			why = err.Error()
		}
		return prepared{err: badRequest("InvalidRecord", "message %d (table %s): data is not valid JSON: %s", m.idx, m.table, why)}
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return prepared{err: badRequest("InvalidRecord", "message %d (table %s): data must be a JSON object", m.idx, m.table)}
	}
	if s.schema != nil {
		if err := s.schema.Validate(v); err != nil {
			return prepared{err: badRequest("InvalidRecord", "message %d (table %s) does not match its jsonSchema: %s", m.idx, m.table, describe(err))}
		}
	}
	p := prepared{s: s, fields: make([]namedField, 0, len(obj))}
	if d, ok := obj[cdcPrefix+"deleted_at"]; ok && d != nil {
		p.deleted = true
	}
	for _, k := range s.key {
		if keyValue(obj, k) == nil {
			return prepared{err: badRequest("MissingPrimaryKeyValue", "message %d (table %s): missing value for primary key field: %s", m.idx, m.table, k)}
		}
	}
	// In the record's own order (the map has none), as the fast path
	// takes them: fields new to the table become columns in that order.
	for _, name := range objectKeys(m.data) {
		val := obj[name]
		if strings.HasPrefix(name, cdcPrefix) {
			continue
		}
		kind, text, err := encodeValue(val)
		if err != nil {
			return prepared{err: err}
		}
		p.fields = append(p.fields, namedField{name: name, kind: kind, value: text})
	}
	return p
}

// prepareFast is prepare for records the one-pass checker accepts; ok is
// false when the record must go the reference way (invalid, a nested key).
func (r *request) prepareFast(s *stream, m message, w *worker) (prepared, bool) {
	if s.fast == nil {
		return prepared{}, false
	}
	for _, k := range s.key {
		if len(k) > 1 {
			return prepared{}, false
		}
	}
	// Room for as many fields as the largest record so far had, up to 64
	// (one very wide record must not make every later one reserve its width).
	fields, err := scanRecordHinted(m.data, s.fast, w.fields(min(max(16, w.most), 64)), &w.hint)
	if err != nil {
		return prepared{}, false
	}
	w.most = max(w.most, len(fields))
	p := prepared{s: s, fields: fields[:0]}
	for _, f := range fields {
		if strings.HasPrefix(f.name, cdcPrefix) {
			if f.name == cdcPrefix+"deleted_at" && f.kind != kindNull {
				p.deleted = true
			}
			continue
		}
		p.fields = append(p.fields, f)
	}
	for _, k := range s.key {
		present := false
		for _, f := range p.fields {
			if f.name == k[0] && f.kind != kindNull {
				present = true
				break
			}
		}
		if !present {
			return prepared{}, false
		}
	}
	return p, true
}

// objectKeys lists the members of the JSON object data in their order,
// each once (data has been checked to be an object).
func objectKeys(data []byte) []string {
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil { // {
		return nil
	}
	var keys []string
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		key, _ := tok.(string)
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			break
		}
		if !seen[key] {
			seen[key] = true
			keys = append(keys, key)
		}
	}
	return keys
}

func encodeValue(v any) (byte, []byte, error) {
	switch v := v.(type) {
	case nil:
		return kindNull, nil, nil
	case string: // read only: no need to copy it
		return kindString, unsafe.Slice(unsafe.StringData(v), len(v)), nil
	case json.Number:
		return kindNumber, []byte(v), nil
	case bool:
		if v {
			return kindBool, []byte{'t'}, nil
		}
		return kindBool, []byte{'f'}, nil
	default:
		b, err := json.Marshal(v)
		return kindJSON, b, err
	}
}

// sortedStreams are a request's streams in lock order.
func (r *request) sortedStreams() []*stream {
	streams := make([]*stream, 0, len(r.streams))
	for _, s := range r.streams {
		streams = append(streams, s)
	}
	sort.Slice(streams, func(i, j int) bool { return streams[i].t.ident() < streams[j].t.ident() })
	return streams
}
