package importer

import (
	"bufio"
	"context"
	"errors"
	"io"
	"strings"

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
	bw                *bufio.Writer
	done              chan error // the COPY's outcome
	line              []byte
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

// add takes one checked record whose fields have their columns; false
// leaves it to the spool.
func (l *live) add(r *request, s *stream, deleted bool, fields []field, msg int) bool {
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
	var err error
	if l.line, err = copyLine(l.line[:0], s, l.staged, l.n, deleted, l.vals, int32(msg)); err != nil {
		l.fail(err)
		return true
	}
	if _, err := l.bw.Write(l.line); err != nil {
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
	if _, err := createSchemaTable(ctx, tx, s.t, s.cols); err != nil {
		return err
	}
	if _, err := s.isEmpty(ctx, tx); err != nil { // before any row lands
		return err
	}
	others, err := evolve(ctx, tx, s)
	if err != nil {
		return err
	}
	if s.key != nil {
		if err := l.im.ensureKeyIndex(ctx, tx, s); err != nil {
			return err
		}
	}
	list := columnList(s.cols)
	var sql string
	if s.key != nil && l.im.tryInsertFirst(s.t.ident()) {
		if _, err := tx.Exec(ctx, "SAVEPOINT _shapelog_direct"); err != nil {
			return err
		}
		l.direct = true
	}
	if s.key == nil || l.direct {
		sql, l.rel = "COPY "+s.t.ident()+" ("+list+") FROM STDIN", s.t.name
	} else {
		defs := []string{"_shapelog_seq bigint", "_shapelog_deleted boolean"}
		for _, c := range s.cols {
			defs = append(defs, pgx.Identifier{c.name}.Sanitize()+" "+c.typ)
		}
		if _, err := tx.Exec(ctx, "CREATE TEMP TABLE _shapelog_stage ("+strings.Join(defs, ", ")+") ON COMMIT DROP"); err != nil {
			return err
		}
		sql, l.rel, l.staged = "COPY _shapelog_stage (_shapelog_seq, _shapelog_deleted, "+list+") FROM STDIN", "_shapelog_stage", true
	}
	l.s, l.ncols, l.others = s, len(s.cols), others
	l.vals = make([]*field, l.ncols)
	pr, pw := io.Pipe()
	l.pw, l.bw, l.done = pw, bufio.NewWriterSize(pw, 64<<10), make(chan error, 1)
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
	err := l.bw.Flush()
	if err != nil {
		return l.endCopyWith(err)
	}
	return l.endCopyWith(nil)
}

// endCopyRaw ends the COPY with the rows sent and returns PostgreSQL's
// error as it is.
func (l *live) endCopyRaw() error {
	if l.pw == nil {
		return nil
	}
	err := l.bw.Flush()
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
		return err
	}
	// A key already there, a delete or a repeated key: the next requests
	// (change streams send those in every batch) go straight to the merge.
	l.im.pauseInsertFirst(s.t.ident())
	if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT _shapelog_direct"); err != nil {
		return err
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
	err := <-l.done
	if err != nil {
		return copyFailure(l.s, l.rel, err, l.idx)
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
func (l *live) finish(req *request) (duplicate bool, err error) {
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
	if l.dup {
		return true, nil
	}
	ctx, tx := l.ctx, l.tx
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
	err = tx.Commit(ctx)
	l.tx = nil
	return false, explain(err)
}

// finishLive loads the copied stream's spooled records, with the columns
// they added, and merges the staged records of a dedup stream.
func (l *live) finishLive(ctx context.Context, tx pgx.Tx, s *stream) error {
	if s.spool.n > 0 || len(s.cols) > l.ncols {
		others, err := evolve(ctx, tx, s)
		if err != nil {
			return err
		}
		l.others = others
		if l.staged {
			for _, c := range s.cols[l.ncols:] {
				if _, err := tx.Exec(ctx, "ALTER TABLE _shapelog_stage ADD COLUMN "+pgx.Identifier{c.name}.Sanitize()+" "+c.typ); err != nil {
					return explain(err)
				}
			}
		}
		list := columnList(s.cols)
		if s.spool.n > 0 {
			if !l.staged {
				err = copyRows(ctx, tx, s, s.t.name, "COPY "+s.t.ident()+" ("+list+") FROM STDIN", false, 0)
			} else {
				err = copyRows(ctx, tx, s, "_shapelog_stage", "COPY _shapelog_stage (_shapelog_seq, _shapelog_deleted, "+list+") FROM STDIN", true, l.n)
			}
			if err != nil {
				return err
			}
		}
	}
	if !l.staged {
		return nil
	}
	cols := make([]string, len(s.cols))
	for i, c := range s.cols {
		cols[i] = pgx.Identifier{c.name}.Sanitize()
	}
	if err := l.im.merge(ctx, tx, s, cols, l.others, false); err != nil { // not copied directly: tryInsertFirst said no
		return err
	}
	_, err := tx.Exec(ctx, "DROP TABLE _shapelog_stage")
	return err
}

// columnList is the quoted, comma-separated names of cols.
func columnList(cols []column) string {
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = pgx.Identifier{c.name}.Sanitize()
	}
	return strings.Join(names, ", ")
}
