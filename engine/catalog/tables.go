package catalog

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Column is one column of a table.
type Column struct {
	Name     string
	Type     *Type
	NotNull  bool
	Position int // attnum
}

// Table describes a published table.
type Table struct {
	OID    uint32
	Schema string
	Name   string
	// Columns are in attnum order, dropped columns excluded.
	Columns []Column
	// Key holds the indexes into Columns of the primary key columns, in key
	// order; it is empty when the table has no primary key.
	Key []int
	// ReplicaIdentity is pg_class.relreplident: 'd' (default), 'n'
	// (nothing), 'f' (full) or 'i' (index).
	ReplicaIdentity byte
	// DeferrableKey says the primary key is DEFERRABLE: uniqueness is
	// checked at the end of a statement (or transaction), not row by row.
	DeferrableKey bool
}

// Filter selects tables. The zero Filter selects every table in schema
// public; otherwise the selection is every table of the Schemas plus the
// Tables, named "schema.table" or by API name (see ParseAPIName; a bare name
// is in public). Partitions are left out of whole-schema selections, since
// the engine publishes partitioned tables through their root; name one in
// Tables to select it anyway.
type Filter struct {
	Schemas []string
	Tables  []string
}

const tablesQuery = `SELECT c.oid, n.nspname, c.relname, c.relreplident::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND ((n.nspname = ANY($1::text[]) AND NOT c.relispartition)
    OR (n.nspname, c.relname) IN (SELECT * FROM unnest($2::text[], $3::text[])))`

const tableQuery = `SELECT c.oid, n.nspname, c.relname, c.relreplident::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = $1`

const columnsQuery = `SELECT a.attrelid, a.attname, a.atttypid, a.attnotnull, a.attnum
FROM pg_attribute a
WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum`

const keysQuery = `SELECT i.indrelid, k.attnum, NOT i.indimmediate
FROM pg_index i, unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
WHERE i.indrelid = ANY($1::oid[]) AND i.indisprimary
ORDER BY i.indrelid, k.ord`

// LoadTables returns the ordinary and partitioned tables (relkind r, p) the
// filter selects, sorted by schema then name (byte order), with their
// columns and primary keys, types resolved through types. A table named in
// f.Tables that does not exist is an error naming it.
func LoadTables(ctx context.Context, q Querier, types *Types, f Filter) ([]*Table, error) {
	schemas := f.Schemas
	if len(f.Schemas) == 0 && len(f.Tables) == 0 {
		schemas = []string{"public"}
	}
	type name struct{ schema, table string }
	var wanted []name
	tSchemas := make([]string, 0, len(f.Tables))
	tNames := make([]string, 0, len(f.Tables))
	for _, raw := range f.Tables {
		s, t, err := ParseAPIName(raw)
		if err != nil {
			return nil, fmt.Errorf("catalog: %w", err)
		}
		wanted = append(wanted, name{s, t})
		tSchemas = append(tSchemas, s)
		tNames = append(tNames, t)
	}
	if schemas == nil {
		schemas = []string{}
	}
	tables, err := queryTables(ctx, q, tablesQuery, schemas, tSchemas, tNames)
	if err != nil {
		return nil, err
	}
	found := make(map[name]bool, len(tables))
	for _, t := range tables {
		found[name{t.Schema, t.Name}] = true
	}
	for i, w := range wanted {
		if !found[w] {
			return nil, fmt.Errorf("catalog: table %s (%s) not found: no ordinary or partitioned table of that name", quoteForMsg(f.Tables[i]), quoteIdent(w.schema)+"."+quoteIdent(w.table))
		}
	}
	sort.Slice(tables, func(i, j int) bool {
		if tables[i].Schema != tables[j].Schema {
			return tables[i].Schema < tables[j].Schema
		}
		return tables[i].Name < tables[j].Name
	})
	if err := loadDetails(ctx, q, types, tables); err != nil {
		return nil, err
	}
	return tables, nil
}

// ErrTableNotFound is LoadTable's error for an OID no table has (any more).
var ErrTableNotFound = errors.New("table not found")

// LoadTable returns the table (any relation with columns) with the given
// OID, with its columns and primary key.
func LoadTable(ctx context.Context, q Querier, types *Types, oid uint32) (*Table, error) {
	tables, err := queryTables(ctx, q, tableQuery, oid)
	if err != nil {
		return nil, err
	}
	if len(tables) == 0 {
		return nil, fmt.Errorf("catalog: OID %d: %w", oid, ErrTableNotFound)
	}
	if err := loadDetails(ctx, q, types, tables); err != nil {
		return nil, err
	}
	return tables[0], nil
}

func queryTables(ctx context.Context, q Querier, sql string, args ...any) ([]*Table, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("catalog: listing tables: %w", err)
	}
	defer rows.Close()
	var tables []*Table
	for rows.Next() {
		t := &Table{}
		var ident string
		if err := rows.Scan(&t.OID, &t.Schema, &t.Name, &ident); err != nil {
			return nil, fmt.Errorf("catalog: listing tables: %w", err)
		}
		if len(ident) == 1 {
			t.ReplicaIdentity = ident[0]
		}
		tables = append(tables, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog: listing tables: %w", err)
	}
	return tables, nil
}

// loadDetails fills in the tables' columns and keys. All rows are read
// before types are looked up, so q may be a single connection.
func loadDetails(ctx context.Context, q Querier, types *Types, tables []*Table) error {
	if len(tables) == 0 {
		return nil
	}
	byOID := make(map[uint32]*Table, len(tables))
	oids := make([]uint32, len(tables))
	for i, t := range tables {
		byOID[t.OID] = t
		oids[i] = t.OID
	}
	type col struct {
		rel, typ uint32
		Column
	}
	var cols []col
	rows, err := q.Query(ctx, columnsQuery, oids)
	if err != nil {
		return fmt.Errorf("catalog: listing columns: %w", err)
	}
	for rows.Next() {
		var c col
		if err := rows.Scan(&c.rel, &c.Name, &c.typ, &c.NotNull, &c.Position); err != nil {
			rows.Close()
			return fmt.Errorf("catalog: listing columns: %w", err)
		}
		cols = append(cols, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("catalog: listing columns: %w", err)
	}
	type keyCol struct {
		rel        uint32
		attnum     int
		deferrable bool
	}
	var keys []keyCol
	rows, err = q.Query(ctx, keysQuery, oids)
	if err != nil {
		return fmt.Errorf("catalog: reading primary keys: %w", err)
	}
	for rows.Next() {
		var k keyCol
		if err := rows.Scan(&k.rel, &k.attnum, &k.deferrable); err != nil {
			rows.Close()
			return fmt.Errorf("catalog: reading primary keys: %w", err)
		}
		keys = append(keys, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("catalog: reading primary keys: %w", err)
	}
	for _, c := range cols {
		t := byOID[c.rel]
		if t == nil {
			continue
		}
		if c.Type, err = types.Lookup(ctx, q, c.typ); err != nil {
			return fmt.Errorf("catalog: column %s of %s.%s: %w", quoteIdent(c.Name), quoteIdent(t.Schema), quoteIdent(t.Name), err)
		}
		t.Columns = append(t.Columns, c.Column)
	}
	for _, k := range keys {
		t := byOID[k.rel]
		if t == nil {
			continue
		}
		t.DeferrableKey = k.deferrable
		for i, c := range t.Columns {
			if c.Position == k.attnum {
				t.Key = append(t.Key, i)
				break
			}
		}
	}
	return nil
}

// quoteIdent quotes a PostgreSQL identifier for messages.
func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// KeyColumns returns the indexes of the columns that make up a row's
// identity: the primary key in key order, or, for a table without one, all
// columns sorted by name (byte order), as Electric does. The result must
// not be modified.
func (t *Table) KeyColumns() []int {
	if len(t.Key) > 0 {
		return t.Key
	}
	idx := make([]int, len(t.Columns))
	for i := range idx {
		idx[i] = i
	}
	sortByName(idx, t.Columns)
	return idx
}

// sortByName insertion-sorts column indexes by column name (tables are
// narrow, and this runs without allocating on the per-row path).
func sortByName(idx []int, cols []Column) {
	for i := 1; i < len(idx); i++ {
		for j := i; j > 0 && cols[idx[j]].Name < cols[idx[j-1]].Name; j-- {
			idx[j], idx[j-1] = idx[j-1], idx[j]
		}
	}
}

// AppendKey appends the row's Electric key, which is also its Convex `_id`:
// `"<schema>"."<table>"` (with '/' doubled, then '.' doubled, in each part)
// followed, for each key column (KeyColumns), by `/"<value>"` with '/'
// doubled in the value, or `/_` for NULL. This is Electric's
// Changes.build_key. values[i] is the text value of Columns[i] (nil = NULL);
// only key columns are read, and missing ones count as NULL. With no values
// at all only the relation part is written: the key of the table itself.
func (t *Table) AppendKey(dst []byte, values [][]byte) []byte {
	dst = append(dst, '"')
	dst = appendRelPart(dst, t.Schema)
	dst = append(dst, '"', '.', '"')
	dst = appendRelPart(dst, t.Name)
	dst = append(dst, '"')
	if len(values) == 0 {
		return dst
	}
	if len(t.Key) > 0 {
		for _, k := range t.Key {
			dst = appendKeyPart(dst, values, k)
		}
		return dst
	}
	var buf [64]int
	var idx []int
	if len(t.Columns) <= len(buf) {
		idx = buf[:len(t.Columns)]
	} else {
		idx = make([]int, len(t.Columns))
	}
	for i := range idx {
		idx[i] = i
	}
	sortByName(idx, t.Columns)
	for _, k := range idx {
		dst = appendKeyPart(dst, values, k)
	}
	return dst
}

func appendRelPart(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '/', '.':
			dst = append(dst, c, c)
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

func appendKeyPart(dst []byte, values [][]byte, i int) []byte {
	if i >= len(values) || values[i] == nil {
		return append(dst, '/', '_')
	}
	dst = append(dst, '/', '"')
	for _, c := range values[i] {
		if c == '/' {
			dst = append(dst, '/', '/')
		} else {
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}
