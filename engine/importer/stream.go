package importer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/santhosh-tekuri/jsonschema/v5"
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
	kinds    *kindChecks       // what each field's values may be, for protobuf bodies; nil: anything
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
	if kind == kindNumber && c.intOnly && bytes.ContainsAny(value, ".eEIN") { // I, N: Infinity, NaN (protobuf bodies)
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
		s.schema, s.fast, s.declared, s.kinds = cs.schema, cs.fast, cs.declared, cs.kinds
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

// cdcPrefix marks Airbyte's CDC metadata fields, which are not stored: a
// non-null _ab_cdc_deleted_at makes the record a delete.
const cdcPrefix = "_ab_cdc_"

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
