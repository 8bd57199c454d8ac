package snapshot

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/shapelog/shapelog/engine/catalog"
	"github.com/shapelog/shapelog/engine/shapelog"
)

// A table with a primary key is snapshotted without holding anything in
// PostgreSQL: a snapshot is a position in the log (its ts), and a page is
// read in its own short transaction, in key order after the last key of
// the previous page, then turned back to ts with the log (rewind). The
// cursor is only the table and a key, so it survives restarts of the engine
// and of PostgreSQL for as long as the log keeps the changes after ts.

// ErrTooOld reports a snapshot ts below the log's horizon: the changes that
// would turn a page back to it are gone.
var ErrTooOld = errors.New("the log no longer holds the changes after this snapshot")

// ErrCannotRewind reports a table whose changes since the snapshot cannot be
// turned back (its primary key changed, or it is not REPLICA IDENTITY FULL).
var ErrCannotRewind = errCannotRewind

// pageRetryFor bounds how long a page waits for transactions that had
// committed before the snapshot's ts to become visible.
const pageRetryFor = 10 * time.Second

// ErrBusy reports a page that could not be read consistently in time.
var ErrBusy = errors.New("transactions logged before the snapshot are still finishing in PostgreSQL; retry shortly")

// walPosition is the WAL position a page waits for the log to reach: every
// transaction the page's snapshot saw committed before it. With
// synchronous_commit on, a commit is flushed before it becomes visible, so
// the flushed position is enough (waiting for WAL inserted but not yet
// flushed would cost up to wal_writer_delay a page). With it off (the
// database's or the server's setting), a visible commit may not be flushed
// yet: wait for the inserted position then, or the page would show a
// change the log does not have, which the deltas would then apply again.
const walPosition = "CASE WHEN current_setting('synchronous_commit') = 'off' THEN pg_current_wal_insert_lsn() ELSE pg_current_wal_flush_lsn() END::text"

// Start begins a snapshot of tables with a primary key and returns its ts
// (every transaction committed before the call is at or before it) and
// PostgreSQL's MVCC snapshot at the start, as pg_current_snapshot() prints
// it, for clients that track transaction ids (Electric's snapshot-end).
func (m *Manager) Start(ctx context.Context) (int64, string, error) {
	var snap, lsnText string
	if err := m.pool.QueryRow(ctx, "SELECT pg_current_snapshot()::text, "+walPosition).Scan(&snap, &lsnText); err != nil {
		return 0, "", fmt.Errorf("reading the WAL position: %w", err)
	}
	lsn, err := pglogrepl.ParseLSN(lsnText)
	if err != nil {
		return 0, "", err
	}
	ts, err := m.logged(ctx, uint64(lsn))
	if err != nil {
		return 0, "", err
	}
	return max(ts, m.store.Horizon()), snap, nil
}

// Where narrows a keyed read to the rows a shape selects.
type Where struct {
	SQL string // a condition on the table's columns, safe to embed in a query
	// Match is the same condition on a row of text values laid out like
	// the table's columns; restored rows are filtered with it.
	Match func(values [][]byte) (bool, error)
}

// logged waits until every transaction that committed before lsn is
// durable in the log, and returns the log's durable ts.
func (m *Manager) logged(ctx context.Context, lsn uint64) (int64, error) {
	if err := m.repl.WaitProcessed(ctx, lsn); err != nil {
		return 0, err
	}
	written := m.store.Written().Ts
	for {
		ch := m.store.Advanced()
		if d := m.store.Durable().Ts; d >= written {
			return d, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// Page is one page of a table, as of a snapshot.
type Page struct {
	Prepared any      // the rows, as the Prepare function made them
	Last     []string // the key of the last row read: the next page follows it
	// After is, in a held snapshot of a table without a primary key, the
	// position (ctid) of the last row read.
	After string
	// Exhausted means no page follows.
	Exhausted bool
}

// Keyed reports whether t's snapshots are positions in the log, read in key
// order and rewound: it has a primary key checked row by row. Under a
// DEFERRABLE key a row can arrive at a key before the key's old row leaves
// (UPDATE t SET id = id + 1 logs 1→2 before 2→3), so a key's first change
// after ts no longer tells what it held at ts; such tables, like those
// without a key, are read from a held snapshot.
func Keyed(t *catalog.Table) bool { return len(t.Key) > 0 && !t.DeferrableKey }

// KeyRange is a range of primary keys, in the table's key order: after
// After (nil: from the start) up to and including Until (nil: to the end).
// Keys are the columns' text values.
type KeyRange struct {
	After, Until []string
}

// from is the rest of r after key last.
func (r KeyRange) from(last []string) KeyRange {
	return KeyRange{After: last, Until: r.Until}
}

// ReadKeyed returns up to about limit rows of table t (which has a primary
// key) in key range r as they were at ts, prepared with prepare, narrowed
// by where when given. Restored rows may take a page over limit; the page
// is Exhausted at the end of the range. While the caller serves it, the
// next pages are read ahead (reused when the next call passes the same
// range).
func (m *Manager) ReadKeyed(ctx context.Context, t *catalog.Table, ts int64, r KeyRange, limit int, where *Where, key string, prepare Prepare) (*Page, error) {
	if !Keyed(t) {
		return nil, fmt.Errorf("table %s.%s has no primary key checked row by row", t.Schema, t.Name)
	}
	if ts < m.store.Horizon() {
		return nil, ErrTooOld
	}
	id := aheadID(ts, t, r, limit, where, key)
	p, err := m.takeAhead(ctx, id)
	if p == nil && err == nil {
		p, err = m.readPage(ctx, t, ts, r, limit, where, prepare, func(next KeyRange) {
			m.readAhead(t, ts, next, limit, where, key, prepare)
		})
	}
	if err != nil {
		return nil, err
	}
	if !p.Exhausted {
		m.readAhead(t, ts, r.from(p.Last), limit, where, key, prepare)
	}
	return p, nil
}

// rowsRead is a page as PostgreSQL returned it: the rows' values back to
// back in arena, each value's span in spans (start, end; start -1: NULL).
type rowsRead struct {
	snap  *mvcc
	lsn   uint64
	ncols int
	arena []byte
	spans []int32
	// the page as prepared while it streamed in
	add      func([][]byte) error
	done     func() (any, error)
	addErr   error
	rowCount int
}

func (rr *rowsRead) rows() int { return rr.rowCount }

// key returns row i's primary key.
func (rr *rowsRead) key(i int, t *catalog.Table) []string {
	row := make([][]byte, rr.ncols)
	rr.row(i, row)
	k := make([]string, len(t.Key))
	for j, c := range t.Key {
		k[j] = string(row[c])
	}
	return k
}

// rowBuffers recycles the pages' arenas: a page's rows are copied into one,
// and growing a fresh one page after page cost a fifth of the engine's CPU.
var rowBuffers = sync.Pool{New: func() any { return &rowsRead{} }}

// release returns rr's buffers for another page.
func (rr *rowsRead) release() {
	*rr = rowsRead{arena: rr.arena[:0], spans: rr.spans[:0]}
	rowBuffers.Put(rr)
}

// row lays row i's values into dst (len ncols); they alias the arena.
func (rr *rowsRead) row(i int, dst [][]byte) {
	sp := rr.spans[2*i*rr.ncols:]
	for j := range rr.ncols {
		if a := sp[2*j]; a >= 0 {
			b := sp[2*j+1]
			dst[j] = rr.arena[a:b:b]
		} else {
			dst[j] = nil
		}
	}
}

// readPage reads the first page of range r and rewinds it to ts. Once the
// rows are in, and before the wait for the log and the rewind, it calls
// next with the range the following page reads (unless this is the last
// page), so that the following page's query can run meanwhile.
func (m *Manager) readPage(ctx context.Context, t *catalog.Table, ts int64, r KeyRange, limit int, where *Where, prepare Prepare, next func(KeyRange)) (*Page, error) {
	deadline := time.Now().Add(pageRetryFor)
	for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		rr, err := m.queryPage(ctx, t, r, limit, where, prepare)
		if err != nil {
			return nil, err
		}
		if n := rr.rows(); n == limit && next != nil {
			next(r.from(rr.key(n-1, t)))
		}
		upTo, err := m.logged(ctx, rr.lsn)
		if err != nil {
			return nil, err
		}
		missed, err := rr.snap.missesLoggedUpTo(m.store, ts)
		if err != nil {
			return nil, err
		}
		if !missed {
			p, err := m.rewindPage(ctx, t, ts, r, limit, where, rr, upTo, prepare)
			rr.release()
			return p, err
		}
		rr.release()
		if time.Now().After(deadline) {
			return nil, ErrBusy
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// queryPage reads the first rows of range r in key order in one short
// transaction, with the MVCC snapshot it read them by and the WAL position
// after it. Rows are prepared as they arrive (most pages need no rewind)
// and kept, in case the rewind changes the page.
func (m *Manager) queryPage(ctx context.Context, t *catalog.Table, r KeyRange, limit int, where *Where, prepare Prepare) (*rowsRead, error) {
	cols := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		cols[i] = pgx.Identifier{c.Name}.Sanitize()
	}
	keys := make([]string, len(t.Key))
	for i, k := range t.Key {
		keys[i] = cols[k]
	}
	q := "SELECT " + strings.Join(cols, ", ") + " FROM " + pgx.Identifier{t.Schema, t.Name}.Sanitize()
	var values [][]byte
	var oids []uint32
	var conds []string
	// bound compares the key with a key passed as parameters.
	bound := func(op string, key []string) {
		params := make([]string, len(key))
		for i, v := range key {
			values = append(values, []byte(v))
			oids = append(oids, t.Columns[t.Key[i]].Type.OID)
			params[i] = fmt.Sprintf("$%d", len(values))
		}
		conds = append(conds, "("+strings.Join(keys, ", ")+") "+op+" ("+strings.Join(params, ", ")+")")
	}
	if r.After != nil {
		bound(">", r.After)
	}
	if r.Until != nil {
		bound("<=", r.Until)
	}
	if where != nil {
		conds = append(conds, "("+where.SQL+")")
	}
	if len(conds) > 0 {
		q += " WHERE " + strings.Join(conds, " AND ")
	}
	q += fmt.Sprintf(" ORDER BY %s LIMIT %d", strings.Join(keys, ", "), limit)

	conn, err := m.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquiring a snapshot connection: %w", err)
	}
	defer conn.Release()
	// One round trip, one implicit transaction: the connection's default
	// isolation is REPEATABLE READ, so both statements share one snapshot.
	b := &pgconn.Batch{}
	b.ExecParams("SELECT pg_current_snapshot()::text, "+walPosition, nil, nil, nil, nil)
	b.ExecParams(q, values, oids, nil, nil)
	mrr := conn.Conn().PgConn().ExecBatch(ctx, b)
	rr := rowBuffers.Get().(*rowsRead)
	rr.ncols = len(t.Columns)
	rr.add, rr.done = prepare()
	var snapText, lsnText string
	if mrr.NextResult() {
		res := mrr.ResultReader()
		for res.NextRow() {
			snapText, lsnText = string(res.Values()[0]), string(res.Values()[1])
		}
		if _, err := res.Close(); err != nil {
			_ = mrr.Close()
			rr.release()
			return nil, err
		}
	}
	if mrr.NextResult() {
		res := mrr.ResultReader()
		for res.NextRow() {
			vals := res.Values()
			for _, v := range vals {
				if v == nil {
					rr.spans = append(rr.spans, -1, -1)
					continue
				}
				rr.spans = append(rr.spans, int32(len(rr.arena)), int32(len(rr.arena)+len(v)))
				rr.arena = append(rr.arena, v...)
			}
			if rr.addErr == nil {
				rr.addErr = rr.add(vals)
			}
			rr.rowCount++
		}
		if _, err := res.Close(); err != nil {
			_ = mrr.Close()
			rr.release()
			return nil, err
		}
	}
	if err := mrr.Close(); err != nil {
		rr.release()
		return nil, err
	}
	lsn, err := pglogrepl.ParseLSN(lsnText)
	if err == nil {
		rr.snap, err = parseMVCC(snapText)
	}
	if err != nil {
		rr.release()
		return nil, err
	}
	rr.lsn = uint64(lsn)
	return rr, nil
}

type rewindID struct {
	ts  int64
	oid uint32
	key string // key column names
}

// rewindFor returns the table's rewind index for ts, indexed up to upTo.
func (m *Manager) rewindFor(ctx context.Context, t *catalog.Table, ts, upTo int64) (*rewind, error) {
	id := rewindID{ts: ts, oid: t.OID, key: strings.Join(keyColumnNames(t), "\x00")}
	m.mu.Lock()
	rw := m.rewinds[id]
	if rw == nil {
		rw = newRewind(ts, t)
		m.rewinds[id] = rw
	}
	m.mu.Unlock()
	rw.mu.Lock()
	defer rw.mu.Unlock()
	rw.lastUsed = time.Now()
	if rw.order == nil {
		o, err := loadKeyOrder(ctx, m.pool, t)
		if err != nil {
			return nil, err
		}
		rw.order = o
	}
	if err := rw.catchUp(m.store, upTo); err != nil {
		if errors.Is(err, shapelog.ErrExpired) {
			return nil, ErrTooOld
		}
		return nil, err
	}
	return rw, nil
}

// rewindPage turns a page of range r read by rr back to ts and prepares
// it.
func (m *Manager) rewindPage(ctx context.Context, t *catalog.Table, ts int64, r KeyRange, limit int, where *Where, rr *rowsRead, upTo int64, prepare Prepare) (*Page, error) {
	after := r.After
	p := &Page{Exhausted: rr.rows() < limit, Last: after}
	if n := rr.rows(); n > 0 {
		p.Last = rr.key(n-1, t)
	}
	row := make([][]byte, rr.ncols)
	rw, err := m.rewindFor(ctx, t, ts, upTo)
	if err != nil {
		return nil, err
	}
	// Which rows the page's snapshot saw change since ts: their first
	// change's image replaces them (none: the row was not there). The page
	// covers the keys in (after, last]: up to its last row's, or, the last
	// page of the range, up to the range's end (Until; nil: the table's). A
	// row removed since ts thus comes back in exactly one page, of exactly
	// one range.
	last := p.Last
	if p.Exhausted {
		last = r.Until
	}
	rw.mu.Lock()
	seg := rw.segmentFor(rr.snap)
	var replaced map[int]*firstChange
	var inPage map[string]bool
	cands, exact := seg.gone.between(rw.order, after, last)
	if where != nil {
		// An update may have moved a row out of the where clause: it is not
		// in the page but was in the shape at ts.
		updated, _ := seg.updated.between(rw.order, after, last)
		cands = append(slices.Clip(cands), updated...)
	}
	if len(seg.first) > 0 {
		if len(cands) > 0 {
			inPage = make(map[string]bool, rr.rows())
		}
		var keyBuf []byte
		keyVals := make([][]byte, len(t.Key))
		for i := range rr.rows() {
			rr.row(i, row)
			for j, k := range t.Key {
				keyVals[j] = row[k]
			}
			keyBuf = encodeKey(keyBuf[:0], keyVals)
			if inPage != nil {
				inPage[string(keyBuf)] = true
			}
			if fc := seg.first[string(keyBuf)]; fc != nil && rr.snap.sees(fc.xid) {
				if replaced == nil {
					replaced = map[int]*firstChange{}
				}
				replaced[i] = fc
			}
		}
	}
	// Rows removed since ts (deleted, moved to another key, or out of the
	// where clause) whose key falls in this page's range come back too.
	var restore, gone []*firstChange
	var keyBuf []byte
	keyVals := make([][]byte, len(t.Key))
	seen := map[*firstChange]bool{}
	for _, fc := range cands {
		if seen[fc] {
			continue // updated in place, then removed: in both lists
		}
		seen[fc] = true
		for j, v := range fc.key {
			keyVals[j] = []byte(v)
		}
		keyBuf = encodeKey(keyBuf[:0], keyVals)
		if !inPage[string(keyBuf)] && rr.snap.sees(fc.xid) {
			gone = append(gone, fc)
		}
	}
	order := rw.order
	rw.mu.Unlock()
	if exact {
		restore = gone
	} else if len(gone) > 0 {
		keys := make([][]string, len(gone))
		for i, fc := range gone {
			keys[i] = fc.key
		}
		in, err := order.inRange(ctx, m.pool, keys, after, last)
		if err != nil {
			return nil, err
		}
		for i, fc := range gone {
			if in[i] {
				restore = append(restore, fc)
			}
		}
	}
	if len(replaced) == 0 && len(restore) == 0 {
		// The page as it streamed in is the table at ts.
		if rr.addErr != nil {
			return nil, rr.addErr
		}
		p.Prepared, err = rr.done()
		return p, err
	}
	add, done := prepare()
	for i := range rr.rows() {
		fc := replaced[i]
		if fc == nil {
			rr.row(i, row)
			if err := add(row); err != nil {
				return nil, err
			}
		} else if fc.image != imageNone {
			restore = append(restore, fc)
		}
	}
	for _, fc := range restore {
		img, err := imageIn(m.store, t, fc)
		if err != nil {
			return nil, err
		}
		if where != nil {
			// A runtime error (a division by zero) excludes the row, as it
			// does for the shape's changes.
			if ok, err := where.Match(img); err != nil || !ok {
				continue
			}
		}
		if err := add(img); err != nil {
			return nil, err
		}
	}
	p.Prepared, err = done()
	return p, err
}

// DefaultStatementTimeout is how long one snapshot query (a page) may run
// unless Config.StatementTimeout says otherwise.
const DefaultStatementTimeout = 5 * time.Minute

// bounded makes a snapshot connection's queries cheap to stop: no JIT
// compilation (a large where clause could spend minutes in LLVM, deaf to
// cancellation), a statement_timeout, and a cancel request as soon as the
// caller's context ends, so that the query stops and the connection stays
// usable (pgx's default closes the connection).
func bounded(c *pgconn.Config, cfg Config) {
	timeout := cfg.StatementTimeout
	if timeout <= 0 {
		timeout = DefaultStatementTimeout
	}
	c.RuntimeParams["jit"] = "off"
	c.RuntimeParams["statement_timeout"] = strconv.FormatInt(timeout.Milliseconds(), 10)
	c.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, CancelRequestDelay: 0, DeadlineDelay: 2 * time.Second}
	}
}

// newPagePool opens the pool that pages of keyed tables are read through.
func newPagePool(cfg Config) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, err
	}
	pc.MaxConns = int32(cfg.PageConns)
	pc.MinConns = 0
	pc.MaxConnIdleTime = time.Minute
	rp := pc.ConnConfig.RuntimeParams
	for k, v := range catalog.SessionSettings {
		rp[k] = v
	}
	rp["default_transaction_isolation"] = "repeatable read"
	rp["default_transaction_read_only"] = "on"
	rp["application_name"] = "shapelog snapshot pages"
	bounded(&pc.ConnConfig.Config, cfg)
	if cfg.Lookup != nil {
		pc.ConnConfig.LookupFunc = cfg.Lookup
	}
	return pgxpool.NewWithConfig(context.Background(), pc)
}
