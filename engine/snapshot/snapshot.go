// Package snapshot takes consistent snapshots of published tables and pages
// through them, so that a snapshot plus the changes after its ts (the shape
// log) is exactly the table: nothing lost, nothing twice.
//
// Tables with a primary key (keyed.go) hold nothing in PostgreSQL between
// pages: a snapshot is a ts in the log, and each page is read in its own
// short transaction and turned back to ts with the log.
//
// Tables without one have no stable order to continue from, so they keep a
// held snapshot (this file): a temporary logical replication slot created
// with EXPORT_SNAPSHOT, whose consistent point is a single LSN, imported
// into a REPEATABLE READ transaction on a dedicated connection that stays
// open while clients page through it (like pg_dump, it holds back vacuum
// for that time). It is lost with the connection or an engine restart, and
// closed after IdleTimeout.
package snapshot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/shapelog/shapelog/engine/catalog"
	"github.com/shapelog/shapelog/engine/shapelog"
)

// ErrTooMany reports that the concurrent-snapshot limit is reached.
var ErrTooMany = errors.New("too many snapshots in progress; retry shortly")

// ErrGone reports a snapshot that is no longer held (expired, finished long
// ago, or lost with its connection or an engine restart).
var ErrGone = errors.New("snapshot is no longer available")

// Config tunes the manager.
type Config struct {
	DatabaseURL string
	// MaxSessions bounds concurrent held snapshots (tables without a
	// primary key; each holds a connection).
	MaxSessions int
	// PageConns bounds the connections pages of keyed tables are read
	// through; more readers wait their turn.
	PageConns int
	// IdleTimeout closes snapshots nobody has read for this long.
	IdleTimeout time.Duration
	// StatementTimeout bounds each query a snapshot runs (one page);
	// DefaultStatementTimeout when zero.
	StatementTimeout time.Duration
	// Lookup resolves host names (nil: the default resolver).
	Lookup pgconn.LookupFunc
}

// Positioner is what the manager needs from replication: a way to wait until
// every transaction before an LSN is in the log.
type Positioner interface {
	WaitProcessed(ctx context.Context, lsn uint64) error
}

// Manager hands out snapshot sessions.
type Manager struct {
	cfg   Config
	store *shapelog.Store
	repl  Positioner
	log   zerolog.Logger

	pool   *pgxpool.Pool // pages of keyed tables
	runCtx context.Context

	mu       sync.Mutex
	sessions map[string]*Session
	rewinds  map[rewindID]*rewind
	ahead    map[string]*ahead
	chains   map[string]int // pages read ahead per reader
	aheadWG  sync.WaitGroup
	closing  bool
}

// NewManager creates a manager; Run expires idle sessions.
func NewManager(cfg Config, store *shapelog.Store, repl Positioner, log zerolog.Logger) (*Manager, error) {
	if cfg.MaxSessions == 0 {
		cfg.MaxSessions = 16
	}
	if cfg.PageConns == 0 {
		cfg.PageConns = 4
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 10 * time.Minute
	}
	pool, err := newPagePool(cfg)
	if err != nil {
		return nil, err
	}
	return &Manager{cfg: cfg, store: store, repl: repl, log: log.With().Str("component", "snapshot").Logger(), pool: pool,
		runCtx: context.Background(), sessions: map[string]*Session{}, rewinds: map[rewindID]*rewind{}, ahead: map[string]*ahead{}, chains: map[string]int{}}, nil
}

const (
	savepoint  = "shapelog_table"
	cursorName = "shapelog_snapshot" // the portal a table is read through
)

// Session is one open snapshot.
type Session struct {
	ID     string
	Ts     int64 // the snapshot's timestamp: deltas after it continue it exactly
	Tables []*catalog.Table

	m        *Manager
	mu       sync.Mutex
	conn     *pgx.Conn
	lastUsed time.Time
	closed   bool
	// the open server-side cursor: table index and last ctid fetched
	cursorTable int
	cursorAt    string
	ahead       *readAhead // pages being read ahead, if any
}

// Begin takes a new snapshot of tables (in the order given).
func (m *Manager) Begin(ctx context.Context, tables []*catalog.Table) (*Session, error) {
	id, err := m.reserve()
	if err != nil {
		return nil, err
	}
	s, err := m.begin(ctx, id, tables)
	m.mu.Lock()
	if err != nil {
		delete(m.sessions, id)
	} else {
		m.sessions[id] = s
	}
	m.mu.Unlock()
	return s, err
}

// reserve takes a session slot (nil until the snapshot is taken).
func (m *Manager) reserve() (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.sessions) >= m.cfg.MaxSessions {
		return "", ErrTooMany
	}
	id := newID()
	m.sessions[id] = nil
	return id, nil
}

// With takes a consistent snapshot and calls fn inside its REPEATABLE READ
// transaction with the snapshot's ts: fn sees exactly the transactions
// logged at or before ts. It counts against MaxSessions while fn runs.
func (m *Manager) With(ctx context.Context, fn func(ctx context.Context, conn *pgx.Conn, ts int64) error) error {
	id, err := m.reserve()
	if err != nil {
		return err
	}
	defer func() {
		m.mu.Lock()
		delete(m.sessions, id)
		m.mu.Unlock()
	}()
	conn, ts, err := m.open(ctx, id)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return fn(ctx, conn, ts)
}

func (m *Manager) begin(ctx context.Context, id string, tables []*catalog.Table) (*Session, error) {
	conn, ts, err := m.open(ctx, id)
	if err != nil {
		return nil, err
	}
	// Tables are read inside a savepoint; rolling back to it when a table is
	// done releases that table's lock (so TRUNCATE and ALTER TABLE are not
	// blocked by a finished table) while the transaction keeps the snapshot.
	if _, err := conn.Exec(ctx, "SAVEPOINT "+savepoint); err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	m.log.Debug().Str("snapshot", id).Int("tables", len(tables)).Msg("snapshot session opened")
	return &Session{ID: id, Ts: ts, Tables: tables, m: m, conn: conn, lastUsed: time.Now(), cursorTable: -1}, nil
}

// open takes a consistent snapshot: a connection in a REPEATABLE READ READ
// ONLY transaction that holds it, and the snapshot's ts.
func (m *Manager) open(ctx context.Context, id string) (*pgx.Conn, int64, error) {
	started := time.Now()
	rcfg, err := pgconn.ParseConfig(m.cfg.DatabaseURL)
	if err != nil {
		return nil, 0, err
	}
	rcfg.RuntimeParams["replication"] = "database"
	if m.cfg.Lookup != nil {
		rcfg.LookupFunc = m.cfg.Lookup
	}
	repl, err := pgconn.ConnectConfig(ctx, rcfg)
	if err != nil {
		return nil, 0, fmt.Errorf("opening replication connection for snapshot: %w", err)
	}
	defer repl.Close(context.Background())
	slot, err := pglogrepl.CreateReplicationSlot(ctx, repl, "shapelog_snapshot_"+id, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Temporary: true, SnapshotAction: "EXPORT_SNAPSHOT"})
	if err != nil {
		return nil, 0, fmt.Errorf("creating snapshot slot: %w", err)
	}
	cp, err := pglogrepl.ParseLSN(slot.ConsistentPoint)
	if err != nil {
		return nil, 0, err
	}
	slotTook := time.Since(started)
	ccfg, err := pgx.ParseConfig(m.cfg.DatabaseURL)
	if err != nil {
		return nil, 0, err
	}
	for k, v := range catalog.SessionSettings {
		ccfg.RuntimeParams[k] = v
	}
	if m.cfg.Lookup != nil {
		ccfg.LookupFunc = m.cfg.Lookup
	}
	// Physical order must be stable for ctid paging: no scan starting
	// mid-table to join another, no parallel scan (a portal's plan may be
	// parallel, unlike a DECLAREd cursor's).
	ccfg.RuntimeParams["synchronize_seqscans"] = "off"
	ccfg.RuntimeParams["max_parallel_workers_per_gather"] = "0"
	ccfg.RuntimeParams["application_name"] = "shapelog snapshot " + id
	bounded(&ccfg.Config, m.cfg)
	conn, err := pgx.ConnectConfig(ctx, ccfg)
	if err != nil {
		return nil, 0, fmt.Errorf("opening snapshot connection: %w", err)
	}
	fail := func(err error) (*pgx.Conn, int64, error) {
		conn.Close(context.Background())
		return nil, 0, err
	}
	if _, err := conn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		return fail(err)
	}
	if _, err := conn.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+strings.ReplaceAll(slot.SnapshotName, "'", "''")+"'"); err != nil {
		return fail(fmt.Errorf("importing snapshot: %w", err))
	}
	// The imported snapshot now lives in our transaction; the temporary
	// slot goes with the replication connection.
	repl.Close(ctx)
	if err := m.repl.WaitProcessed(ctx, uint64(cp)); err != nil {
		return fail(err)
	}
	ts, ok, err := m.store.LastTsBefore(uint64(cp))
	if err != nil {
		return fail(err)
	}
	if !ok || ts < m.store.Horizon() {
		ts = m.store.Horizon()
	}
	for m.store.Durable().Ts < ts {
		ch := m.store.Advanced()
		if m.store.Durable().Ts >= ts {
			break
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fail(ctx.Err())
		}
	}
	m.log.Info().Str("snapshot", id).Int64("ts", ts).Str("lsn", cp.String()).
		Dur("slot_took", slotTook).Dur("took", time.Since(started)).Msg("snapshot taken")
	return conn, ts, nil
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Lookup finds an open session.
func (m *Manager) Lookup(id string) (*Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sessions[id]
	if s == nil {
		return nil, ErrGone
	}
	return s, nil
}

// Run closes idle sessions and drops idle rewind indexes until ctx ends,
// then closes everything.
func (m *Manager) Run(ctx context.Context) {
	m.mu.Lock()
	m.runCtx = ctx
	m.mu.Unlock()
	t := time.NewTicker(15 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			m.closeIdle(0)
			m.mu.Lock()
			m.closing = true
			m.mu.Unlock()
			m.aheadWG.Wait()
			m.expireKeyed(0)
			m.pool.Close()
			return
		case <-t.C:
			m.closeIdle(m.cfg.IdleTimeout)
			m.expireKeyed(m.cfg.IdleTimeout)
		}
	}
}

func (m *Manager) closeIdle(idle time.Duration) {
	m.mu.Lock()
	var victims []*Session
	for _, s := range m.sessions {
		if s != nil && s.idleFor() >= idle {
			victims = append(victims, s)
		}
	}
	m.mu.Unlock()
	for _, s := range victims {
		s.Close()
	}
}

func (s *Session) idleFor() time.Duration {
	if !s.mu.TryLock() {
		return 0 // in use
	}
	defer s.mu.Unlock()
	return time.Since(s.lastUsed)
}

// Close releases the snapshot.
func (s *Session) Close() {
	s.m.mu.Lock()
	delete(s.m.sessions, s.ID)
	s.m.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopAhead()
	if !s.closed {
		s.closed = true
		s.conn.Close(context.Background())
		s.m.log.Debug().Str("snapshot", s.ID).Msg("snapshot closed")
	}
}

// page is a fetched and prepared run of rows of one table.
type page struct {
	table    int
	after    string // the rows follow this ctid
	n        int    // rows
	last     string // ctid of the last row
	key      string // the prepare function's key
	prepared any
	err      error // reading failed: the snapshot is lost
	// prepareErr is the caller's: the snapshot is fine
	prepareErr error
}

// Prepare starts preparing one page: add receives each row's text values
// (nil = NULL; valid only during the call) as PostgreSQL sends them, and
// done returns the page in the form the caller serves, e.g. rendered JSON.
type Prepare func() (add func(values [][]byte) error, done func() (any, error))

// Read returns the prepared form of up to limit rows of table ti after the
// row at ctid after ("" = from the start), the ctid of the last row, and
// whether the table is exhausted.
//
// Rows are prepared as they arrive, and while the caller serves a page the
// following ones are fetched and prepared in the background with the same
// prepare function (reused when the next call passes the same key), so
// PostgreSQL, the engine and the client all work at once.
func (s *Session) Read(ctx context.Context, ti int, after string, limit int, key string, prepare Prepare) (out any, last string, exhausted bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, "", false, ErrGone
	}
	// A cancelled request must not cancel I/O on the snapshot connection:
	// pgx closes a connection whose query is cancelled, which would lose the
	// snapshot the client is about to retry.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Minute)
	defer cancel()
	s.lastUsed = time.Now()
	defer func() { s.lastUsed = time.Now() }()
	if ti < 0 || ti >= len(s.Tables) {
		return nil, "", false, fmt.Errorf("table index %d out of range", ti)
	}
	p := s.takeAhead(ti, after, key, limit)
	if p == nil {
		// Not what was read ahead (a retry, another table or format): read
		// it now, repositioning the cursor if needed.
		if s.cursorTable != ti || s.cursorAt != after {
			if err := s.declare(ctx, ti, after); err != nil {
				return nil, "", false, s.broken(err)
			}
		}
		p = s.fetch(ctx, ti, after, limit, key, prepare)
	}
	if p.err != nil {
		return nil, "", false, s.broken(p.err)
	}
	if p.prepareErr != nil {
		s.stopAhead()
		if rerr := s.release(ctx); rerr != nil {
			return nil, "", false, s.broken(rerr)
		}
		return nil, "", false, p.prepareErr
	}
	last = after
	if p.n > 0 {
		last = p.last
	}
	if p.n < limit {
		s.stopAhead()
		if err := s.release(ctx); err != nil {
			return nil, "", false, s.broken(err)
		}
		return p.prepared, last, true, nil
	}
	if s.ahead == nil {
		s.startAhead(ti, last, limit, key, prepare)
	}
	return p.prepared, last, false, nil
}

// fetch reads and prepares the next rows from the open cursor.
func (s *Session) fetch(ctx context.Context, ti int, after string, limit int, key string, prepare Prepare) *page {
	p := &page{table: ti, after: after, key: key}
	add, done := prepare()
	s.conn.PgConn().Frontend().SendExecute(&pgproto3.Execute{Portal: cursorName, MaxRows: uint32(limit)})
	var last []byte
	if err := s.roundTrip(ctx, func(vals [][]byte) {
		last = append(last[:0], vals[0]...)
		p.n++
		if p.prepareErr == nil {
			p.prepareErr = add(vals[1:])
		}
	}); err != nil {
		p.err = err
		return p
	}
	if p.n > 0 {
		p.last = string(last)
		s.cursorAt = p.last
	}
	if p.prepareErr == nil {
		p.prepared, p.prepareErr = done()
	}
	return p
}

// roundTrip ends the extended-protocol messages queued on the connection
// with a Sync, sends them, and reads the replies up to ReadyForQuery,
// passing each data row's values (valid only during the call) to row. The
// cursor is a protocol-level portal read with Execute's row limit: unlike
// FETCH, which PostgreSQL runs to completion into a tuplestore before
// sending it, rows are sent as the scan produces them.
func (s *Session) roundTrip(ctx context.Context, row func([][]byte)) error {
	pc := s.conn.PgConn()
	fe := pc.Frontend()
	fe.SendSync(&pgproto3.Sync{})
	if err := fe.Flush(); err != nil {
		return err
	}
	// Messages are received without a context (watching one per message
	// would cost more than the rows); ctx's deadline closes the connection.
	stop := context.AfterFunc(ctx, func() { _ = pc.Conn().Close() })
	defer stop()
	var failed error
	for {
		msg, err := pc.ReceiveMessage(context.Background())
		if err != nil {
			return err
		}
		switch msg := msg.(type) {
		case *pgproto3.DataRow:
			if failed == nil {
				row(msg.Values)
			}
		case *pgproto3.ErrorResponse:
			if failed == nil {
				failed = pgconn.ErrorResponseToPgError(msg)
			}
		case *pgproto3.ReadyForQuery:
			return failed
		}
	}
}

// readAhead fetches and prepares the pages that follow a served one in the
// background. It holds the connection until stopped.
type readAhead struct {
	ti    int
	key   string
	next  string     // the next page delivered follows this ctid
	ready chan *page // prepared pages, in order
	stop  chan struct{}
	done  chan struct{} // closed once the connection is free again
}

func (s *Session) startAhead(ti int, after string, limit int, key string, prepare Prepare) {
	ra := &readAhead{ti: ti, key: key, next: after, ready: make(chan *page, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(ra.done)
		defer close(ra.ready)
		for {
			select {
			case <-ra.stop:
				return
			default:
			}
			p := s.fetch(context.Background(), ti, after, limit, key, prepare)
			select {
			case ra.ready <- p:
			case <-ra.stop:
				return
			}
			if p.err != nil || p.prepareErr != nil || p.n < limit {
				return
			}
			after = p.last
		}
	}()
	s.ahead = ra
}

// takeAhead returns the next read-ahead page when it is the one asked for
// (table ti after after, prepared with key); otherwise it stops reading
// ahead and returns nil. A last page (short, or failed) also ends it.
func (s *Session) takeAhead(ti int, after, key string, limit int) *page {
	ra := s.ahead
	if ra == nil {
		return nil
	}
	if ra.ti != ti || ra.key != key || ra.next != after {
		s.stopAhead()
		return nil
	}
	p, ok := <-ra.ready
	if !ok {
		s.stopAhead()
		return nil
	}
	if p.err != nil || p.prepareErr != nil || p.n < limit {
		s.stopAhead()
	} else {
		ra.next = p.last
	}
	return p
}

// stopAhead ends reading ahead and waits until the connection is free.
func (s *Session) stopAhead() {
	ra := s.ahead
	if ra == nil {
		return
	}
	s.ahead = nil
	close(ra.stop)
	<-ra.done
}

// release ends the reading of the current table and drops its lock.
func (s *Session) release(ctx context.Context) error {
	s.cursorTable = -1
	_, err := s.conn.Exec(ctx, "ROLLBACK TO SAVEPOINT "+savepoint)
	return err
}

// declare opens the server-side cursor over table ti after position after.
// The table is read in physical (ctid) order, which a TID range scan
// continues cheaply from any point. A partitioned table is read leaf by leaf
// (by OID), and positions name the leaf too ("<oid>:<ctid>"): tuple ids are
// only unique within one leaf.
func (s *Session) declare(ctx context.Context, ti int, after string) error {
	t := s.Tables[ti]
	// The leaves, by OID, each with its name as regclass renders it (quoted,
	// qualified): none for a table that is not partitioned.
	var leaves []uint32
	var names []string
	if err := s.conn.QueryRow(ctx, `SELECT coalesce(array_agg(relid::oid ORDER BY relid::oid), '{}'), coalesce(array_agg(relid::text ORDER BY relid::oid), '{}')
		FROM pg_partition_tree($1::oid) WHERE isleaf AND relid::oid <> $1::oid`, t.OID).Scan(&leaves, &names); err != nil {
		return err
	}
	cols := make([]string, 0, len(t.Columns))
	for _, c := range t.Columns {
		cols = append(cols, pgx.Identifier{c.Name}.Sanitize())
	}
	var q string
	if len(leaves) == 0 {
		q = "SELECT ctid, " + strings.Join(cols, ", ") + " FROM " + pgx.Identifier{t.Schema, t.Name}.Sanitize()
		if after != "" {
			q += " WHERE ctid > '" + strings.ReplaceAll(after, "'", "''") + "'::tid"
		}
	} else {
		leaf, ctid := uint64(0), ""
		if after != "" {
			l, c, _ := strings.Cut(after, ":")
			leaf, _ = strconv.ParseUint(l, 10, 32)
			ctid = c
		}
		var parts []string
		for i, oid := range leaves {
			if uint64(oid) < leaf {
				continue
			}
			part := "SELECT tableoid::oid::text || ':' || ctid::text, " + strings.Join(cols, ", ") + " FROM ONLY " + names[i]
			if uint64(oid) == leaf {
				part += " WHERE ctid > '" + strings.ReplaceAll(ctid, "'", "''") + "'::tid"
			}
			parts = append(parts, part)
		}
		if len(parts) == 0 { // past the last leaf
			parts = append(parts, "SELECT NULL::text, "+strings.Join(cols, ", ")+" FROM ONLY "+pgx.Identifier{t.Schema, t.Name}.Sanitize()+" WHERE false")
		}
		q = strings.Join(parts, " UNION ALL ")
	}
	if s.cursorTable >= 0 && s.cursorTable != ti {
		if err := s.release(ctx); err != nil {
			return err
		}
	}
	s.cursorTable = -1
	fe := s.conn.PgConn().Frontend()
	fe.SendClose(&pgproto3.Close{ObjectType: 'P', Name: cursorName}) // no error if there is none
	fe.SendParse(&pgproto3.Parse{Query: q})
	fe.SendBind(&pgproto3.Bind{DestinationPortal: cursorName})
	if err := s.roundTrip(ctx, nil); err != nil {
		return err
	}
	s.cursorTable, s.cursorAt = ti, after
	return nil
}

// broken closes a session whose transaction failed: its snapshot is lost.
func (s *Session) broken(err error) error {
	s.stopAhead()
	s.closed = true
	s.conn.Close(context.Background())
	go func() {
		s.m.mu.Lock()
		delete(s.m.sessions, s.ID)
		s.m.mu.Unlock()
	}()
	s.m.log.Warn().Err(err).Str("snapshot", s.ID).Msg("snapshot lost")
	return fmt.Errorf("%w: %v", ErrGone, err)
}
