package importer

import (
	"context"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
)

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
		if _, err := tx.Exec(ctx, alterTypeSQL(s.t.ident(), s.cols[i].name, from, to, have[s.cols[i].name].provisional)); err != nil {
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
		if _, err := tx.Exec(ctx, addColumnSQL(t.ident(), c.name, c.typ)); err != nil {
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
		if _, err := tx.Exec(ctx, dropKeyIndexSQL(s.t, false)); err != nil {
			return explain(err)
		}
	}
	if _, err := tx.Exec(ctx, createKeyIndexSQL(s.t, def, false)); err != nil {
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
