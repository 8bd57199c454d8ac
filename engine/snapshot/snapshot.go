// Package snapshot takes consistent snapshots of published tables and pages
// through them.
//
// A snapshot is exact with respect to the shape log: it comes from a
// temporary logical replication slot created with EXPORT_SNAPSHOT, whose
// consistent point is a single LSN: transactions that committed before it
// are in the snapshot, the rest are decoded by the engine's slot. The
// snapshot's timestamp is the ts of the last logged transaction before that
// point, so "snapshot, then every change after its ts" loses nothing and
// applies nothing twice, whatever was being written meanwhile.
//
// The snapshot is held open in a REPEATABLE READ transaction on a dedicated
// connection while clients page through it (like pg_dump, it holds back
// vacuum for that time); idle snapshots are closed after a timeout.
package snapshot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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
	// MaxSessions bounds concurrent snapshots (each holds a connection).
	MaxSessions int
	// IdleTimeout closes snapshots nobody has read for this long.
	IdleTimeout time.Duration
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

	mu       sync.Mutex
	sessions map[string]*Session
}

// NewManager creates a manager; Run expires idle sessions.
func NewManager(cfg Config, store *shapelog.Store, repl Positioner, log zerolog.Logger) *Manager {
	if cfg.MaxSessions == 0 {
		cfg.MaxSessions = 16
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 10 * time.Minute
	}
	return &Manager{cfg: cfg, store: store, repl: repl, log: log.With().Str("component", "snapshot").Logger(), sessions: map[string]*Session{}}
}

const savepoint = "shapelog_table"

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
	pending     chan *page // a background fetch of the next page
}

// Begin takes a new snapshot of tables (in the order given).
func (m *Manager) Begin(ctx context.Context, tables []*catalog.Table) (*Session, error) {
	m.mu.Lock()
	if len(m.sessions) >= m.cfg.MaxSessions {
		m.mu.Unlock()
		return nil, ErrTooMany
	}
	id := newID()
	m.sessions[id] = nil // reserve the slot while the snapshot is taken
	m.mu.Unlock()
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

func (m *Manager) begin(ctx context.Context, id string, tables []*catalog.Table) (*Session, error) {
	started := time.Now()
	rcfg, err := pgconn.ParseConfig(m.cfg.DatabaseURL)
	if err != nil {
		return nil, err
	}
	rcfg.RuntimeParams["replication"] = "database"
	repl, err := pgconn.ConnectConfig(ctx, rcfg)
	if err != nil {
		return nil, fmt.Errorf("opening replication connection for snapshot: %w", err)
	}
	defer repl.Close(context.Background())
	slot, err := pglogrepl.CreateReplicationSlot(ctx, repl, "shapelog_snapshot_"+id, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Temporary: true, SnapshotAction: "EXPORT_SNAPSHOT"})
	if err != nil {
		return nil, fmt.Errorf("creating snapshot slot: %w", err)
	}
	cp, err := pglogrepl.ParseLSN(slot.ConsistentPoint)
	if err != nil {
		return nil, err
	}
	slotTook := time.Since(started)
	ccfg, err := pgx.ParseConfig(m.cfg.DatabaseURL)
	if err != nil {
		return nil, err
	}
	for k, v := range catalog.SessionSettings {
		ccfg.RuntimeParams[k] = v
	}
	// Physical order must be stable for ctid paging.
	ccfg.RuntimeParams["synchronize_seqscans"] = "off"
	ccfg.RuntimeParams["application_name"] = "shapelog snapshot " + id
	conn, err := pgx.ConnectConfig(ctx, ccfg)
	if err != nil {
		return nil, fmt.Errorf("opening snapshot connection: %w", err)
	}
	fail := func(err error) (*Session, error) {
		conn.Close(context.Background())
		return nil, err
	}
	if _, err := conn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		return fail(err)
	}
	if _, err := conn.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+strings.ReplaceAll(slot.SnapshotName, "'", "''")+"'"); err != nil {
		return fail(fmt.Errorf("importing snapshot: %w", err))
	}
	// Tables are read inside a savepoint; rolling back to it when a table is
	// done releases that table's lock (so TRUNCATE and ALTER TABLE are not
	// blocked by a finished table) while the transaction keeps the snapshot.
	if _, err := conn.Exec(ctx, "SAVEPOINT "+savepoint); err != nil {
		return fail(err)
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
	s := &Session{ID: id, Ts: ts, Tables: tables, m: m, conn: conn, lastUsed: time.Now(), cursorTable: -1}
	m.log.Info().Str("snapshot", id).Int64("ts", ts).Str("lsn", cp.String()).Int("tables", len(tables)).
		Dur("slot_took", slotTook).Dur("took", time.Since(started)).Msg("snapshot taken")
	return s, nil
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

// Run closes idle sessions until ctx ends, then closes all.
func (m *Manager) Run(ctx context.Context) {
	t := time.NewTicker(15 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			m.closeIdle(0)
			return
		case <-t.C:
			m.closeIdle(m.cfg.IdleTimeout)
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
	s.takePrefetched()
	if !s.closed {
		s.closed = true
		s.conn.Close(context.Background())
		s.m.log.Debug().Str("snapshot", s.ID).Msg("snapshot closed")
	}
}

// page is a fetched run of rows of one table.
type page struct {
	table int
	after string     // the rows follow this ctid
	ctids []string   // ctid of each row
	rows  [][][]byte // text values per row (nil = NULL)
	err   error

	key        string // the prepare function's key
	prepared   any
	prepareErr error

	arenas [][]byte // backing memory of rows, returned to arenaPool after use
}

const arenaSize = 256 << 10

// arenaPool recycles the memory fetched rows are copied into.
var arenaPool = sync.Pool{New: func() any { b := make([]byte, 0, arenaSize); return &b }}

// recycle returns the page's memory for reuse; its rows are invalid after.
func (p *page) recycle() {
	for _, a := range p.arenas {
		if cap(a) == arenaSize {
			a = a[:0]
			arenaPool.Put(&a)
		}
	}
	p.arenas, p.rows = nil, nil
}

// Prepare turns a page of rows (text values, nil = NULL) into what the
// caller serves, e.g. rendered JSON. Rows are only valid during the call.
type Prepare func(rows [][][]byte) (any, error)

// Read returns the prepared form of up to limit rows of table ti after the
// row at ctid after ("" = from the start), the ctid of the last row, and
// whether the table is exhausted.
//
// While the caller serves a page, the next one is fetched and prepared in
// the background with the same prepare function (reused when the next call
// passes the same key), so PostgreSQL, the engine and the client all work
// at once.
func (s *Session) Read(ctx context.Context, ti int, after string, limit int, key string, prepare Prepare) (out any, last string, exhausted bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, "", false, ErrGone
	}
	s.lastUsed = time.Now()
	defer func() { s.lastUsed = time.Now() }()
	if ti < 0 || ti >= len(s.Tables) {
		return nil, "", false, fmt.Errorf("table index %d out of range", ti)
	}
	p := s.takePrefetched()
	if p != nil && p.err != nil {
		return nil, "", false, s.broken(p.err)
	}
	if p == nil || p.table != ti || p.after != after || p.key != key || len(p.ctids) > limit {
		// Not what was prefetched (a retry, another table or format):
		// read it now, repositioning the cursor if needed.
		if s.cursorTable != ti || s.cursorAt != after {
			if err := s.declare(ctx, ti, after); err != nil {
				return nil, "", false, s.broken(err)
			}
		}
		if p = s.fetch(ctx, ti, after, limit); p.err != nil {
			return nil, "", false, s.broken(p.err)
		}
		p.prepared, p.prepareErr = prepare(p.rows)
		p.recycle()
	}
	if p.prepareErr != nil {
		if rerr := s.release(ctx); rerr != nil {
			return nil, "", false, s.broken(rerr)
		}
		return nil, "", false, p.prepareErr
	}
	last = after
	if n := len(p.ctids); n > 0 {
		last = p.ctids[n-1]
	}
	if len(p.ctids) < limit {
		if err := s.release(ctx); err != nil {
			return nil, "", false, s.broken(err)
		}
		return p.prepared, last, true, nil
	}
	s.prefetch(ti, last, limit, key, prepare)
	return p.prepared, last, false, nil
}

// fetch reads the next rows from the open cursor, copying them.
func (s *Session) fetch(ctx context.Context, ti int, after string, limit int) *page {
	p := &page{table: ti, after: after}
	rr := s.conn.PgConn().ExecParams(ctx, fmt.Sprintf("FETCH FORWARD %d FROM shapelog_snapshot", limit), nil, nil, nil, nil)
	var arena []byte
	var slots [][]byte // row slices are cut from one allocation
	for rr.NextRow() {
		vals := rr.Values()
		size := 0
		for _, v := range vals {
			size += len(v)
		}
		if cap(arena)-len(arena) < size {
			if size <= arenaSize {
				arena = (*arenaPool.Get().(*[]byte))[:0]
			} else {
				arena = make([]byte, 0, size)
			}
			p.arenas = append(p.arenas, arena)
		}
		if len(slots) < len(vals)-1 {
			slots = make([][]byte, 64*(len(vals)-1))
		}
		row := slots[: len(vals)-1 : len(vals)-1]
		slots = slots[len(vals)-1:]
		for i, v := range vals[1:] {
			if v != nil {
				arena = append(arena, v...)
				row[i] = arena[len(arena)-len(v) : len(arena) : len(arena)]
			}
		}
		p.ctids = append(p.ctids, string(vals[0]))
		p.rows = append(p.rows, row)
	}
	if _, err := rr.Close(); err != nil {
		p.err = err
		return p
	}
	if n := len(p.ctids); n > 0 {
		s.cursorAt = p.ctids[n-1]
	}
	return p
}

// prefetch fetches and prepares the page after last in the background.
func (s *Session) prefetch(ti int, last string, limit int, key string, prepare Prepare) {
	ch := make(chan *page, 1)
	s.pending = ch
	go func() {
		p := s.fetch(context.Background(), ti, last, limit)
		if p.err == nil {
			p.key = key
			p.prepared, p.prepareErr = prepare(p.rows)
			p.recycle()
		}
		ch <- p
	}()
}

// takePrefetched waits for a background fetch, if one runs, and returns it.
func (s *Session) takePrefetched() *page {
	if s.pending == nil {
		return nil
	}
	p := <-s.pending
	s.pending = nil
	return p
}

// release ends the reading of the current table and drops its lock.
func (s *Session) release(ctx context.Context) error {
	s.cursorTable = -1
	_, err := s.conn.Exec(ctx, "ROLLBACK TO SAVEPOINT "+savepoint)
	return err
}

// declare opens the server-side cursor over table ti after ctid after. The
// table is read in physical (ctid) order, which a TID range scan continues
// cheaply from any point.
func (s *Session) declare(ctx context.Context, ti int, after string) error {
	t := s.Tables[ti]
	cols := make([]string, 0, len(t.Columns)+1)
	cols = append(cols, "ctid")
	for _, c := range t.Columns {
		cols = append(cols, pgx.Identifier{c.Name}.Sanitize())
	}
	q := "DECLARE shapelog_snapshot NO SCROLL CURSOR FOR SELECT " + strings.Join(cols, ", ") + " FROM " + pgx.Identifier{t.Schema, t.Name}.Sanitize()
	if after != "" {
		q += " WHERE ctid > '" + strings.ReplaceAll(after, "'", "''") + "'::tid"
	}
	switch {
	case s.cursorTable == ti:
		if _, err := s.conn.Exec(ctx, "CLOSE shapelog_snapshot"); err != nil {
			return err
		}
	case s.cursorTable >= 0:
		if err := s.release(ctx); err != nil {
			return err
		}
	}
	s.cursorTable = -1
	if _, err := s.conn.Exec(ctx, q); err != nil {
		return err
	}
	s.cursorTable, s.cursorAt = ti, after
	return nil
}

// broken closes a session whose transaction failed: its snapshot is lost.
func (s *Session) broken(err error) error {
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
