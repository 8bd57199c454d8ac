package importer

import (
	"context"
	"errors"
	"io"

	"github.com/jackc/pgx/v5"
)

// live copies a request's records into PostgreSQL while the rest of the
// body is still being read and checked, so parsing (the engine's cores)
// and COPY (PostgreSQL's) overlap instead of taking turns.
//
// The request's transaction opens at its first record; one stream at a
// time can be copied (a connection runs one COPY), the first whose every
// column is declared by its jsonSchema, with the types evolve gives them
// before the first row. Its records are rendered and sent as they are
// checked. A record with a field the schema does not declare (a column
// whose type depends on values still to come) ends the copying for that
// stream: it and every later record of the stream are spooled, and loaded
// after the body, as are the other streams' records, with the new columns
// added (rows already copied have NULL there, as they lack the field).
//
// A dedup stream is copied straight into its table, under a savepoint,
// while its records are also spooled: when the keys are new (a first sync,
// an append-mostly stream) that is the whole load, at the cost of an
// append. A record that deletes, a key seen twice, a new column or a COPY
// failure (a key already in the table) abandons it: the savepoint is rolled
// back and the spooled records go through the staging table and the merge.
// A table whose copy was abandoned skips it for its next requests (see
// merge): change streams delete or update in most batches.
//
// Nothing is committed before the whole body has been checked: an invalid
// record rolls everything back, and it is reported before any failure of
// the load (a value PostgreSQL refused, a missing index), as when loading
// only started after parsing.
type live struct {
	im      *Importer
	ctx     context.Context
	idemKey string

	begun bool
	tx    pgx.Tx
	dup   bool  // the idempotency key was seen: nothing is written
	err   error // the first failure of the load, reported if the body is valid

	s      *stream // the stream being copied
	ncols  int     // its columns when copying started
	staged bool
	// direct: a dedup stream copied into its table and spooled as well;
	// abandoned once the copy cannot stand (see live).
	direct, abandoned bool
	rel               string   // the relation COPY names in errors
	others            []string // the table's columns the stream lacks
	n                 int      // records copied
	idx               []int32  // their message indexes
	pw                *io.PipeWriter
	rows              *rowWriter
	done              chan error // the COPY's outcome
	vals              []*field
}

var errAborted = errors.New("import aborted")

// canCopyLive says whether a stream's records can be copied as they come:
// it has columns and the jsonSchema declares the type of every one.
func canCopyLive(s *stream) bool {
	if len(s.cols) == 0 {
		return false
	}
	for i := range s.cols {
		if !s.cols[i].declared {
			return false
		}
	}
	return true
}

// add is live's recordSink: it copies a record when it can and spools it
// otherwise.
func (l *live) add(r *request, s *stream, deleted bool, fields []field, msg int) error {
	if l.copy(r, s, deleted, fields, msg) {
		return nil
	}
	return s.keep(deleted, fields, msg)
}

// copy takes one checked record whose fields have their columns; false
// leaves it to the spool.
func (l *live) copy(r *request, s *stream, deleted bool, fields []field, msg int) bool {
	if !l.begun {
		l.begin(r)
	}
	if l.err != nil || l.dup {
		return true // the request writes nothing: no need to keep records
	}
	if l.s == nil {
		if s.spool.n > 0 || !canCopyLive(s) {
			return false
		}
		if err := l.start(s); err != nil {
			l.fail(err)
			return true
		}
	}
	if l.direct {
		if s == l.s && !l.abandoned {
			if deleted || !s.keys.plain() || newColumn(fields, l.ncols) || !l.write(s, deleted, fields, msg) {
				l.abandon()
			}
		}
		return false // spooled as well, for the merge if the copy is abandoned
	}
	if s != l.s || s.spool.n > 0 || newColumn(fields, l.ncols) {
		return false // a new column: this and later records are spooled
	}
	if !l.write(s, deleted, fields, msg) {
		l.fail(l.endCopy()) // the COPY failed: its error says why
	}
	return true
}

// newColumn reports whether a record has a field without a column when
// copying started.
func newColumn(fields []field, ncols int) bool {
	for _, f := range fields {
		if f.col >= ncols {
			return true
		}
	}
	return false
}

// write sends one record to the COPY; false when the COPY failed.
func (l *live) write(s *stream, deleted bool, fields []field, msg int) bool {
	for i := range l.vals {
		l.vals[i] = nil
	}
	for i := range fields {
		l.vals[fields[i].col] = &fields[i]
	}
	if err := l.rows.row(s, l.staged, l.n, deleted, l.vals, int32(msg)); err != nil {
		var ie *Error
		if errors.As(err, &ie) {
			l.fail(err)
			return true
		}
		return false
	}
	l.n++
	l.idx = append(l.idx, int32(msg))
	return true
}

// abandon stops copying a dedup stream into its table; finish rolls the
// copy back and merges the spooled records.
func (l *live) abandon() {
	l.abandoned = true
	if l.pw != nil {
		l.pw.CloseWithError(errAborted)
		l.pw = nil
		<-l.done // the COPY's error: the merge will say what is wrong, if anything
	}
}

func (l *live) begin(r *request) {
	l.begun = true
	tx, dup, err := l.im.begin(l.ctx, r.sortedStreams(), l.idemKey)
	if err != nil {
		l.err = err
		return
	}
	l.tx, l.dup = tx, dup
}

// fail records the load's first failure and stops copying.
func (l *live) fail(err error) {
	if err == nil {
		err = errAborted
	}
	if l.err == nil {
		l.err = err
	}
	if l.pw != nil {
		_ = l.endCopyWith(err)
	}
}

// start prepares s's table (created, evolved, indexed, a staging table
// for dedup) and opens the COPY its records go through.
func (l *live) start(s *stream) error {
	ctx, tx := l.ctx, l.tx
	others, err := l.im.prepareTable(ctx, tx, s)
	if err != nil {
		return err
	}
	if _, err := s.isEmpty(ctx, tx); err != nil { // before any row lands
		return during(err, "checking whether %s is empty", s.t.ident())
	}
	var sql string
	if s.key != nil && l.im.tryInsertFirst(s.t.ident()) {
		if _, err := tx.Exec(ctx, "SAVEPOINT _shapelog_direct"); err != nil {
			return during(err, "starting the direct copy into %s", s.t.ident())
		}
		l.direct = true
	}
	if s.key == nil || l.direct {
		sql, l.rel = copySQL(s.t.ident(), columnNames(s.cols), false), s.t.name
	} else {
		if _, err := tx.Exec(ctx, stageTableSQL(s.cols)); err != nil {
			return during(err, "creating the staging table for %s", s.t.ident())
		}
		sql, l.rel, l.staged = copySQL("", columnNames(s.cols), true), stageTable, true
	}
	l.s, l.ncols, l.others = s, len(s.cols), others
	l.vals = make([]*field, l.ncols)
	pr, pw := io.Pipe()
	l.pw, l.rows, l.done = pw, newRowWriter(pw), make(chan error, 1)
	conn := tx.Conn().PgConn()
	go func() {
		_, err := conn.CopyFrom(ctx, pr, sql)
		pr.CloseWithError(errAborted) // unblocks a writer when the COPY failed
		l.done <- err
	}()
	return nil
}

// endCopy ends the COPY with the rows sent and returns its outcome.
func (l *live) endCopy() error {
	if l.pw == nil {
		return nil
	}
	return l.endCopyWith(l.rows.flush())
}

// endCopyRaw ends the COPY with the rows sent and returns PostgreSQL's
// error as it is.
func (l *live) endCopyRaw() error {
	if l.pw == nil {
		return nil
	}
	err := l.rows.flush()
	if err != nil {
		l.pw.CloseWithError(err)
	} else {
		l.pw.Close()
	}
	l.pw = nil
	if copyErr := <-l.done; copyErr != nil {
		return copyErr
	}
	return err
}

// finishDirect keeps a dedup stream copied straight into its table, or
// rolls it back and loads the spooled records through the merge.
func (l *live) finishDirect(ctx context.Context, tx pgx.Tx, s *stream) error {
	if !l.abandoned && s.keys.plain() && len(s.cols) == l.ncols {
		_, err := tx.Exec(ctx, "RELEASE SAVEPOINT _shapelog_direct")
		return during(err, "keeping the direct copy into %s", s.t.ident())
	}
	// A key already there, a delete or a repeated key: the next requests
	// (change streams send those in every batch) go straight to the merge.
	l.im.pauseInsertFirst(s.t.ident())
	if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT _shapelog_direct"); err != nil {
		return during(err, "rolling back the direct copy into %s", s.t.ident())
	}
	return l.im.loadStream(ctx, tx, s, false) // the copy was the insert attempt
}

// endCopyWith closes the COPY's input (with cause: aborting it) and waits
// for its outcome, explained by record when PostgreSQL refused a value.
func (l *live) endCopyWith(cause error) error {
	if l.pw == nil {
		return nil
	}
	if cause != nil {
		l.pw.CloseWithError(cause)
	} else {
		l.pw.Close()
	}
	l.pw = nil
	if err := <-l.done; err != nil {
		return during(copyFailure(l.s, l.rel, err, l.idx), "copying into %s", l.s.t.ident())
	}
	return nil
}

// abort rolls back whatever finish did not commit.
func (l *live) abort() {
	if l.pw != nil {
		_ = l.endCopyWith(errAborted)
	}
	if l.tx != nil {
		_ = l.tx.Rollback(context.Background())
		l.tx = nil
	}
}

// finish loads what was not copied and commits; called once the whole body
// has been read and checked.
func (l *live) finish(req *request, bodySum []byte) (duplicate bool, err error) {
	if !l.begun {
		l.begin(req)
	}
	if l.direct {
		if err := l.endCopyRaw(); err != nil {
			l.abandoned = true
		}
	} else if err := l.endCopy(); err != nil && l.err == nil {
		l.err = err
	}
	if l.err != nil {
		return false, l.err
	}
	ctx, tx := l.ctx, l.tx
	if l.dup {
		return true, sameBody(ctx, tx, l.idemKey, bodySum)
	}
	if s := l.s; s != nil && l.direct {
		if err := l.finishDirect(ctx, tx, s); err != nil {
			return false, err
		}
	} else if s != nil {
		if err := l.finishLive(ctx, tx, s); err != nil {
			return false, err
		}
	}
	for _, s := range req.sortedStreams() {
		if s == l.s {
			continue
		}
		insertFirst := s.key != nil && s.spool.n > 0 && s.keys.plain() && l.im.tryInsertFirst(s.t.ident())
		if err := l.im.loadStream(ctx, tx, s, insertFirst); err != nil {
			return false, err
		}
	}
	if l.idemKey != "" {
		if _, err := tx.Exec(ctx, `UPDATE `+metaSchema+`.import_keys SET body_sha256 = $2 WHERE key = $1`, l.idemKey, bodySum); err != nil {
			return false, during(err, "recording idempotency key")
		}
	}
	err = tx.Commit(ctx)
	l.tx = nil
	return false, during(explain(err), "committing the import")
}

// finishLive loads the copied stream's spooled records, with the columns
// they added, and merges the staged records of a dedup stream.
func (l *live) finishLive(ctx context.Context, tx pgx.Tx, s *stream) error {
	if s.spool.n > 0 || len(s.cols) > l.ncols {
		others, err := evolve(ctx, tx, s)
		if err != nil {
			return during(err, "evolving table %s", s.t.ident())
		}
		l.others = others
		if l.staged {
			for _, c := range s.cols[l.ncols:] {
				if _, err := tx.Exec(ctx, addColumnSQL(stageTable, c.name, c.typ)); err != nil {
					return during(explain(err), "adding column %s to the staging table for %s", c.name, s.t.ident())
				}
			}
		}
		if s.spool.n > 0 {
			if err := copyRows(ctx, tx, s, l.staged, l.n); err != nil {
				return during(err, "copying into %s", s.t.ident())
			}
		}
	}
	if !l.staged {
		return nil
	}
	return l.im.mergeStaged(ctx, tx, s, l.others, false) // not copied directly: tryInsertFirst said no
}
