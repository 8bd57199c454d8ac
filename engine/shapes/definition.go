package shapes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/shapelog/shapelog/engine/catalog"
	"github.com/shapelog/shapelog/engine/where"
)

// Request is a shape as a client asks for it: the raw query parameters.
type Request struct {
	Table   string
	Where   string
	Params  map[string]string
	Columns string // comma-separated, "" = all
	Replica string // "default" (or "") or "full"
	// Log is "full" (or "") or "changes_only": no initial rows, only the
	// changes after the shape was created.
	Log string
	// Queryable is queryable_columns: the columns subset snapshots may
	// filter and order by ("" = all), and the columns synced when Columns
	// is "".
	Queryable string
}

// ParamError is a request parameter the engine cannot accept; Electric
// reports it as {"errors": {Field: [Msg]}}.
type ParamError struct {
	Field string
	Msg   string
}

func (e *ParamError) Error() string { return e.Field + ": " + e.Msg }

// Definition is a resolved shape: everything that identifies it.
type Definition struct {
	Table *catalog.Table
	// Where is the normalized where clause ("" = every row): identifiers
	// quoted and parameters substituted as typed literals.
	Where  string
	filter *where.Filter
	// Columns are the selected columns (indexes into Table.Columns, in
	// table order); Explicit says the client listed them.
	Columns  []int
	Explicit bool
	// Full is replica=full: updates carry whole rows and old values.
	Full bool
	// ChangesOnly is log=changes_only: the snapshot has no rows.
	ChangesOnly bool
	// Queryable are the columns subset snapshots may refer to (indexes
	// into Table.Columns); nil = every column. Not part of the identity.
	Queryable []int
}

// Identity is the definition's key: equal definitions share a shape.
func (d *Definition) Identity() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d|%s.%s|%t|%t|", d.Table.OID, d.Table.Schema, d.Table.Name, d.Explicit, d.Full)
	for _, c := range d.Columns {
		b.WriteString(strconv.Quote(d.Table.Columns[c].Name))
	}
	b.WriteString("|" + d.Where)
	if d.ChangesOnly {
		b.WriteString("|changes_only")
	}
	return b.String()
}

// hash is the first part of the shape's handle.
func (d *Definition) hash() uint32 {
	h := fnv.New32a()
	h.Write([]byte(d.Identity()))
	return h.Sum32() & 0x7ffffff
}

// parseIdentifiers splits a comma- or dot-separated list of identifiers:
// unquoted ones are lower-cased, double-quoted ones keep their case with ""
// standing for a quote.
func parseIdentifiers(s string, sep byte) ([]string, error) {
	var out []string
	for i := 0; ; {
		for i < len(s) && s[i] == ' ' {
			i++
		}
		var part strings.Builder
		if i < len(s) && s[i] == '"' {
			i++
			for {
				if i >= len(s) {
					return nil, errors.New("unterminated quoted identifier")
				}
				if s[i] == '"' {
					if i+1 < len(s) && s[i+1] == '"' {
						part.WriteByte('"')
						i += 2
						continue
					}
					i++
					break
				}
				part.WriteByte(s[i])
				i++
			}
			if part.Len() == 0 {
				return nil, errors.New("empty quoted identifier")
			}
		} else {
			start := i
			for i < len(s) && s[i] != sep && s[i] != ' ' {
				if s[i] == '"' {
					return nil, errors.New("unexpected quote in identifier")
				}
				i++
			}
			if i == start {
				return nil, errors.New("empty identifier")
			}
			part.WriteString(strings.ToLower(s[start:i]))
		}
		out = append(out, part.String())
		for i < len(s) && s[i] == ' ' {
			i++
		}
		if i >= len(s) {
			return out, nil
		}
		if s[i] != sep {
			return nil, fmt.Errorf("unexpected %q", s[i])
		}
		i++
	}
}

func quoteIdent(s string) string { return pgx.Identifier{s}.Sanitize() }

// columnList parses a comma-separated list of column names (the request
// field named field) into sorted column indexes, which must include the
// primary key.
func columnList(table *catalog.Table, field, list string) ([]int, error) {
	names, err := parseIdentifiers(list, ',')
	if err != nil {
		return nil, &ParamError{field, "Invalid column list: " + err.Error()}
	}
	if len(names) == 0 {
		return nil, &ParamError{field, "can't be empty"}
	}
	var cols []int
	var unknown []string
	for _, n := range names {
		i := slices.IndexFunc(table.Columns, func(c catalog.Column) bool { return c.Name == n })
		if i < 0 {
			unknown = append(unknown, n)
			continue
		}
		if !slices.Contains(cols, i) {
			cols = append(cols, i)
		}
	}
	if len(unknown) > 0 {
		return nil, &ParamError{field, "The following columns are not found on the table: " + strings.Join(unknown, ", ")}
	}
	var missing []string
	for _, k := range table.Key {
		if !slices.Contains(cols, k) {
			missing = append(missing, table.Columns[k].Name)
		}
	}
	if len(missing) > 0 {
		return nil, &ParamError{field, "The list of columns must include all primary key columns, missing: " + strings.Join(missing, ", ")}
	}
	slices.Sort(cols)
	return cols, nil
}

// resolve checks a request against the catalog and builds its definition.
func (m *Manager) resolve(ctx context.Context, req Request) (*Definition, error) {
	if req.Table == "" {
		return nil, &ParamError{"table", "can't be blank"}
	}
	parts, err := parseIdentifiers(req.Table, '.')
	if err != nil || len(parts) > 2 {
		return nil, &ParamError{"table", "Invalid table name " + strconv.Quote(req.Table) + ": give a table name or schema.table, double-quoting parts that contain capitals or special characters"}
	}
	if len(parts) == 1 {
		parts = []string{"public", parts[0]}
	}
	if why := catalog.ReservedSchema(parts[0]); why != "" {
		return nil, &ParamError{"table", fmt.Sprintf("Cannot sync %s.%s: schema %s is reserved: %s", quoteIdent(parts[0]), quoteIdent(parts[1]), quoteIdent(parts[0]), why)}
	}
	var oid uint32
	var readable bool
	err = m.pool.QueryRow(ctx, `SELECT c.oid, has_table_privilege(c.oid, 'SELECT') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`, parts[0], parts[1]).Scan(&oid, &readable)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, &ParamError{"table", fmt.Sprintf("Table %s.%s does not exist. If the table name contains capitals or special characters you must quote it.", quoteIdent(parts[0]), quoteIdent(parts[1]))}
	}
	if err != nil {
		return nil, err
	}
	if !readable {
		return nil, &ParamError{"table", fmt.Sprintf("The engine's database role may not read %s.%s (it needs SELECT on it)", quoteIdent(parts[0]), quoteIdent(parts[1]))}
	}
	table, err := catalog.LoadTable(ctx, m.pool, m.types, oid)
	if err != nil {
		return nil, err
	}
	d := &Definition{Table: table, Full: req.Replica == "full", ChangesOnly: req.Log == "changes_only"}
	switch req.Replica {
	case "", "default", "full":
	default:
		return nil, &ParamError{"replica", "is invalid: use default or full"}
	}
	switch req.Log {
	case "", "full", "changes_only":
	default:
		return nil, &ParamError{"log", "is invalid: use full or changes_only"}
	}
	if req.Queryable != "" {
		if d.Queryable, err = columnList(table, "queryable_columns", req.Queryable); err != nil {
			return nil, err
		}
		if req.Columns == "" {
			req.Columns = req.Queryable
		}
	}
	if req.Columns == "" {
		for i := range table.Columns {
			d.Columns = append(d.Columns, i)
		}
	} else {
		if d.Columns, err = columnList(table, "columns", req.Columns); err != nil {
			return nil, err
		}
		d.Explicit = true
		if d.Queryable != nil {
			var outside []string
			for _, c := range d.Columns {
				if !slices.Contains(d.Queryable, c) {
					outside = append(outside, table.Columns[c].Name)
				}
			}
			if len(outside) > 0 {
				return nil, &ParamError{"columns", "The following columns are not in queryable_columns: " + strings.Join(outside, ", ")}
			}
		}
	}
	if strings.TrimSpace(req.Where) != "" {
		f, err := where.Parse(req.Where, req.Params, table.Columns)
		if err != nil {
			var we *where.Error
			if errors.As(err, &we) {
				return nil, &ParamError{"where", we.Error()}
			}
			return nil, &ParamError{"where", err.Error()}
		}
		d.filter, d.Where = f, f.SQL()
	}
	return d, nil
}

// columnSchema is one entry of the electric-schema header.
type columnSchema struct {
	Type      string `json:"type"`
	Dims      int    `json:"dims,omitempty"`
	PKIndex   *int   `json:"pk_index,omitempty"`
	NotNull   bool   `json:"not_null,omitempty"`
	MaxLength int    `json:"max_length,omitempty"`
	Length    int    `json:"length,omitempty"`
	Precision *int   `json:"precision,omitempty"`
	Scale     *int   `json:"scale,omitempty"`
	TypeMod   *int   `json:"type_mod,omitempty"`
}

const schemaQuery = `SELECT a.attname, coalesce(e.typname, t.typname), a.atttypmod, a.attnotnull,
	CASE WHEN t.typcategory = 'A' THEN greatest(a.attndims, 1) ELSE 0 END
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid LEFT JOIN pg_type e ON t.typcategory = 'A' AND e.oid = t.typelem
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped`

// schemaHeader builds the electric-schema header of a definition: the
// selected columns' PostgreSQL types with their modifiers.
func (m *Manager) schemaHeader(ctx context.Context, d *Definition) (string, error) {
	rows, err := m.pool.Query(ctx, schemaQuery, d.Table.OID)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	out := map[string]columnSchema{}
	for rows.Next() {
		var name, typ string
		var mod int
		var notNull bool
		var dims int
		if err := rows.Scan(&name, &typ, &mod, &notNull, &dims); err != nil {
			return "", err
		}
		i := slices.IndexFunc(d.Table.Columns, func(c catalog.Column) bool { return c.Name == name })
		if i < 0 || !slices.Contains(d.Columns, i) {
			continue
		}
		cs := columnSchema{Type: typ, Dims: dims, NotNull: notNull}
		if k := slices.Index(d.Table.Key, i); k >= 0 {
			cs.PKIndex = &k
		}
		if mod >= 0 {
			switch typ {
			case "varchar":
				cs.MaxLength = mod - 4
			case "bpchar":
				cs.Length = mod - 4
			case "bit", "varbit":
				cs.Length = mod
			case "time", "timetz", "timestamp", "timestamptz":
				p := mod
				cs.Precision = &p
			case "numeric":
				p, s := ((mod-4)>>16)&0xffff, (mod-4)&0xffff
				cs.Precision, cs.Scale = &p, &s
			case "interval":
				if p := mod & 0xffff; p != 0xffff {
					cs.Precision = &p
				}
			default:
				m := mod
				cs.TypeMod = &m
			}
		}
		out[name] = cs
	}
	if err := rows.Err(); err != nil {
		return "", err
	}
	b, err := json.Marshal(out)
	return string(b), err
}
