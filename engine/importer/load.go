package importer

import (
	"context"
	"crypto/sha256"
	"errors"
	"hash"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Import parses, validates and loads one import_airbyte_records body, in
// one transaction: records are copied while the body is still being read
// (see live), and any invalid record rolls the whole request back.
func (im *Importer) Import(ctx context.Context, body io.Reader, idemKey string) (records int, duplicate bool, err error) {
	return im.importBody(ctx, body, idemKey, parseRequestInto)
}

// ImportProtobuf is Import for a body in protobuf (Content-Type:
// application/x-protobuf; see parseProtobufRequestInto): the same checks,
// load, idempotency and errors.
func (im *Importer) ImportProtobuf(ctx context.Context, body io.Reader, idemKey string) (records int, duplicate bool, err error) {
	return im.importBody(ctx, body, idemKey, parseProtobufRequestInto)
}

// importBody is Import with the body's parser.
func (im *Importer) importBody(ctx context.Context, body io.Reader, idemKey string, parse func(io.Reader, recordSink) (*request, error)) (records int, duplicate bool, err error) {
	l := &live{im: im, ctx: ctx, idemKey: idemKey}
	defer l.abort()
	src := &watchedBody{r: body}
	body = src
	defer func() {
		// Before abort: say when PostgreSQL went away (a crash, a restart,
		// a terminated backend) rather than what the failure looked like
		// on the way: its connection's end reads as an unexpected EOF,
		// which is a truncated body only when the body itself ended.
		var ie *Error
		if err == nil || ctx.Err() != nil || errors.As(err, &ie) {
			return
		}
		var lost *connectionLost
		if errors.As(err, &lost) || (l.tx != nil && l.tx.Conn().IsClosed()) || (errors.Is(err, io.ErrUnexpectedEOF) && !src.ended) {
			err = &Error{Status: http.StatusServiceUnavailable, Code: "DatabaseUnavailable",
				Message: "The connection to PostgreSQL was lost during the import (" + err.Error() + "); nothing was written: retry the request"}
		}
	}()
	var sum hash.Hash
	if idemKey != "" { // the key's body, hashed as it is read (see sameBody)
		sum = sha256.New()
		body = io.TeeReader(body, sum)
	}
	req, err := parse(body, l)
	if err != nil {
		return 0, false, err
	}
	defer req.close()
	var bodySum []byte
	if sum != nil {
		bodySum = sum.Sum(nil)
	}
	duplicate, err = l.finish(req, bodySum)
	return req.n, duplicate, err
}

// watchedBody notes whether a request body ended: read to its end, or
// cut short by the client.
type watchedBody struct {
	r     io.Reader
	ended bool
}

func (w *watchedBody) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	if err != nil {
		w.ended = true
	}
	return n, err
}

// connectionLost is a failure of the database connection itself (it could
// not be had, or PostgreSQL ended it), not of the request.
type connectionLost struct{ err error }

func (c *connectionLost) Error() string { return c.err.Error() }
func (c *connectionLost) Unwrap() error { return c.err }

// begin opens a request's transaction: it locks the request's tables and
// records the idempotency key; a repeated key makes the request a no-op
// (duplicate = true).
func (im *Importer) begin(ctx context.Context, streams []*stream, idemKey string) (tx pgx.Tx, duplicate bool, err error) {
	if idemKey != "" {
		if err := im.ensureMeta(ctx); err != nil {
			return nil, false, during(err, "creating the idempotency key table")
		}
	}
	tx, err = im.pool.Begin(ctx)
	if err != nil {
		return nil, false, &connectionLost{during(err, "beginning the import's transaction")}
	}
	fail := func(err error) (pgx.Tx, bool, error) {
		if tx.Conn().IsClosed() {
			err = &connectionLost{err}
		}
		_ = tx.Rollback(context.Background())
		return nil, false, err
	}
	for _, s := range streams {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockKey(s.t)); err != nil {
			return fail(during(err, "locking table %s", s.t.ident()))
		}
	}
	if idemKey != "" {
		tag, err := tx.Exec(ctx, `INSERT INTO `+metaSchema+`.import_keys (key) VALUES ($1) ON CONFLICT DO NOTHING`, idemKey)
		if err != nil {
			return fail(during(err, "recording idempotency key"))
		}
		if tag.RowsAffected() == 0 {
			return tx, true, nil
		}
	}
	return tx, false, nil
}

// prepareTable gets a stream's table ready for its records: created,
// evolved (see evolve, whose others it returns) and, for dedup, with its
// key index.
func (im *Importer) prepareTable(ctx context.Context, tx pgx.Tx, s *stream) (others []string, err error) {
	if _, err := createSchemaTable(ctx, tx, s.t, s.cols); err != nil {
		return nil, during(err, "creating table %s", s.t.ident())
	}
	if others, err = evolve(ctx, tx, s); err != nil {
		return nil, during(err, "evolving table %s", s.t.ident())
	}
	if s.key != nil {
		if err := im.ensureKeyIndex(ctx, tx, s); err != nil {
			return nil, during(err, "checking the key index of %s", s.t.ident())
		}
	}
	return others, nil
}

// loadStream loads a stream's spooled records: evolves the table, copies
// the records into it, or for dedup into a staging table and merges them
// in one statement; insertFirst lets a dedup merge try a plain insert
// first (see merge).
func (im *Importer) loadStream(ctx context.Context, tx pgx.Tx, s *stream, insertFirst bool) error {
	others, err := im.prepareTable(ctx, tx, s)
	if err != nil || s.spool.n == 0 {
		return err
	}
	cols := columnNames(s.cols)
	if len(cols) == 0 { // records without a single field: rows of defaults
		_, err := tx.Exec(ctx, "INSERT INTO "+s.t.ident()+" SELECT FROM generate_series(1, $1)", s.spool.n)
		return during(explain(err), "inserting into %s", s.t.ident())
	}
	if s.key == nil {
		// Append: straight into the table, inside the request's transaction.
		err := copyRows(ctx, tx, s, false, 0)
		return during(err, "copying into %s", s.t.ident())
	}
	if _, err := tx.Exec(ctx, stageTableSQL(s.cols)); err != nil {
		return during(err, "creating the staging table for %s", s.t.ident())
	}
	if err := copyRows(ctx, tx, s, true, 0); err != nil {
		return during(err, "copying into the staging table for %s", s.t.ident())
	}
	return im.mergeStaged(ctx, tx, s, others, insertFirst)
}

// mergeStaged merges the staging table into s's table and drops it.
func (im *Importer) mergeStaged(ctx context.Context, tx pgx.Tx, s *stream, others []string, insertFirst bool) error {
	if err := im.merge(ctx, tx, s, columnNames(s.cols), others, insertFirst); err != nil {
		return during(err, "merging into %s", s.t.ident())
	}
	_, err := tx.Exec(ctx, "DROP TABLE "+stageTable)
	return during(err, "dropping the staging table for %s", s.t.ident())
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
		_, err := tx.Exec(ctx, mergeSQL(s.t.ident(), s.key, cols, others))
		return explain(err)
	}
	attempts := []string{upsertSQL(s.t.ident(), s.key, cols, others)}
	if insertFirst {
		attempts = append([]string{insertSQL(s.t.ident(), cols)}, attempts...)
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
	_, err := tx.Exec(ctx, mergeSQL(s.t.ident(), s.key, cols, others))
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

// copyRows streams the stream's spooled records through one COPY into its
// table, or with staged into the staging table, numbered from seq0.
func copyRows(ctx context.Context, tx pgx.Tx, s *stream, staged bool, seq0 int) error {
	rel := s.t.name
	if staged {
		rel = stageTable
	}
	pr, pw := io.Pipe()
	srcErr := make(chan error, 1)
	go func() { srcErr <- copySource(s, pw, staged, seq0) }()
	_, err := tx.Conn().PgConn().CopyFrom(ctx, pr, copySQL(s.t.ident(), columnNames(s.cols), staged))
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
	// The COPY's context is the outermost, last line (a jsonb input error
	// has its own before it).
	where, ok := strings.CutPrefix(pgErr.Where[strings.LastIndexByte(pgErr.Where, '\n')+1:], "COPY "+rel+", line ")
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
