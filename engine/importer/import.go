package importer

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/santhosh-tekuri/jsonschema/v5"
	"github.com/shapelog/shapelog/engine/catalog"
)

// column is a target column: its name and type, and the field it holds.
type column struct {
	name     string // the column (see columnFor)
	field    string // the records' field
	typ      string // the type wanted; after evolve, the column's own
	typed    bool   // typ comes from a declaration or a value, not a guess
	declared bool   // typ comes from the jsonSchema
	intOnly  bool   // every number seen (undeclared fields) was written as an integer
}

// stream is one table of a request: its declaration and its records.
type stream struct {
	t        tableName
	key      []keyPath // nil: append
	schema   *jsonschema.Schema
	fast     *fastSchema       // the schema, when the one-pass checker handles it
	declared map[string]string // column types from the JSON Schema, by field
	cols     []column
	colIndex map[string]int // by field
	byColumn map[string]int // by column name
	msgIdx   []int32        // the request's message index of each spooled record
	spool    spool
	empty    *bool // whether the table was empty before the request wrote to it
	hint     []int // the column of each position of the previous record's fields
	keys     keySet
}

// isEmpty says whether the table was empty before this request wrote to it
// (asked once: the live path asks before it copies).
func (s *stream) isEmpty(ctx context.Context, tx pgx.Tx) (bool, error) {
	if s.empty == nil {
		var e bool
		if err := tx.QueryRow(ctx, "SELECT NOT EXISTS (SELECT 1 FROM "+s.t.ident()+")").Scan(&e); err != nil {
			return false, err
		}
		s.empty = &e
	}
	return *s.empty, nil
}

// column returns the index of the column for field name, adding it (typed
// from the schema, else from the value's kind) on first sight, and widening
// the type of an undeclared field whose values change kind. A field that
// cannot have a column gives the reason instead.
func (s *stream) column(name string, kind byte, value []byte) (int, string) {
	if i, ok := s.colIndex[name]; ok {
		if c := &s.cols[i]; !c.declared && kind != kindNull {
			c.observe(kind, value)
		}
		return i, ""
	}
	if why := fieldProblem(name); why != "" {
		return 0, fmt.Sprintf("field %q: %s", name, why)
	}
	col := columnFor(name)
	if j, ok := s.byColumn[col]; ok {
		return 0, fmt.Sprintf("fields %q and %q would both be stored in column %q (a field named like a PostgreSQL system column gets an underscore appended)", s.cols[j].field, name, col)
	}
	c := column{name: col, field: name, typ: typeText, intOnly: true}
	if typ, ok := s.declared[name]; ok {
		c.typ, c.typed, c.declared = typ, true, true
	} else if kind != kindNull {
		c.observe(kind, value)
	}
	s.colIndex[name] = len(s.cols)
	s.byColumn[col] = len(s.cols)
	s.cols = append(s.cols, c)
	return len(s.cols) - 1, ""
}

// columnAt is column for the field at position pos of a record: a
// declared field at the position it had in the previous record (records
// mostly list their fields in one order) skips the lookup.
func (s *stream) columnAt(pos int, name string, kind byte, value []byte) (int, string) {
	if pos < len(s.hint) {
		if i := s.hint[pos]; s.cols[i].declared && s.cols[i].field == name {
			return i, ""
		}
	}
	i, why := s.column(name, kind, value)
	if why == "" {
		for len(s.hint) <= pos {
			s.hint = append(s.hint, 0)
		}
		s.hint[pos] = i
	}
	return i, why
}

// observe types an undeclared field from one more of its values.
func (c *column) observe(kind byte, value []byte) {
	if kind == kindNumber && c.intOnly && bytes.ContainsAny(value, ".eE") {
		c.intOnly = false
	}
	t := valueType(kind)
	if !c.typed {
		c.typ, c.typed = t, true
	} else if t != c.typ {
		c.typ, _ = widen(c.typ, t)
	}
}

// wantIn is the type the column's values need, given that the table's
// column has type have: an undeclared field's numbers fit any numeric
// column (integers only when all were written as integers).
func (c *column) wantIn(have string) string {
	if c.declared || c.typ != typeNumeric {
		return c.typ
	}
	switch f, _ := classify(have); {
	case f == famFloat || f == famNumeric, f == famInt && c.intOnly:
		return have
	}
	return c.typ
}

type streamDecl struct {
	PrimaryKey *[][]string      `json:"primaryKey"`
	JSONSchema *json.RawMessage `json:"jsonSchema"`
}

func newStream(api string, d streamDecl) (*stream, error) {
	t, err := parseTableName(api)
	if err != nil {
		return nil, err
	}
	s := &stream{t: t, declared: map[string]string{}, colIndex: map[string]int{}, byColumn: map[string]int{}, fast: &fastSchema{additional: true}}
	if d.PrimaryKey != nil {
		if s.key, err = validKey(t, *d.PrimaryKey); err != nil {
			return nil, err
		}
	}
	if d.JSONSchema != nil && string(*d.JSONSchema) != "null" {
		cs, err := compileSchema(api, *d.JSONSchema)
		if err != nil {
			return nil, err
		}
		s.schema, s.fast, s.declared = cs.schema, cs.fast, cs.declared
		for _, name := range cs.names {
			if _, why := s.column(name, kindNull, nil); why != "" {
				return nil, badRequest("InvalidFieldName", "Table %s, property of its jsonSchema: %s", api, why)
			}
		}
	}
	// Key fields need their columns even before a record has them: nested
	// keys reach into a jsonb column.
	for _, k := range s.key {
		i, why := s.column(k[0], kindNull, nil)
		if why != "" {
			return nil, badRequest("InvalidPrimaryKey", "Invalid primary key for table %s: %s", api, why)
		}
		if len(k) == 1 {
			continue
		}
		if c := &s.cols[i]; !c.typed {
			c.typ = typeJSONB
		} else if f, _ := classify(c.typ); f != famJSON {
			return nil, badRequest("InvalidPrimaryKey", "Invalid primary key for table %s: %s reaches into field %q, which its jsonSchema declares as %s; a nested key needs an object (a jsonb column)", api, k, k[0], c.typ)
		}
	}
	return s, nil
}

// compiledSchema is a stream's jsonSchema, compiled: the reference
// validator, the fast path's subset (or nil), the declared column types by
// field and the properties that get columns, sorted. It is only read.
type compiledSchema struct {
	schema   *jsonschema.Schema
	fast     *fastSchema
	declared map[string]string
	names    []string
}

// schemaCache keeps compiled schemas by their text: a sync sends the same
// schema with every batch, and compiling it costs more than a small batch.
var schemaCache = struct {
	sync.Mutex
	m map[string]*compiledSchema
}{m: map[string]*compiledSchema{}}

const schemaCacheSize = 256

func compileSchema(api string, raw []byte) (*compiledSchema, error) {
	schemaCache.Lock()
	cs := schemaCache.m[string(raw)]
	schemaCache.Unlock()
	if cs != nil {
		return cs, nil
	}
	c := jsonschema.NewCompiler()
	c.Draft = jsonschema.Draft7
	c.LoadURL = loadSchemaURL
	for name, check := range airbyteFormats {
		c.Formats[name] = check
	}
	if err := c.AddResource("stream.json", bytes.NewReader(raw)); err != nil {
		return nil, badRequest("InvalidJsonSchema", "The jsonSchema of table %s is not valid JSON Schema: %v", api, err)
	}
	schema, err := c.Compile("stream.json")
	if err != nil {
		return nil, badRequest("InvalidJsonSchema", "The jsonSchema of table %s does not compile: %v", api, err)
	}
	cs = &compiledSchema{schema: schema, declared: map[string]string{}}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err == nil {
		cs.fast = compileFast(doc)
		props, _ := doc["properties"].(map[string]any)
		for name := range props {
			if !strings.HasPrefix(name, cdcPrefix) {
				cs.names = append(cs.names, name)
			}
		}
		sort.Strings(cs.names)
		for _, name := range cs.names {
			if !nullOnly(props[name]) {
				cs.declared[name] = declaredType(props[name])
			}
		}
	}
	schemaCache.Lock()
	if len(schemaCache.m) >= schemaCacheSize {
		clear(schemaCache.m)
	}
	schemaCache.m[string(raw)] = cs
	schemaCache.Unlock()
	return cs, nil
}

// airbyteFormats check date and time formats the way Airbyte uses them:
// timestamps and times with or without an offset (airbyte_type says which),
// BC dates, years past 9999; anything PostgreSQL's input functions take.
// They are hand-written scanners: they run for every date in every record.
var airbyteFormats = map[string]func(any) bool{}

// formatChecks are the same checks on strings, for the fast path.
var formatChecks = map[string]func(string) bool{
	"date":      func(s string) bool { rest, ok := scanDate(s); return ok && (rest == "" || rest == " BC") },
	"time":      func(s string) bool { rest, ok := scanTime(s); return ok && scanOffset(rest) == "" },
	"date-time": isDateTime,
}

func init() {
	for name, check := range formatChecks {
		airbyteFormats[name] = stringFormat(check)
	}
}

func stringFormat(check func(string) bool) func(any) bool {
	return func(v any) bool {
		s, ok := v.(string)
		return !ok || check(s)
	}
}

func digits(s string, n int) (string, bool) {
	if len(s) < n {
		return s, false
	}
	for i := 0; i < n; i++ {
		if s[i] < '0' || s[i] > '9' {
			return s, false
		}
	}
	return s[n:], true
}

// scanDate accepts YYYY[Y…]-MM-DD and returns what follows.
func scanDate(s string) (string, bool) {
	rest, ok := digits(s, 4)
	for ok && rest != "" && rest[0] >= '0' && rest[0] <= '9' {
		rest = rest[1:]
	}
	if !ok || rest == "" || rest[0] != '-' {
		return s, false
	}
	if rest, ok = digits(rest[1:], 2); !ok || rest == "" || rest[0] != '-' {
		return s, false
	}
	return digits(rest[1:], 2)
}

// scanTime accepts HH:MM[:SS[.fff]] and returns what follows.
func scanTime(s string) (string, bool) {
	rest, ok := digits(s, 2)
	if !ok || rest == "" || rest[0] != ':' {
		return s, false
	}
	if rest, ok = digits(rest[1:], 2); !ok {
		return s, false
	}
	if rest != "" && rest[0] == ':' {
		if rest, ok = digits(rest[1:], 2); !ok {
			return s, false
		}
		if rest != "" && rest[0] == '.' {
			if rest, ok = digits(rest[1:], 1); !ok {
				return s, false
			}
			for rest != "" && rest[0] >= '0' && rest[0] <= '9' {
				rest = rest[1:]
			}
		}
	}
	return rest, true
}

// scanOffset skips an optional Z or ±HH[[:]MM] and returns what follows
// (unchanged when what is there is not an offset).
func scanOffset(s string) string {
	if s == "" {
		return s
	}
	if s[0] == 'Z' || s[0] == 'z' {
		return s[1:]
	}
	if s[0] != '+' && s[0] != '-' {
		return s
	}
	rest, ok := digits(s[1:], 2)
	if !ok {
		return s
	}
	if rest != "" && rest[0] == ':' {
		rest = rest[1:]
	}
	if r, ok := digits(rest, 2); ok {
		rest = r
	}
	return rest
}

func isDateTime(s string) bool {
	rest, ok := scanDate(s)
	if !ok || rest == "" || (rest[0] != 'T' && rest[0] != 't' && rest[0] != ' ') {
		return false
	}
	if rest, ok = scanTime(rest[1:]); !ok {
		return false
	}
	rest = scanOffset(rest)
	return rest == "" || rest == " BC"
}

//go:embed wellknown.json
var wellKnownTypes []byte

// loadSchemaURL resolves $refs: Airbyte's WellKnownTypes.json is built in;
// nothing is ever fetched from the network or the disk.
func loadSchemaURL(u string) (io.ReadCloser, error) {
	if strings.HasSuffix(strings.SplitN(u, "#", 2)[0], "WellKnownTypes.json") {
		return io.NopCloser(bytes.NewReader(wellKnownTypes)), nil
	}
	return nil, fmt.Errorf("$ref to %s is not allowed: schemas must be self-contained (only WellKnownTypes.json is known)", u)
}

// cdcPrefix marks Airbyte's CDC metadata fields, which are not stored: a
// non-null _ab_cdc_deleted_at makes the record a delete.
const cdcPrefix = "_ab_cdc_"

// request is a parsed import_airbyte_records body.
type request struct {
	streams map[string]*stream
	n       int
	live    *live // nil: parse only, load afterwards
}

func (r *request) close() {
	for _, s := range r.streams {
		s.spool.close()
	}
}

// parseRequest reads and validates a whole request body, streaming: records
// go to per-table spools, so memory does not grow with the body. Any
// invalid record fails the whole request before anything is written.
func parseRequest(body io.Reader) (*request, error) { return parseRequestLive(body, nil) }

// parseRequestLive is parseRequest copying records into PostgreSQL as they
// are checked, through l, where it can (see live).
func parseRequestLive(body io.Reader, l *live) (*request, error) {
	br := newBodyReader(body)
	req := &request{streams: map[string]*stream{}, live: l}
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
				if _, err := br.value(); err != nil {
					return fail(err)
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
			table, data, err := splitMessage(raw)
			if err != nil {
				return nil, badRequest("BadJsonBody", "message %d: %v", r.n, err)
			}
			// The batch's records share one copy (the body's buffer is reused).
			if len(arena)+len(data) > cap(arena) {
				arena = make([]byte, 0, max(256<<10, len(data)))
			}
			start := len(arena)
			arena = append(arena, data...)
			batch = append(batch, message{idx: r.n, table: table, data: arena[start:len(arena):len(arena)]})
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

// checkBatch is how many messages are checked in parallel at a time.
const checkBatch = 512

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
		table, data, err := splitMessage(rec.fields[0].value)
		if err != nil {
			return badRequest("BadJsonBody", "message %d: %v", i, err)
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
	out := make([]prepared, len(batch))
	workers := min(runtime.GOMAXPROCS(0), (len(batch)+63)/64)
	if workers <= 1 {
		var w worker
		for i := range batch {
			out[i] = r.prepare(batch[i], &w)
		}
	} else {
		var wg sync.WaitGroup
		chunk := (len(batch) + workers - 1) / workers
		for w := 0; w < workers; w++ {
			lo, hi := w*chunk, min((w+1)*chunk, len(batch))
			wg.Add(1)
			go func() {
				defer wg.Done()
				var w worker
				for i := lo; i < hi; i++ {
					out[i] = r.prepare(batch[i], &w)
				}
			}()
		}
		wg.Wait()
	}
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
				return badRequest("InvalidFieldName", "message %d (table %s): %s", batch[i].idx, p.s.t.api, why)
			}
			fields = append(fields, field{col: col, kind: f.kind, value: f.value})
		}
		if p.s.key != nil {
			p.s.keys.note(p.s, p.deleted, fields)
		}
		if r.live != nil && r.live.add(r, p.s, p.deleted, fields, batch[i].idx) {
			continue
		}
		if err := p.s.spool.add(p.deleted, fields); err != nil {
			return err
		}
		p.s.msgIdx = append(p.s.msgIdx, int32(batch[i].idx))
	}
	return nil
}

// worker is what one goroutine preparing messages keeps between them.
type worker struct {
	hint []*fastProp  // see scanRecordHinted
	slab []namedField // records' fields are cut from it
	most int          // the most fields a record had
}

// fields returns an empty slice for a record's fields, with room for as
// many as the largest record so far had, up to 64 (one very wide record
// must not make every later one reserve its width).
func (w *worker) fields() []namedField {
	per := min(max(16, w.most), 64)
	if cap(w.slab)-len(w.slab) < per {
		w.slab = make([]namedField, 0, 64*per)
	}
	f := w.slab[len(w.slab) : len(w.slab) : len(w.slab)+per]
	w.slab = w.slab[:len(w.slab)+per]
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
	dec := json.NewDecoder(bytes.NewReader(m.data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return prepared{err: badRequest("InvalidRecord", "message %d (table %s): data is not valid JSON: %v", m.idx, m.table, err)}
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
	for name, val := range obj {
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
	fields, err := scanRecordHinted(m.data, s.fast, w.fields(), &w.hint)
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

// keyValue is the value at a key path, or nil.
func keyValue(obj map[string]any, p keyPath) any {
	var cur any = obj
	for _, part := range p {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[part]
	}
	return cur
}

// describe picks the most specific cause of a validation failure, with the
// path of the failing value.
func describe(err error) string {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return err.Error()
	}
	for len(ve.Causes) > 0 {
		ve = ve.Causes[0]
	}
	loc := ve.InstanceLocation
	if loc == "" {
		loc = "/"
	}
	return fmt.Sprintf("at %s: %s", loc, ve.Message)
}

func encodeValue(v any) (byte, []byte, error) {
	switch v := v.(type) {
	case nil:
		return kindNull, nil, nil
	case string:
		return kindString, []byte(v), nil
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

// copyText renders one value for COPY's text format into a column of type
// typ.
func copyText(dst []byte, f field, typ string) ([]byte, error) {
	switch f.kind { // the common cases first
	case kindNull:
		return append(dst, `\N`...), nil
	case kindNumber:
		if !fracOrExp(f.value) || !isIntColumn(typ) {
			return append(dst, f.value...), nil // a number needs no escaping
		}
	case kindString:
		if typ != typeJSONB && typ != "json" && typ != typeBytea {
			return appendCopyEscaped(dst, f.value), nil
		}
	}
	var v []byte
	switch {
	case f.kind == kindNull:
		return append(dst, `\N`...), nil
	case (typ == typeJSONB || typ == "json") && f.kind == kindString:
		v, _ = json.Marshal(string(f.value))
	case typ == typeBytea && f.kind == kindString:
		raw, err := base64.StdEncoding.DecodeString(string(f.value))
		if err != nil {
			if raw, err = base64.RawStdEncoding.DecodeString(string(f.value)); err != nil {
				return nil, fmt.Errorf("not base64: %v", err)
			}
		}
		v = append([]byte(`\x`), hex.EncodeToString(raw)...)
	case f.kind == kindJSON && strings.HasSuffix(typ, "[]"):
		var err error
		if v, err = catalog.AppendArrayLiteral(nil, f.value); err != nil {
			return nil, err
		}
	case f.kind == kindNumber && fracOrExp(f.value) && isIntColumn(typ):
		v = integralText(f.value)
	case f.kind == kindBool && typ != typeBoolean:
		v = []byte(strconv.FormatBool(f.value[0] == 't'))
	default:
		v = f.value
	}
	return appendCopyEscaped(dst, v), nil
}

// copyEscapes are the bytes COPY's text format escapes.
var copyEscapes = [256]byte{'\\': '\\', '\n': 'n', '\r': 'r', '\t': 't'}

// appendCopyEscaped appends v escaped for COPY's text format, copying the
// runs between escapes whole.
func appendCopyEscaped(dst, v []byte) []byte {
	start := 0
	for i, c := range v {
		if e := copyEscapes[c]; e != 0 {
			dst = append(dst, v[start:i]...)
			dst = append(dst, '\\', e)
			start = i + 1
		}
	}
	return append(dst, v[start:]...)
}

// fracOrExp says whether a number is written with a fraction or exponent.
func fracOrExp(num []byte) bool {
	for _, c := range num {
		if c == '.' || c == 'e' || c == 'E' {
			return true
		}
	}
	return false
}

func isIntColumn(typ string) bool {
	f, _ := classify(typ)
	return f == famInt
}

// integralText writes a whole number given as 1.0 or 2e3 (JSON Schema's
// "integer" accepts them) the way integer columns read numbers; any other
// number is left as it is, for PostgreSQL to refuse. The precision covers
// every digit written, so no fraction rounds away.
func integralText(num []byte) []byte {
	x, _, err := big.ParseFloat(string(num), 10, uint(4*len(num)+64), big.ToNearestEven)
	if err != nil || !x.IsInt() || x.MantExp(nil) > 64 {
		return num
	}
	return x.Append(nil, 'f', 0)
}

// copySource streams a stream's spooled records as COPY text rows: every
// column, preceded by the sequence and deleted flag when staged.
func copySource(s *stream, w *io.PipeWriter, staged bool, seq0 int) (err error) {
	defer func() { w.CloseWithError(err) }()
	rd, err := s.spool.reader()
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	var rec record
	var line []byte
	vals := make([]*field, len(s.cols))
	for seq := 0; seq < s.spool.n; seq++ {
		if err := readRecord(rd, &rec); err != nil {
			return err
		}
		for i := range vals {
			vals[i] = nil
		}
		for i := range rec.fields {
			vals[rec.fields[i].col] = &rec.fields[i]
		}
		if line, err = copyLine(line[:0], s, staged, seq0+seq, rec.deleted, vals, s.msgIdx[seq]); err != nil {
			return err
		}
		if _, err := bw.Write(line); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// copyLine renders one record as a COPY text row: every column, preceded
// by the sequence and deleted flag when staged. vals are the record's
// values by column (nil: absent); msg is its message index, for errors.
func copyLine(line []byte, s *stream, staged bool, seq int, deleted bool, vals []*field, msg int32) ([]byte, error) {
	if staged {
		line = strconv.AppendInt(line, int64(seq), 10)
		if deleted {
			line = append(line, "\tt\t"...)
		} else {
			line = append(line, "\tf\t"...)
		}
	}
	var err error
	for i, f := range vals {
		if i > 0 {
			line = append(line, '\t')
		}
		if f == nil {
			line = append(line, `\N`...)
			continue
		}
		if line, err = copyText(line, *f, s.cols[i].typ); err != nil {
			return line, badRequest("InvalidValue", "message %d (table %s), field %s: %v (column type %s)", msg, s.t.api, s.cols[i].field, err, s.cols[i].typ)
		}
	}
	return append(line, '\n'), nil
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

// begin opens a request's transaction: it locks the request's tables and
// records the idempotency key; a repeated key makes the request a no-op
// (duplicate = true).
func (im *Importer) begin(ctx context.Context, streams []*stream, idemKey string) (tx pgx.Tx, duplicate bool, err error) {
	if idemKey != "" {
		if err := im.ensureMeta(ctx); err != nil {
			return nil, false, err
		}
	}
	tx, err = im.pool.Begin(ctx)
	if err != nil {
		return nil, false, err
	}
	fail := func(err error) (pgx.Tx, bool, error) {
		_ = tx.Rollback(context.Background())
		return nil, false, err
	}
	for _, s := range streams {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockKey(s.t)); err != nil {
			return fail(err)
		}
	}
	if idemKey != "" {
		tag, err := tx.Exec(ctx, `INSERT INTO `+metaSchema+`.import_keys (key) VALUES ($1) ON CONFLICT DO NOTHING`, idemKey)
		if err != nil {
			return fail(err)
		}
		if tag.RowsAffected() == 0 {
			return tx, true, nil
		}
	}
	return tx, false, nil
}

// loadStream evolves the table, copies the stream's records into a staging
// table and merges them in one statement.
// loadStream loads a stream's spooled records; insertFirst lets a dedup
// merge try a plain insert first (see merge).
func (im *Importer) loadStream(ctx context.Context, tx pgx.Tx, s *stream, insertFirst bool) error {
	if _, err := createSchemaTable(ctx, tx, s.t, s.cols); err != nil {
		return err
	}
	others, err := evolve(ctx, tx, s)
	if err != nil {
		return err
	}
	if s.key != nil {
		if err := im.ensureKeyIndex(ctx, tx, s); err != nil {
			return err
		}
	}
	if s.spool.n == 0 {
		return nil
	}
	cols := make([]string, len(s.cols))
	for i, c := range s.cols {
		cols[i] = pgx.Identifier{c.name}.Sanitize()
	}
	list := strings.Join(cols, ", ")
	if len(cols) == 0 { // records without a single field: rows of defaults
		_, err := tx.Exec(ctx, "INSERT INTO "+s.t.ident()+" SELECT FROM generate_series(1, $1)", s.spool.n)
		return explain(err)
	}
	if s.key == nil {
		// Append: straight into the table, inside the request's transaction.
		return copyRows(ctx, tx, s, s.t.name, "COPY "+s.t.ident()+" ("+list+") FROM STDIN", false, 0)
	}
	defs := []string{"_shapelog_seq bigint", "_shapelog_deleted boolean"}
	for i, c := range s.cols {
		defs = append(defs, cols[i]+" "+c.typ)
	}
	if _, err := tx.Exec(ctx, "CREATE TEMP TABLE _shapelog_stage ("+strings.Join(defs, ", ")+") ON COMMIT DROP"); err != nil {
		return err
	}
	if err := copyRows(ctx, tx, s, "_shapelog_stage", "COPY _shapelog_stage (_shapelog_seq, _shapelog_deleted, "+list+") FROM STDIN", true, 0); err != nil {
		return err
	}
	if err := im.merge(ctx, tx, s, cols, others, insertFirst); err != nil {
		return err
	}
	_, err = tx.Exec(ctx, "DROP TABLE _shapelog_stage")
	return err
}

// merge applies the staged records to the table. When the request has no
// deletes and no key twice (as far as the engine can tell: PostgreSQL may
// still find two spellings of one key equal), the staged rows are first
// simply inserted: a load of new keys (a first sync, an append-mostly
// stream) then costs about half of an upsert, which probes the key index
// for every row before inserting it. If a key is already in the table the
// insert is rolled back to a savepoint and one plain upsert runs, and that
// table's next merges go straight to the upsert for a while; if PostgreSQL
// finds a key twice, the full merge runs. Callers ask tryInsertFirst
// whether to try the insert (once per request and table).
func (im *Importer) merge(ctx context.Context, tx pgx.Tx, s *stream, cols, others []string, insertFirst bool) error {
	if !s.keys.plain() {
		_, err := tx.Exec(ctx, mergeSQL(s, cols, others))
		return explain(err)
	}
	attempts := []string{upsertSQL(s, cols, others)}
	if insertFirst {
		attempts = append([]string{insertSQL(s, cols)}, attempts...)
	}
	if _, err := tx.Exec(ctx, "SAVEPOINT _shapelog_merge"); err != nil {
		return err
	}
	for i, sql := range attempts {
		_, err := tx.Exec(ctx, sql)
		if err == nil {
			_, err = tx.Exec(ctx, "RELEASE SAVEPOINT _shapelog_merge")
			return err
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) {
			return explain(err)
		}
		switch {
		case pgErr.Code == "23505" && i+1 < len(attempts): // unique_violation: a key already there
			im.pauseInsertFirst(s.t.ident())
		case pgErr.Code != "21000": // cardinality_violation: a key twice
			return explain(err)
		}
		if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT _shapelog_merge"); err != nil {
			return err
		}
		if pgErr.Code == "21000" {
			break
		}
	}
	_, err := tx.Exec(ctx, mergeSQL(s, cols, others))
	return explain(err)
}

// insertFirstPause is how many requests into a table skip the direct copy
// and the plain-insert attempt after one could not keep its rows: a key was
// already there, or the request deleted or repeated keys.
const insertFirstPause = 16

// tryInsertFirst reports whether a merge into table should try a plain
// insert before the upsert.
func (im *Importer) tryInsertFirst(table string) bool {
	im.insertFirstMu.Lock()
	defer im.insertFirstMu.Unlock()
	if n := im.insertFirst[table]; n > 0 {
		if n == 1 {
			delete(im.insertFirst, table)
		} else {
			im.insertFirst[table] = n - 1
		}
		return false
	}
	return true
}

// pauseInsertFirst starts table's pause of the insert attempts.
func (im *Importer) pauseInsertFirst(table string) {
	im.insertFirstMu.Lock()
	defer im.insertFirstMu.Unlock()
	if len(im.insertFirst) > 10000 { // bounded: forgetting only costs a failed attempt
		clear(im.insertFirst)
	}
	im.insertFirst[table] = insertFirstPause
}

// copyRows streams the stream's records through one COPY into relation
// rel.
func copyRows(ctx context.Context, tx pgx.Tx, s *stream, rel, sql string, staged bool, seq0 int) error {
	pr, pw := io.Pipe()
	srcErr := make(chan error, 1)
	go func() { srcErr <- copySource(s, pw, staged, seq0) }()
	_, err := tx.Conn().PgConn().CopyFrom(ctx, pr, sql)
	pr.Close()
	if err != nil {
		// A bad value stops the source; the server then only reports the
		// aborted COPY, so the source's own error is the one to return.
		var ie *Error
		if e := <-srcErr; errors.As(e, &ie) {
			return ie
		}
		return copyFailure(s, rel, err, s.msgIdx)
	}
	return nil
}

// copyFailure explains a value PostgreSQL refused during COPY (one its
// column type cannot take, a constraint it breaks) by the message and field
// it came from: the error's context reads `COPY <rel>, line N[, column C]: …`,
// and line N is the COPY's Nth record, message idx[N-1].
func copyFailure(s *stream, rel string, err error, idx []int32) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || !(strings.HasPrefix(pgErr.Code, "22") || strings.HasPrefix(pgErr.Code, "23")) {
		return explain(err)
	}
	where, ok := strings.CutPrefix(pgErr.Where, "COPY "+rel+", line ")
	if !ok {
		return explain(err)
	}
	digits := len(where) - len(strings.TrimLeft(where, "0123456789"))
	line, convErr := strconv.Atoi(where[:digits])
	if convErr != nil || line < 1 || line > len(idx) {
		return explain(err)
	}
	where = where[digits:]
	col := pgErr.ColumnName
	if col == "" {
		for _, c := range s.cols { // the longest name that fits: names may hold ": "
			if strings.HasPrefix(where, ", column "+c.name+": ") && len(c.name) > len(col) {
				col = c.name
			}
		}
	}
	msg := pgErr.Message
	if pgErr.Detail != "" {
		msg += " (" + pgErr.Detail + ")"
	}
	if i, ok := s.byColumn[col]; ok {
		return badRequest("InvalidValue", "message %d (table %s), field %s: %s", idx[line-1], s.t.api, s.cols[i].field, msg)
	}
	return badRequest("InvalidValue", "message %d (table %s): %s", idx[line-1], s.t.api, msg)
}

// mergeSQL upserts the newest record per key and deletes the keys whose
// newest record is a CDC delete, in one statement. A record replaces the
// whole row, as the newest version of a document does: the table's columns
// the records do not carry (others) become NULL.
func mergeSQL(s *stream, cols, others []string) string {
	return mergeStatement(s, cols, others, false)
}

// insertSQL inserts the staged records as they are.
func insertSQL(s *stream, cols []string) string {
	list := strings.Join(cols, ", ")
	return "INSERT INTO " + s.t.ident() + " (" + list + ") SELECT " + list + " FROM _shapelog_stage"
}

// upsertSQL is mergeSQL for staged records without deletes or repeated
// keys: a plain upsert.
func upsertSQL(s *stream, cols, others []string) string {
	return mergeStatement(s, cols, others, true)
}

func mergeStatement(s *stream, cols, others []string, plain bool) string {
	keys := make([]string, len(s.key))
	match := make([]string, len(s.key))
	target := make([]string, len(s.key))
	keyCols := map[string]bool{}
	for i, p := range s.key {
		keys[i] = p.exprOn("")
		match[i] = p.exprOn("t") + " = " + p.exprOn("l")
		target[i] = keys[i]
		if len(p) > 1 {
			target[i] = "(" + keys[i] + ")"
		} else {
			keyCols[keys[i]] = true
		}
	}
	var sets []string
	for _, c := range cols {
		if !keyCols[c] {
			sets = append(sets, c+" = EXCLUDED."+c)
		}
	}
	for _, c := range others {
		sets = append(sets, pgx.Identifier{c}.Sanitize()+" = NULL")
	}
	conflict := "DO NOTHING"
	if len(sets) > 0 {
		conflict = "DO UPDATE SET " + strings.Join(sets, ", ")
	}
	list := strings.Join(cols, ", ")
	keyList := strings.Join(keys, ", ")
	if plain {
		return "INSERT INTO " + s.t.ident() + " (" + list + ") SELECT " + list + " FROM _shapelog_stage " +
			"ON CONFLICT (" + strings.Join(target, ", ") + ") " + conflict
	}
	return "WITH l AS (SELECT DISTINCT ON (" + keyList + ") * FROM _shapelog_stage ORDER BY " + keyList + ", _shapelog_seq DESC), " +
		"d AS (DELETE FROM " + s.t.ident() + " t USING l WHERE l._shapelog_deleted AND " + strings.Join(match, " AND ") + ") " +
		"INSERT INTO " + s.t.ident() + " (" + list + ") SELECT " + list + " FROM l WHERE NOT l._shapelog_deleted " +
		"ON CONFLICT (" + strings.Join(target, ", ") + ") " + conflict
}

// evolve makes the table hold every column of the stream: missing columns
// are added; on the importer's own tables (see ownTableComment) a column
// whose type cannot hold the stream's values is widened, and a provisional
// one takes the stream's type while the table is empty. Other tables keep
// their types. Afterwards each column's typ is the table's.
func evolve(ctx context.Context, tx pgx.Tx, s *stream) (others []string, err error) {
	type existing struct {
		typ         string
		provisional bool
	}
	have := map[string]existing{}
	rows, err := tx.Query(ctx, `SELECT attname, format_type(atttypid, atttypmod), coalesce(col_description(attrelid, attnum) = $2, false)
		FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped`, s.t.ident(), provisionalComment)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var name string
		var e existing
		if err := rows.Scan(&name, &e.typ, &e.provisional); err != nil {
			return nil, err
		}
		have[name] = e
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var own bool
	if err := tx.QueryRow(ctx, `SELECT coalesce(starts_with(obj_description($1::regclass, 'pg_class'), $2), false)`, s.t.ident(), ownTablePrefix).Scan(&own); err != nil {
		return nil, err
	}
	isEmpty := func() (bool, error) { return s.isEmpty(ctx, tx) }
	// Decide every column's type first, then check the key, then alter.
	target := make([]string, len(s.cols))
	var add, retype, unmark []int
	for i := range s.cols {
		c := &s.cols[i]
		ex, ok := have[c.name]
		if !ok {
			target[i] = c.typ
			add = append(add, i)
			continue
		}
		target[i] = ex.typ
		if !c.typed {
			continue
		}
		if ex.provisional {
			e, err := isEmpty()
			if err != nil {
				return nil, err
			}
			if e {
				unmark = append(unmark, i)
				if normalize(ex.typ) != normalize(c.typ) {
					target[i] = c.typ
					retype = append(retype, i)
				}
				continue
			}
		}
		if own {
			if to, change := widen(ex.typ, c.wantIn(ex.typ)); change {
				target[i] = to
				retype = append(retype, i)
			}
		}
	}
	for _, k := range s.key {
		if len(k) == 1 {
			continue
		}
		if f, _ := classify(target[s.colIndex[k[0]]]); f != famJSON {
			return nil, badRequest("InvalidPrimaryKey", "Invalid primary key for table %s: %s reaches into field %q, whose column %s is %s; a nested key needs a json or jsonb column",
				s.t.api, k, k[0], pgx.Identifier{columnFor(k[0])}.Sanitize(), target[s.colIndex[k[0]]])
		}
	}
	for _, i := range add {
		if err := addColumns(ctx, tx, s.t, s.cols[i:i+1]); err != nil {
			return nil, err
		}
	}
	for _, i := range retype {
		from, to := have[s.cols[i].name].typ, target[i]
		col := pgx.Identifier{s.cols[i].name}.Sanitize()
		var using string
		switch {
		case to == typeJSONB:
			using = "to_jsonb(" + col + ")"
		case to == typeText && normalize(from) == typeBytea:
			using = "translate(encode(" + col + ", 'base64'), E'\\n', '')" // the base64 it was imported from
		case have[s.cols[i].name].provisional:
			using = col + "::text::" + to // any type to any: the table is empty
		default:
			using = col + "::" + to
		}
		if _, err := tx.Exec(ctx, "ALTER TABLE "+s.t.ident()+" ALTER COLUMN "+col+" TYPE "+to+" USING "+using); err != nil {
			return nil, explain(err)
		}
	}
	for _, i := range unmark {
		if err := commentColumn(ctx, tx, s.t, s.cols[i].name, ""); err != nil {
			return nil, err
		}
	}
	for i := range s.cols {
		s.cols[i].typ = target[i]
	}
	for name := range have {
		if _, ok := s.byColumn[name]; !ok {
			others = append(others, name)
		}
	}
	sort.Strings(others)
	return others, nil
}

// addColumns adds the columns a table lacks, marking those of guessed
// types provisional.
func addColumns(ctx context.Context, tx pgx.Tx, t tableName, cols []column) error {
	for _, c := range cols {
		if _, err := tx.Exec(ctx, "ALTER TABLE "+t.ident()+" ADD COLUMN "+pgx.Identifier{c.name}.Sanitize()+" "+c.typ); err != nil {
			return explain(err)
		}
		if !c.typed {
			if err := commentColumn(ctx, tx, t, c.name, provisionalComment); err != nil {
				return err
			}
		}
	}
	return nil
}

// ensureKeyIndex checks a dedup stream's unique index; a new (empty) table
// gets it built on the spot, any other must have it from
// add_primary_key_indexes.
func (im *Importer) ensureKeyIndex(ctx context.Context, tx pgx.Tx, s *stream) error {
	st, err := readIndexState(ctx, tx, s.t)
	if err != nil {
		return err
	}
	def := indexDef(s.key)
	if st.found && st.def == def {
		if !st.valid {
			return badRequest("IndexBackfillingError", "Index %s.%s is still being built; wait until primary_key_indexes_ready says so", s.t.api, indexName(s.t))
		}
		return nil
	}
	empty, err := s.isEmpty(ctx, tx)
	if err != nil {
		return err
	}
	if !empty {
		return badRequest("MissingIndex", "Table %s has no unique index on its primary key %s: call add_primary_key_indexes first", s.t.api, keyList(s.key))
	}
	if st.found {
		if _, err := tx.Exec(ctx, "DROP INDEX "+pgx.Identifier{s.t.schema, indexName(s.t)}.Sanitize()); err != nil {
			return explain(err)
		}
	}
	if _, err := tx.Exec(ctx, "CREATE UNIQUE INDEX "+pgx.Identifier{indexName(s.t)}.Sanitize()+" ON "+s.t.ident()+" ("+def+")"); err != nil {
		return explain(err)
	}
	return commentIndex(ctx, tx.Exec, s.t, def)
}

func keyList(key []keyPath) string {
	parts := make([]string, len(key))
	for i, p := range key {
		parts[i] = p.String()
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// Import parses, validates and loads one import_airbyte_records body, in
// one transaction: records are copied while the body is still being read
// (see live), and any invalid record rolls the whole request back.
func (im *Importer) Import(ctx context.Context, body io.Reader, idemKey string) (records int, duplicate bool, err error) {
	l := &live{im: im, ctx: ctx, idemKey: idemKey}
	defer l.abort()
	req, err := parseRequestLive(body, l)
	if err != nil {
		return 0, false, err
	}
	defer req.close()
	duplicate, err = l.finish(req)
	return req.n, duplicate, err
}
