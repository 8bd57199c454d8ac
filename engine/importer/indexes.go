package importer

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// keyPath is one primary-key field: a column, or a path into a jsonb column.
type keyPath []string

func (p keyPath) String() string { return strings.Join(p, ".") }

// exprOn is the SQL expression of the key field, its column qualified by
// alias when one is given.
func (p keyPath) exprOn(alias string) string {
	col := pgx.Identifier{columnFor(p[0])}.Sanitize()
	if alias != "" {
		col = alias + "." + col
	}
	if len(p) == 1 {
		return col
	}
	parts := make([]string, len(p)-1)
	for i, s := range p[1:] {
		parts[i] = "'" + strings.ReplaceAll(s, "'", "''") + "'"
	}
	return "(" + col + " #>> ARRAY[" + strings.Join(parts, ", ") + "])"
}

// validKey checks a primary key declaration.
func validKey(t tableName, key [][]string) ([]keyPath, error) {
	if len(key) == 0 {
		return nil, badRequest("EmptyPrimaryKey", "Primary keys cannot be empty (table %s)", t.api)
	}
	if len(key) > 32 {
		return nil, badRequest("InvalidPrimaryKey", "Invalid primary key for table %s: at most 32 fields", t.api)
	}
	out := make([]keyPath, len(key))
	seen := map[string]bool{}
	for i, path := range key {
		if len(path) == 0 {
			return nil, badRequest("InvalidPrimaryKey", "Invalid primary key for table %s: field %d is an empty path", t.api, i)
		}
		if why := fieldProblem(path[0]); why != "" {
			return nil, badRequest("InvalidPrimaryKey", "Invalid primary key for table %s: field %q: %s", t.api, path[0], why)
		}
		if strings.HasPrefix(path[0], cdcPrefix) {
			return nil, badRequest("InvalidPrimaryKey", "Invalid primary key for table %s: field %q: %s* fields are Airbyte's CDC metadata, which is not stored", t.api, path[0], cdcPrefix)
		}
		for _, part := range path[1:] {
			if part == "" || len(part) > maxIdentifier || strings.IndexByte(part, 0) >= 0 {
				return nil, badRequest("InvalidPrimaryKey", "Invalid primary key for table %s: %q is not a valid field name (1 to 63 bytes, no NUL)", t.api, part)
			}
		}
		p := keyPath(path)
		if seen[p.String()] {
			return nil, badRequest("InvalidPrimaryKey", "Invalid primary key for table %s: %s appears twice", t.api, p)
		}
		seen[p.String()] = true
		out[i] = p
	}
	return out, nil
}

// indexName is the unique index that backs a table's primary key.
func indexName(t tableName) string {
	name := t.name + "_airbyte_pk"
	if len(name) > 63 {
		sum := sha1.Sum([]byte(t.name))
		name = t.name[:63-len("_airbyte_pk")-9] + "_" + hex.EncodeToString(sum[:4]) + "_airbyte_pk"
	}
	return name
}

// indexDef is the index's key definition as written in CREATE INDEX.
func indexDef(key []keyPath) string {
	exprs := make([]string, len(key))
	for i, p := range key {
		if len(p) == 1 {
			exprs[i] = p.exprOn("")
		} else {
			exprs[i] = "(" + p.exprOn("") + ")"
		}
	}
	return strings.Join(exprs, ", ")
}

// indexBuild is a CREATE UNIQUE INDEX CONCURRENTLY running in the background.
type indexBuild struct {
	def  string
	done chan struct{}
	err  error
}

// AddPrimaryKeyIndexes creates each table if needed and starts building a
// unique index on its key fields without blocking writers (CREATE UNIQUE
// INDEX CONCURRENTLY); IndexesReady tells when they are usable. An index on
// the same fields is kept; one on other fields is replaced.
func (im *Importer) AddPrimaryKeyIndexes(ctx context.Context, indexes map[string][][]string) error {
	type want struct {
		t   tableName
		key []keyPath
	}
	var wants []want
	for api, key := range indexes {
		t, err := parseTableName(api)
		if err != nil {
			return err
		}
		paths, err := validKey(t, key)
		if err != nil {
			return err
		}
		wants = append(wants, want{t, paths})
	}
	for _, w := range wants {
		if err := im.addIndex(ctx, w.t, w.key); err != nil {
			return during(err, "adding the key index of %s", w.t.ident())
		}
	}
	return nil
}

func (im *Importer) addIndex(ctx context.Context, t tableName, key []keyPath) error {
	if err := im.prepareKeyColumns(ctx, t, key); err != nil {
		return err
	}
	def := indexDef(key)
	name := indexName(t)
	// buildsMu guards the map only: checking and claiming the table's slot
	// happen under it, the catalog reads and the wait below do not.
	im.buildsMu.Lock()
	prev := im.builds[t.ident()]
	if prev != nil && !prev.finished() {
		im.buildsMu.Unlock()
		if prev.def == def {
			return nil // already being built
		}
		return badRequest("IndexBuildInProgress", "A primary-key index on table %s is still being built on other fields; wait for primary_key_indexes_ready first", t.api)
	}
	b := &indexBuild{def: def, done: make(chan struct{})}
	im.builds[t.ident()] = b
	im.buildsMu.Unlock()
	release := func(keep *indexBuild) { // give the slot up without building
		im.buildsMu.Lock()
		if im.builds[t.ident()] == b {
			if keep != nil {
				im.builds[t.ident()] = keep
			} else {
				delete(im.builds, t.ident())
			}
		}
		im.buildsMu.Unlock()
		close(b.done)
	}
	existing, err := im.currentIndexDef(ctx, t)
	if err != nil {
		release(prev)
		return err
	}
	if existing.found && existing.valid && existing.def == def {
		release(nil)
		return nil
	}
	go im.build(t, name, def, existing.found, b)
	// Return once the index is in the catalog, so readiness can be polled.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-b.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if cur, err := im.currentIndexDef(ctx, t); err == nil && cur.found && !existing.found {
			return nil
		}
	}
	return nil
}

// prepareKeyColumns makes sure the table and its key columns exist before
// an index is built on them: a new table, or a missing column, is created
// with provisional types (text for plain key fields, jsonb for the roots of
// nested ones) that the first import replaces. A nested key into an
// existing column that is not json/jsonb is refused.
func (im *Importer) prepareKeyColumns(ctx context.Context, t tableName, key []keyPath) error {
	tx, err := im.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockKey(t)); err != nil {
		return err
	}
	var cols []column
	nested := map[string]bool{}
	for _, p := range key {
		name := columnFor(p[0])
		if _, seen := nested[name]; !seen {
			cols = append(cols, column{name: name, field: p[0], typ: typeText})
		}
		nested[name] = nested[name] || len(p) > 1
	}
	for i := range cols {
		if nested[cols[i].name] {
			cols[i].typ = typeJSONB
		}
	}
	created, err := createSchemaTable(ctx, tx, t, cols)
	if err != nil || created {
		if err == nil {
			err = tx.Commit(ctx)
		}
		return err
	}
	have := map[string]string{}
	rows, err := tx.Query(ctx, `SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
		WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped`, t.ident())
	if err != nil {
		return err
	}
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			return err
		}
		have[name] = typ
	}
	if err := rows.Err(); err != nil {
		return err
	}
	var missing []column
	for _, c := range cols {
		typ, ok := have[c.name]
		if !ok {
			missing = append(missing, c)
			continue
		}
		if f, _ := classify(typ); nested[c.name] && f != famJSON {
			for _, p := range key {
				if len(p) > 1 && columnFor(p[0]) == c.name {
					return badRequest("InvalidPrimaryKey", "Invalid primary key for table %s: %s reaches into field %q, whose column %s is %s; a nested key needs a json or jsonb column",
						t.api, p, p[0], pgx.Identifier{c.name}.Sanitize(), typ)
				}
			}
		}
	}
	if len(missing) == 0 {
		return nil // nothing to change: no lock taken on a busy table
	}
	if err := addColumns(ctx, tx, t, missing); err != nil {
		return err
	}
	return explain(tx.Commit(ctx))
}

func (b *indexBuild) finished() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

type indexState struct {
	found, valid bool
	def          string
}

// currentIndexDef reads the key index's state from the catalog.
func (im *Importer) currentIndexDef(ctx context.Context, t tableName) (indexState, error) {
	return readIndexState(ctx, im.pool, t)
}

// querier is a pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// readIndexState reads the key index from the catalog. The key definition
// it was built for is kept in the index's comment.
func readIndexState(ctx context.Context, q querier, t tableName) (indexState, error) {
	var s indexState
	var comment *string
	err := q.QueryRow(ctx, `
		SELECT i.indisvalid AND i.indisready, obj_description(i.indexrelid, 'pg_class')
		FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2`, t.schema, indexName(t)).Scan(&s.valid, &comment)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, nil
	}
	if err != nil {
		return s, err
	}
	s.found = true
	if comment != nil {
		s.def = strings.TrimPrefix(*comment, commentPrefix)
	}
	return s, nil
}

const commentPrefix = "shapelog primary key: "

// commentIndex records the key definition an index was built for.
func commentIndex(ctx context.Context, exec func(context.Context, string, ...any) (pgconn.CommandTag, error), t tableName, def string) error {
	_, err := exec(ctx, "COMMENT ON INDEX "+pgx.Identifier{t.schema, indexName(t)}.Sanitize()+" IS '"+strings.ReplaceAll(commentPrefix+def, "'", "''")+"'")
	return err
}

// build replaces the index concurrently; errors are kept for IndexesReady.
func (im *Importer) build(t tableName, name, def string, replace bool, b *indexBuild) {
	defer close(b.done)
	ctx := context.Background()
	conn, err := im.pool.Acquire(ctx)
	if err != nil {
		b.err = err
		return
	}
	defer conn.Release()
	if replace {
		if _, err := conn.Exec(ctx, dropKeyIndexSQL(t, true)); err != nil {
			b.err = err
			return
		}
	}
	started := time.Now()
	_, err = conn.Exec(ctx, createKeyIndexSQL(t, def, true))
	if err != nil {
		b.err = err
		// A failed concurrent build leaves an invalid index behind.
		_, _ = conn.Exec(ctx, dropKeyIndexSQL(t, true))
		im.log.Warn().Err(err).Str("table", t.ident()).Msg("primary-key index build failed")
		return
	}
	if err := commentIndex(ctx, conn.Exec, t, def); err != nil {
		b.err = err
		return
	}
	im.log.Info().Str("table", t.ident()).Str("index", name).Dur("took", time.Since(started)).Msg("primary-key index built")
}

// IndexesReady reports whether every table's primary-key index is built.
func (im *Importer) IndexesReady(ctx context.Context, names []string) (bool, error) {
	tables, err := parseNames(names)
	if err != nil {
		return false, err
	}
	ready := true
	for _, t := range tables {
		im.buildsMu.Lock()
		b := im.builds[t.ident()]
		im.buildsMu.Unlock()
		if b != nil {
			select {
			case <-b.done:
				if b.err != nil {
					return false, badRequest("IndexBuildFailed", "Building the primary-key index of table %s failed: %s. Fix the data (e.g. remove duplicate keys) and call add_primary_key_indexes again.", t.api, explain(b.err).Error())
				}
			default:
				ready = false
				continue
			}
		}
		s, err := im.currentIndexDef(ctx, t)
		if err != nil {
			return false, during(err, "reading the key index of %s", t.ident())
		}
		if !s.found {
			return false, badRequest("MissingIndex", "Missing index: %s.%s", t.api, indexName(t))
		}
		ready = ready && s.valid
	}
	return ready, nil
}
