// Package importer lands Airbyte records in typed PostgreSQL tables: it
// creates and evolves tables from the streams' JSON Schemas, builds the
// unique primary-key indexes deduplication relies on, and loads each request
// in one transaction through COPY into a staging table and one set-based
// merge.
package importer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"sort"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/shapelog/shapelog/engine/catalog"
)

// Error is a problem with the request, reported to the client as
// {"code", "message"} with Status.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func badRequest(code, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Code: code, Message: fmt.Sprintf(format, args...)}
}

// during names the step an error happened in ("merging into t: …"), so
// the log of a fault says where it was; errors.As still reaches what it
// wraps. Errors meant for the client (*Error) pass as they are.
func during(err error, format string, args ...any) error {
	var ie *Error
	if err == nil || errors.As(err, &ie) {
		return err
	}
	return fmt.Errorf(format+": %w", append(args, err)...)
}

// Importer writes imported records into the database.
type Importer struct {
	pool *pgxpool.Pool
	log  zerolog.Logger

	metaOnce sync.Mutex
	metaDone bool

	buildsMu sync.Mutex
	builds   map[string]*indexBuild // by qualified table name

	// insertFirst holds, per qualified table name, how many more dedup
	// merges should skip the plain-insert attempt because one recently
	// found keys already in the table (see merge).
	insertFirstMu sync.Mutex
	insertFirst   map[string]int
}

// New creates an importer writing through pool.
func New(pool *pgxpool.Pool, log zerolog.Logger) *Importer {
	return &Importer{pool: pool, log: log.With().Str("component", "import").Logger(), builds: map[string]*indexBuild{}, insertFirst: map[string]int{}}
}

// tableName is a table named on the API.
type tableName struct {
	api, schema, name string
}

func (t tableName) ident() string { return pgx.Identifier{t.schema, t.name}.Sanitize() }

// parseTableName resolves an API table name (`t` in public, `s.t`).
func parseTableName(api string) (tableName, error) {
	schema, name, err := catalog.ParseAPIName(api)
	if err != nil {
		return tableName{}, badRequest("InvalidTableName", "Invalid table name %q: %v", api, err)
	}
	for _, part := range []string{schema, name} {
		if len(part) > 63 {
			return tableName{}, badRequest("InvalidTableName", "Invalid table name %q: %q is longer than PostgreSQL's 63-byte identifier limit", api, part)
		}
		if strings.IndexByte(part, 0) >= 0 {
			return tableName{}, badRequest("InvalidTableName", "Invalid table name %q: PostgreSQL identifiers cannot contain a NUL character", api)
		}
	}
	if why := catalog.ReservedSchema(schema); why != "" {
		return tableName{}, badRequest("InvalidTableName", "Invalid table name %q: schema %q is reserved: %s", api, schema, why)
	}
	return tableName{api: api, schema: schema, name: name}, nil
}

// lockKey serialises imports and DDL on one table.
func lockKey(t tableName) int64 {
	h := fnv.New64a()
	h.Write([]byte("shapelog import " + t.ident()))
	return int64(h.Sum64())
}

// metaSchema holds the importer's own bookkeeping (idempotency keys).
const metaSchema = catalog.EngineSchema

func (im *Importer) ensureMeta(ctx context.Context) error {
	im.metaOnce.Lock()
	defer im.metaOnce.Unlock()
	if im.metaDone {
		return nil
	}
	tx, err := im.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(8412607733)`); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+metaSchema+`;
		CREATE TABLE IF NOT EXISTS `+metaSchema+`.import_keys (key text PRIMARY KEY, imported_at timestamptz NOT NULL DEFAULT now());
		ALTER TABLE `+metaSchema+`.import_keys ADD COLUMN IF NOT EXISTS body_sha256 bytea`); err != nil {
		return explain(err)
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	im.metaDone = true
	return nil
}

// sameBody checks that a request whose idempotency key was already used
// carries the body the key was first used with (its SHA-256, sum): a
// retry. A key recorded before the engine kept hashes matches any body.
func sameBody(ctx context.Context, tx pgx.Tx, key string, sum []byte) error {
	var stored []byte
	if err := tx.QueryRow(ctx, `SELECT body_sha256 FROM `+metaSchema+`.import_keys WHERE key = $1`, key).Scan(&stored); err != nil {
		return during(err, "reading idempotency key")
	}
	if stored != nil && !bytes.Equal(stored, sum) {
		return &Error{Status: http.StatusUnprocessableEntity, Code: "IdempotencyKeyReused",
			Message: fmt.Sprintf("The Idempotency-Key %q was already used with a different body; a retry must send the same body, a new request needs a new key", key)}
	}
	return nil
}

// PruneKeys forgets idempotency keys older than age (a client retries
// within minutes; keys are kept for days).
func (im *Importer) PruneKeys(ctx context.Context, age string) error {
	if err := im.ensureMeta(ctx); err != nil {
		return during(err, "creating the idempotency key table")
	}
	_, err := im.pool.Exec(ctx, `DELETE FROM `+metaSchema+`.import_keys WHERE imported_at < now() - $1::interval`, age)
	return during(err, "pruning idempotency keys")
}

// explain turns PostgreSQL errors caused by the request into 400s.
func explain(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	switch {
	case pgErr.Code == "42501":
		return &Error{Status: http.StatusForbidden, Code: "PermissionDenied", Message: "the engine's database role may not do this: " + pgErr.Message}
	case strings.HasPrefix(pgErr.Code, "22"), strings.HasPrefix(pgErr.Code, "23"):
		msg := pgErr.Message
		if pgErr.Detail != "" {
			msg += " (" + pgErr.Detail + ")"
		}
		if pgErr.Where != "" {
			msg += "; " + pgErr.Where
		}
		return badRequest("InvalidValue", "%s", msg)
	}
	return err
}

// ClearTables empties tables (creating missing ones), in one transaction.
func (im *Importer) ClearTables(ctx context.Context, names []string) error {
	tables, err := parseNames(names)
	if err != nil {
		return err
	}
	tx, err := im.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	for _, t := range tables {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockKey(t)); err != nil {
			return during(err, "locking table %s", t.ident())
		}
		if _, err := createSchemaTable(ctx, tx, t, nil); err != nil {
			return during(err, "creating table %s", t.ident())
		}
		if _, err := tx.Exec(ctx, "TRUNCATE "+t.ident()); err != nil {
			return during(explain(err), "clearing table %s", t.ident())
		}
	}
	return during(tx.Commit(ctx), "committing the clear")
}

func parseNames(names []string) ([]tableName, error) {
	seen := map[string]bool{}
	var out []tableName
	for _, n := range names {
		t, err := parseTableName(n)
		if err != nil {
			return nil, err
		}
		if !seen[t.ident()] {
			seen[t.ident()] = true
			out = append(out, t)
		}
	}
	// A fixed order keeps concurrent requests from deadlocking.
	sort.Slice(out, func(i, j int) bool { return out[i].ident() < out[j].ident() })
	return out, nil
}

// Which tables are the importer's. A table the importer creates carries
// ownTableComment (COMMENT ON TABLE), and only such tables ever have their
// column types changed (widened, see widen); a table without it was made by
// someone else and keeps its types, PostgreSQL casting the imported values
// on COPY. A comment travels with the table through renames and pg_dump,
// needs no bookkeeping table to keep in step, and a user who replaces it
// only makes the importer more careful with that table.
//
// Columns the importer had to create before knowing their type (key
// columns add_primary_key_indexes adds before any record or schema was
// seen, fields seen only as null) carry provisionalComment: while the table
// is empty, the first type a request declares or sees replaces the guess,
// and the comment goes.
const (
	ownTableComment    = "shapelog: created by the importer, which may widen its column types"
	ownTablePrefix     = "shapelog: created by the importer"
	provisionalComment = "shapelog: provisional type"
)

// createSchemaTable creates t (and its schema) when missing, with cols,
// and reports whether it did.
func createSchemaTable(ctx context.Context, tx pgx.Tx, t tableName, cols []column) (bool, error) {
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, t.ident()).Scan(&exists); err != nil {
		return false, err
	}
	if exists {
		return false, nil
	}
	if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{t.schema}.Sanitize()); err != nil {
		return false, explain(err)
	}
	if _, err := tx.Exec(ctx, createTableSQL(t.ident(), cols)); err != nil {
		return false, explain(err)
	}
	if _, err := tx.Exec(ctx, "COMMENT ON TABLE "+t.ident()+" IS "+quote(ownTableComment)); err != nil {
		return false, err
	}
	for _, c := range cols {
		if !c.typed {
			if err := commentColumn(ctx, tx, t, c.name, provisionalComment); err != nil {
				return false, err
			}
		}
	}
	return true, nil
}

// commentColumn sets (or with "", removes) a column's comment.
func commentColumn(ctx context.Context, tx pgx.Tx, t tableName, col, comment string) error {
	value := "NULL"
	if comment != "" {
		value = quote(comment)
	}
	_, err := tx.Exec(ctx, "COMMENT ON COLUMN "+pgx.Identifier{t.schema, t.name, col}.Sanitize()+" IS "+value)
	return explain(err)
}

// quote is a SQL string literal.
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
