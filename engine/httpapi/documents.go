package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/shapelog/shapelog/engine/catalog"
	"github.com/shapelog/shapelog/engine/shapelog"
	"github.com/shapelog/shapelog/engine/snapshot"
)

// System fields every exported document carries. A column named like one
// of them, followed by any number of underscores, is exported with one
// more underscore (`_id` -> `_id_`, `_id_` -> `_id__`), so every column
// keeps a name of its own and clients can undo the rule: drop one trailing
// underscore from a field that is a system name plus underscores.
const (
	fieldID        = "_id"
	fieldTs        = "_ts"
	fieldTable     = "_table"
	fieldDeleted   = "_deleted"
	fieldTruncated = "_truncated"
)

var systemFields = map[string]bool{fieldID: true, fieldTs: true, fieldTable: true, fieldDeleted: true, fieldTruncated: true, "_component": true}

// fieldName is a column's name in exported documents.
func fieldName(column string) string {
	if systemFields[strings.TrimRight(column, "_")] || systemFields[column] {
		return column + "_"
	}
	return column
}

// appendString appends s as a JSON string.
func appendString(dst []byte, s string) []byte {
	return catalog.AppendString(dst, []byte(s))
}

// renderer writes one table layout's documents in one format.
type renderer struct {
	table  *catalog.Table
	format catalog.Format
	head   []byte   // `{"_table":"<api name>","_ts":`
	fields [][]byte // `,"<field>":` per column
	isKey  []bool
	pb     *protoLayout // protobuf frames instead of JSON (documents_proto.go)
}

func newRenderer(t *catalog.Table, f catalog.Format) *renderer {
	r := &renderer{table: t, format: f, isKey: make([]bool, len(t.Columns))}
	r.head = append([]byte(`{"`+fieldTable+`":`), appendString(nil, catalog.APIName(t.Schema, t.Name))...)
	r.head = append(r.head, `,"`+fieldTs+`":`...)
	for _, c := range t.Columns {
		f := append([]byte{','}, appendString(nil, fieldName(c.Name))...)
		r.fields = append(r.fields, append(f, ':'))
	}
	for _, k := range t.KeyColumns() {
		r.isKey[k] = true
	}
	return r
}

// docKind says which shape of document to write.
type docKind int

const (
	docSnapshot  docKind = iota // list_snapshot: no _deleted
	docUpsert                   // document_deltas insert/update
	docTombstone                // document_deltas delete: key columns only
)

// appendDoc writes one document. values are the row's text values.
func (r *renderer) appendDoc(dst []byte, kind docKind, ts int64, key []byte, values [][]byte) ([]byte, error) {
	if r.pb != nil {
		return r.appendProtoDoc(dst, kind, ts, values)
	}
	dst = append(dst, r.head...)
	dst = strconv.AppendInt(dst, ts, 10)
	switch kind {
	case docUpsert:
		dst = append(dst, `,"`+fieldDeleted+`":false`...)
	case docTombstone:
		dst = append(dst, `,"`+fieldDeleted+`":true`...)
	}
	dst = append(dst, `,"`+fieldID+`":`...)
	dst = catalog.AppendString(dst, key)
	var err error
	for i, v := range values {
		if i >= len(r.fields) || (kind == docTombstone && !r.isKey[i]) {
			continue
		}
		dst = append(dst, r.fields[i]...)
		if v == nil {
			dst = append(dst, "null"...)
			continue
		}
		if dst, err = catalog.AppendValue(dst, r.table.Columns[i].Type, v, r.format); err != nil {
			return dst, err
		}
	}
	return append(dst, '}'), nil
}

// appendChange writes the documents of one logged change: an upsert, a
// tombstone, both for a key change (the old key's tombstone first), or a
// TRUNCATE's marker, and returns how many it wrote.
func (r *renderer) appendChange(dst []byte, e *shapelog.Entry) ([]byte, int, error) {
	var err error
	switch e.Op {
	case shapelog.OpInsert, shapelog.OpUpdate:
		docs := 1
		if len(e.OldKey) > 0 {
			// The key changed: the old document is gone.
			if dst, err = r.appendDoc(dst, docTombstone, e.Ts, e.OldKey, e.Old); err != nil {
				return dst, 0, err
			}
			if r.pb == nil {
				dst = append(dst, ',')
			}
			docs++
		}
		dst, err = r.appendDoc(dst, docUpsert, e.Ts, e.Key, e.Values)
		return dst, docs, err
	case shapelog.OpDelete:
		dst, err = r.appendDoc(dst, docTombstone, e.Ts, e.Key, e.Values)
		return dst, 1, err
	case shapelog.OpTruncate:
		return r.appendTruncate(dst, e.Ts), 1, nil
	}
	return dst, 0, fmt.Errorf("a change of unknown kind %v", e.Op)
}

// appendTruncate writes the marker for a TRUNCATE: a tombstone whose _id is
// the table itself and `_truncated: true`, meaning every row is deleted.
func (r *renderer) appendTruncate(dst []byte, ts int64) []byte {
	if r.pb != nil {
		return r.appendProtoTruncate(dst, ts)
	}
	dst = append(dst, r.head...)
	dst = strconv.AppendInt(dst, ts, 10)
	dst = append(dst, `,"`+fieldDeleted+`":true,"`+fieldTruncated+`":true,"`+fieldID+`":`...)
	dst = catalog.AppendString(dst, r.table.AppendKey(nil, nil))
	return append(dst, '}')
}

// relationRenderers builds renderers for logged relation versions, caching
// them for one request. A relation in a reserved schema (the engine's own,
// PostgreSQL's) gets none: its changes are never exported.
type relationRenderers struct {
	s      *Server
	format catalog.Format
	proto  bool // protobuf frames
	cache  map[uint64]*renderer
}

func (rr *relationRenderers) get(ctx context.Context, oid, version uint32) (*renderer, error) {
	k := uint64(oid)<<32 | uint64(version)
	if r, ok := rr.cache[k]; ok {
		return r, nil
	}
	rel, err := rr.s.store.Relation(oid, version)
	if err != nil {
		return nil, fmt.Errorf("reading version %d of relation %d from the log: %w", version, oid, err)
	}
	var r *renderer
	if catalog.ReservedSchema(rel.Schema) == "" {
		t, err := tableOf(ctx, rr.s, rel)
		if err != nil {
			return nil, fmt.Errorf("describing table %s: %w", catalog.APIName(rel.Schema, rel.Name), err)
		}
		r = newExportRenderer(t, rr.format, rr.proto)
	}
	if rr.cache == nil {
		rr.cache = map[uint64]*renderer{}
	}
	rr.cache[k] = r
	return r, nil
}

// identifiesRows reports whether the rows of a logged relation version are
// identified by their key (see snapshot.Keyed), so that a transaction's
// changes to one row collapse into one document.
func (rr *relationRenderers) identifiesRows(ctx context.Context) func(oid, version uint32) (bool, error) {
	return func(oid, version uint32) (bool, error) {
		r, err := rr.get(ctx, oid, version)
		return r != nil && snapshot.Keyed(r.table), err
	}
}

// tableOf turns a logged relation version into a catalog table. Whether its
// key is DEFERRABLE is not logged: the table's current definition says.
func tableOf(ctx context.Context, s *Server, rel *shapelog.Relation) (*catalog.Table, error) {
	t := &catalog.Table{OID: rel.OID, Schema: rel.Schema, Name: rel.Name, Key: rel.Key}
	for _, c := range rel.Columns {
		typ, err := s.types.Lookup(ctx, s.pool, c.TypeOID)
		if err != nil {
			return nil, err
		}
		t.Columns = append(t.Columns, catalog.Column{Name: c.Name, Type: typ})
	}
	for _, cur := range s.repl.Tables() {
		if cur.OID == rel.OID {
			t.DeferrableKey = cur.DeferrableKey
		}
	}
	return t, nil
}

// tableSchema is the JSON Schema of a table's exported documents. Besides
// Convex's keywords it carries ours, which validators ignore: $schemaName
// and $tableName (the PostgreSQL names, so clients need not parse the API
// name), $primaryKey (the primary key's fields, absent without one) and,
// on each column, $pgType (its type as format_type prints it).
//
// The delta schema (document_deltas) requires the key columns, which
// every document carries, except on the marker a TRUNCATE leaves
// (`_truncated: true`), which carries no row: draft-07's if/then/else
// says so.
func tableSchema(t *catalog.Table, f catalog.Format, delta bool) map[string]any {
	props := map[string]any{
		fieldID:    map[string]any{"type": "string", "$description": "document id: the row's key, " + `"schema"."table"/"key value"/…`},
		fieldTable: map[string]any{"type": "string"},
		fieldTs:    map[string]any{"type": "integer", "$description": "commit timestamp, nanoseconds since the Unix epoch"},
	}
	required := []string{fieldID, fieldTable, fieldTs}
	var keys []string
	isKey := map[int]bool{}
	for _, k := range t.KeyColumns() {
		isKey[k] = true
	}
	for i, c := range t.Columns {
		s := catalog.Schema(c.Type, f)
		if !c.NotNull {
			s = nullable(s)
		}
		if c.Type != nil {
			s["$pgType"] = c.Type.Name
		}
		name := fieldName(c.Name)
		props[name] = s
		switch {
		case !delta:
			required = append(required, name)
		case isKey[i]:
			// Tombstones carry only key columns, so with deltas only those are
			// always present.
			keys = append(keys, name)
		}
	}
	sort.Strings(required)
	out := map[string]any{
		"$schema":              "http://json-schema.org/draft-07/schema#",
		"type":                 "object",
		"properties":           props,
		"required":             required,
		"additionalProperties": false,
		"$schemaName":          t.Schema,
		"$tableName":           t.Name,
	}
	if delta {
		props[fieldDeleted] = map[string]any{"type": "boolean"}
		props[fieldTruncated] = map[string]any{"type": "boolean", "const": true, "$description": "only on the marker a TRUNCATE leaves (with `_deleted: true` and the table's name as `_id`): every row of the table is deleted"}
		if len(keys) > 0 {
			sort.Strings(keys)
			out["if"] = map[string]any{"required": []string{fieldTruncated}}
			out["then"] = map[string]any{"required": []string{fieldDeleted}, "properties": map[string]any{fieldDeleted: map[string]any{"const": true}}}
			out["else"] = map[string]any{"required": keys}
		}
	}
	if len(t.Key) > 0 {
		key := make([]string, len(t.Key))
		for i, k := range t.Key {
			key[i] = fieldName(t.Columns[k].Name)
		}
		out["$primaryKey"] = key
	}
	return out
}

// nullable allows null besides what s allows.
func nullable(s map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range s {
		out[k] = v
	}
	switch t := s["type"].(type) {
	case string:
		if t != "null" {
			out["type"] = []any{t, "null"}
		}
		if e, ok := s["enum"].([]any); ok {
			out["enum"] = append(append([]any{}, e...), nil)
		}
		if e, ok := s["enum"].([]string); ok {
			vals := make([]any, 0, len(e)+1)
			for _, v := range e {
				vals = append(vals, v)
			}
			out["enum"] = append(vals, nil)
		}
		return out
	}
	if len(s) == 0 {
		return s // {} already allows null
	}
	return map[string]any{"anyOf": []any{s, map[string]any{"type": "null"}}}
}

// pageBuffers recycles response buffers: a snapshot page is ~0.5 MB.
var pageBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 1<<20); return &b }}

// newPageWriter starts a response with a pooled buffer; finish or fail
// returns it.
func newPageWriter(w http.ResponseWriter) *pageWriter {
	return &pageWriter{w: w, buf: (*pageBuffers.Get().(*[]byte))[:0]}
}

// recycle returns the buffer to the pool.
func (p *pageWriter) recycle() {
	recycleBuffer(p.buf)
	p.buf = nil
}

// recycleBuffer returns a buffer to pageBuffers (huge ones are left to the GC).
func recycleBuffer(b []byte) {
	if cap(b) <= 8<<20 {
		b = b[:0]
		pageBuffers.Put(&b)
	}
}

// pageWriter buffers a response body and switches to streaming once it is
// large, so small pages get a proper error status if something fails while
// large ones keep memory bounded.
type pageWriter struct {
	w         http.ResponseWriter
	buf       []byte
	streaming bool
	proto     bool      // protobuf frames (documents_proto.go)
	layout    *renderer // in protobuf, the renderer whose Fields frame came last
}

const streamAfter = 4 << 20

func (p *pageWriter) maybeFlush() error {
	if len(p.buf) < streamAfter {
		return nil
	}
	if !p.streaming {
		p.w.Header().Set("Content-Type", p.contentType())
		p.w.WriteHeader(http.StatusOK)
		p.streaming = true
	}
	_, err := p.w.Write(p.buf)
	p.buf = p.buf[:0]
	return err
}

// finish writes what is buffered.
func (p *pageWriter) finish() {
	if !p.streaming {
		p.w.Header().Set("Content-Type", p.contentType())
		p.w.Header().Set("Content-Length", strconv.Itoa(len(p.buf)))
		p.w.WriteHeader(http.StatusOK)
	}
	_, _ = p.w.Write(p.buf)
	p.recycle()
}

// fail reports an error: as a response when nothing was sent yet, else by
// aborting the connection so the client never takes a cut-off body for a
// complete one.
func (p *pageWriter) fail(s *Server, err error) {
	if p.streaming {
		s.log.Error().Err(err).Msg("failed mid-response; aborting connection")
		panic(http.ErrAbortHandler)
	}
	p.recycle()
	s.writeFailure(p.w, err)
}
