// Package shapes serves Electric's shapes: partial replicas of a table (a
// where clause, a column list) made of a consistent snapshot followed by the
// table's changes from the shape log, filtered and projected.
//
// A shape's snapshot is stored in chunks (each an immutable, cacheable
// response); its change region is read from the engine's per-table log on
// demand, so shapes cost no write amplification. Offsets follow Electric:
// snapshot chunks are 0_<n>, changes <commit lsn>_<op>.
package shapes

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/shapelog/shapelog/engine/catalog"
	"github.com/shapelog/shapelog/engine/shapelog"
	"github.com/shapelog/shapelog/engine/snapshot"
)

// Config tunes shapes.
type Config struct {
	// Dir holds snapshot chunks and shape definitions.
	Dir string
	// ChunkBytes is the size at which a snapshot chunk or a change response
	// is closed (default 10 MiB, Electric's).
	ChunkBytes int
}

// Publisher keeps the tables shapes need in the engine's publication, with
// the replica identity they need.
type Publisher interface {
	SetShapeTables(ctx context.Context, oids []uint32) error
}

// Manager owns every shape of one database.
type Manager struct {
	cfg   Config
	store *shapelog.Store
	snaps *snapshot.Manager
	pub   Publisher
	pool  *pgxpool.Pool
	types *catalog.Types
	log   zerolog.Logger
	db    *pebble.DB

	runCtx    context.Context
	snapshots sync.WaitGroup // snapshots being taken

	// use keeps the storage open while reads (including those of parked
	// live requests, which outlive HTTP handlers) use it: Close waits.
	use    sync.RWMutex
	closed bool

	mu       sync.Mutex
	byID     map[string]*Shape // definition identity → current shape
	byHandle map[string]*Shape
	// resolved caches definitions by request, so live requests (every
	// client, after every change) cost no catalog queries; resolving
	// shares one resolution among concurrent requests with the same key.
	resolved  map[string]resolvedDef
	resolving map[string]*resolution
}

// resolvedDef is a cached definition; it is refreshed after resolveTTL
// (requests meanwhile use it as it is), and dropped at once when a shape of
// its table is invalidated (the table may have changed).
type resolvedDef struct {
	def        *Definition
	at         time.Time
	refreshing bool
}

// resolution is a resolution in flight; done closes when def or err is set.
type resolution struct {
	done chan struct{}
	def  *Definition
	err  error
}

const resolveTTL = 10 * time.Second

// requestKey identifies a request's definition parameters: each value
// length-prefixed, params sorted.
func requestKey(r Request) string {
	var b strings.Builder
	field := func(s string) {
		b.WriteString(strconv.Itoa(len(s)))
		b.WriteByte(':')
		b.WriteString(s)
	}
	field(r.Table)
	field(r.Where)
	field(r.Columns)
	field(r.Replica)
	field(r.Log)
	field(r.Queryable)
	for _, k := range slices.Sorted(maps.Keys(r.Params)) {
		field(k)
		field(r.Params[k])
	}
	return b.String()
}

// Open opens the shape storage and restores the shapes whose snapshots
// completed; Run must be called to keep them moving.
func Open(ctx context.Context, cfg Config, store *shapelog.Store, snaps *snapshot.Manager, pub Publisher, pool *pgxpool.Pool, types *catalog.Types, log zerolog.Logger) (*Manager, error) {
	if cfg.ChunkBytes <= 0 {
		cfg.ChunkBytes = 10 << 20
	}
	db, err := pebble.Open(cfg.Dir, &pebble.Options{Logger: pebbleLogger{log}})
	if err != nil {
		return nil, fmt.Errorf("opening shape storage in %s: %w", cfg.Dir, err)
	}
	m := &Manager{cfg: cfg, store: store, snaps: snaps, pub: pub, pool: pool, types: types, db: db,
		log: log.With().Str("component", "shapes").Logger(), runCtx: ctx,
		byID: map[string]*Shape{}, byHandle: map[string]*Shape{}, resolved: map[string]resolvedDef{}, resolving: map[string]*resolution{}}
	if err := m.restore(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return m, nil
}

// Close waits for snapshots in progress (they stop with the context given
// to Open) and closes the storage.
func (m *Manager) Close() error {
	// Reads in flight end (those waiting for a snapshot chunk see the
	// snapshot fail once the run context is cancelled); later ones and new
	// shapes are refused, so no snapshot starts after the wait below.
	m.use.Lock()
	m.closed = true
	m.use.Unlock()
	m.snapshots.Wait()
	return m.db.Close()
}

// ErrClosed is the error of a read from a closed manager (the engine is
// stopping, or the database was removed).
var ErrClosed = errors.New("shapes: the database's shapes are closed")

// enter holds the storage open for a read; false means it is closed.
func (m *Manager) enter() bool {
	m.use.RLock()
	if m.closed {
		m.use.RUnlock()
		return false
	}
	return true
}

func (m *Manager) leave() { m.use.RUnlock() }

type pebbleLogger struct{ log zerolog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug().Str("component", "pebble").Msgf(format, args...)
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error().Str("component", "pebble").Msgf(format, args...)
}

func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.log.Fatal().Str("component", "pebble").Msgf(format, args...)
}

// meta is a shape's stored record.
type meta struct {
	Handle   string            `json:"handle"`
	OID      uint32            `json:"oid"`
	Table    string            `json:"table"` // quoted schema.table
	Where    string            `json:"where,omitempty"`
	Params   map[string]string `json:"params,omitempty"`
	Columns  string            `json:"columns,omitempty"`
	Replica  string            `json:"replica,omitempty"`
	Log      string            `json:"log,omitempty"`
	Identity string            `json:"identity"`
	SnapTs   int64             `json:"snapshot_ts"`
	Chunks   int               `json:"chunks"`
	Complete bool              `json:"complete"`
}

func metaKey(handle string) []byte { return append([]byte("s"), handle...) }

func chunkKey(handle string, n int) []byte {
	k := append([]byte("c"), handle...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint32(k, uint32(n))
}

func (m *Manager) readChunk(handle string, n int) ([]byte, error) {
	v, closer, err := m.db.Get(chunkKey(handle, n))
	if err != nil {
		return nil, fmt.Errorf("reading snapshot chunk %d of shape %s: %w", n, handle, err)
	}
	defer closer.Close()
	return append([]byte(nil), v...), nil
}

// restore loads the stored shapes that can go on: complete snapshots of
// tables that still look the same, with their changes still in the log.
func (m *Manager) restore(ctx context.Context) error {
	it, err := m.db.NewIter(&pebble.IterOptions{LowerBound: []byte("s"), UpperBound: []byte("t")})
	if err != nil {
		return err
	}
	var metas []meta
	for it.First(); it.Valid(); it.Next() {
		var md meta
		if err := json.Unmarshal(it.Value(), &md); err != nil {
			it.Close()
			return fmt.Errorf("shape record %q: %w", it.Key(), err)
		}
		metas = append(metas, md)
	}
	if err := it.Close(); err != nil {
		return err
	}
	for _, md := range metas {
		reason := ""
		var d *Definition
		switch {
		case !md.Complete:
			reason = "snapshot did not complete before the engine stopped"
		case md.SnapTs < m.store.Horizon():
			reason = "its changes have been pruned from the log"
		default:
			d, err = m.resolve(ctx, Request{Table: md.Table, Where: md.Where, Params: md.Params, Columns: md.Columns, Replica: md.Replica, Log: md.Log})
			var pe *ParamError
			switch {
			case err != nil && !errors.As(err, &pe):
				// The database cannot be asked now: keep the shape for the
				// next start; its clients get a new one meanwhile.
				m.log.Warn().Err(err).Str("handle", md.Handle).Msg("cannot check stored shape; not serving it until the next start")
				continue
			case err != nil:
				reason = "its definition is no longer accepted: " + pe.Error()
			case d.Table.OID != md.OID || d.Identity() != md.Identity:
				reason = "its table changed"
			}
		}
		if reason != "" {
			m.log.Info().Str("handle", md.Handle).Str("reason", reason).Msg("dropping stored shape")
			m.drop(md.Handle)
			continue
		}
		s := m.newShape(md.Handle, d)
		if s.Schema, err = m.schemaHeader(ctx, d); err != nil {
			m.log.Warn().Err(err).Str("handle", md.Handle).Msg("cannot read stored shape's schema; not serving it until the next start")
			continue
		}
		s.snapDone, s.snapTs, s.chunks = true, md.SnapTs, md.Chunks
		s.head, s.headTs, s.scanned = SnapshotEnd, md.SnapTs, md.SnapTs
		m.byID[d.Identity()], m.byHandle[md.Handle] = s, s
	}
	if len(m.byHandle) > 0 {
		m.log.Info().Int("shapes", len(m.byHandle)).Msg("shapes restored")
		m.publishTables()
	}
	return nil
}

func (m *Manager) newShape(handle string, d *Definition) *Shape {
	s := &Shape{Handle: handle, Def: d, m: m, enc: newEncoder(d), needed: d.needed(),
		layouts: map[uint32]*layout{}, changed: make(chan struct{}), cache: map[Offset]*cached{}, inflight: map[Offset]chan struct{}{}}
	s.conv.s = s
	return s
}

// Resolve checks a request against the catalog: a *ParamError names the
// parameter at fault. Thousands of live clients re-requesting one shape after
// a change cost one catalog lookup, not one each.
func (m *Manager) Resolve(ctx context.Context, req Request) (*Definition, error) {
	key := requestKey(req)
	m.mu.Lock()
	cached, ok := m.resolved[key]
	var flight *resolution
	switch {
	case ok && (time.Since(cached.at) < resolveTTL || cached.refreshing):
		m.mu.Unlock()
		return cached.def, nil
	case ok: // stale: this request refreshes it, the others keep using it
		cached.refreshing = true
		m.resolved[key] = cached
	case m.resolving[key] != nil:
		flight = m.resolving[key]
		m.mu.Unlock()
		select {
		case <-flight.done:
			return flight.def, flight.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	default:
		flight = &resolution{done: make(chan struct{})}
		m.resolving[key] = flight
	}
	m.mu.Unlock()
	var d *Definition
	err := errors.New("resolving the shape failed")
	// Published even if resolve panics, so no request waits on it forever.
	defer func() {
		m.mu.Lock()
		if err != nil {
			delete(m.resolved, key)
		} else {
			if len(m.resolved) >= 10000 {
				clear(m.resolved)
			}
			m.resolved[key] = resolvedDef{def: d, at: time.Now()}
		}
		if flight != nil {
			flight.def, flight.err = d, err
			delete(m.resolving, key)
			close(flight.done)
		}
		m.mu.Unlock()
	}()
	// Shared with other requests: not cancelled with this one.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	d, err = m.resolve(rctx, req)
	return d, err
}

// Get returns the current shape of a definition, creating it (and starting
// its snapshot) when there is none.
func (m *Manager) Get(ctx context.Context, d *Definition, req Request) (*Shape, error) {
	if !m.enter() {
		return nil, ErrClosed
	}
	defer m.leave()
	id := d.Identity()
	m.mu.Lock()
	if s := m.byID[id]; s != nil {
		m.mu.Unlock()
		return s, nil
	}
	m.mu.Unlock()
	schema, err := m.schemaHeader(ctx, d)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.byID[id]; s != nil {
		return s, nil
	}
	handle := fmt.Sprintf("%d-%d", d.hash(), time.Now().UnixMicro())
	for m.byHandle[handle] != nil {
		time.Sleep(time.Microsecond)
		handle = fmt.Sprintf("%d-%d", d.hash(), time.Now().UnixMicro())
	}
	s := m.newShape(handle, d)
	s.Schema = schema
	m.byID[id], m.byHandle[handle] = s, s
	md := meta{Handle: handle, OID: d.Table.OID, Table: quoteIdent(d.Table.Schema) + "." + quoteIdent(d.Table.Name),
		Where: req.Where, Params: req.Params, Replica: req.Replica, Log: req.Log, Identity: id}
	if d.Explicit {
		names := make([]string, len(d.Columns))
		for i, c := range d.Columns {
			names[i] = quoteIdent(d.Table.Columns[c].Name)
		}
		md.Columns = strings.Join(names, ",")
	}
	m.snapshots.Add(1)
	go func() {
		defer m.snapshots.Done()
		m.takeSnapshot(s, md)
	}()
	m.log.Info().Str("handle", handle).Str("table", md.Table).Str("where", d.Where).Msg("shape created")
	return s, nil
}

// Lookup finds a shape by handle (nil when unknown or gone).
func (m *Manager) Lookup(handle string) *Shape {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.byHandle[handle]
}

// Current is the current shape of a definition, or nil.
func (m *Manager) Current(d *Definition) *Shape {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.byID[d.Identity()]
}

// Delete removes a shape: its clients get 409 and start over.
func (m *Manager) Delete(s *Shape) { m.invalidate(s, "deleted") }

// Reached reports whether the log has passed offset's LSN: the changes after
// it can be served even when the shape has none up to there (an offset
// between entries, such as SSE's next offset after an up-to-date).
func (m *Manager) Reached(offset Offset) bool {
	return !offset.inSnapshot() && offset.Tx <= m.store.Durable().EndLSN
}

func (m *Manager) invalidate(s *Shape, reason string) {
	s.mu.Lock()
	if s.gone {
		s.mu.Unlock()
		return
	}
	s.gone = true
	s.notifyLocked()
	s.mu.Unlock()
	m.mu.Lock()
	if m.byID[s.Def.Identity()] == s {
		delete(m.byID, s.Def.Identity())
	}
	delete(m.byHandle, s.Handle)
	for k, r := range m.resolved {
		if r.def.Table.OID == s.Def.Table.OID {
			delete(m.resolved, k)
		}
	}
	m.mu.Unlock()
	m.log.Info().Str("handle", s.Handle).Str("reason", reason).Msg("shape invalidated; clients will refetch")
	m.drop(s.Handle)
	m.publishTables()
}

// drop deletes a shape's stored record and chunks.
func (m *Manager) drop(handle string) {
	b := m.db.NewBatch()
	defer b.Close()
	_ = b.Delete(metaKey(handle), nil)
	_ = b.DeleteRange(chunkKey(handle, 0), chunkKey(handle+"\x00", 0), nil)
	if err := b.Commit(pebble.NoSync); err != nil {
		m.log.Warn().Err(err).Str("handle", handle).Msg("removing shape storage failed")
	}
}

// publishTables tells the publisher which tables shapes need now.
func (m *Manager) publishTables() {
	m.mu.Lock()
	seen := map[uint32]bool{}
	var oids []uint32
	for _, s := range m.byHandle {
		if !seen[s.Def.Table.OID] {
			seen[s.Def.Table.OID] = true
			oids = append(oids, s.Def.Table.OID)
		}
	}
	m.mu.Unlock()
	if err := m.pub.SetShapeTables(m.runCtx, oids); err != nil && m.runCtx.Err() == nil {
		if n, _ := m.dropVanished(m.runCtx); n > 0 {
			return // invalidating them published the rest
		}
		m.log.Warn().Err(err).Msg("updating the publication for shapes failed")
	}
}

// publishFor publishes the tables of every shape plus s's. Shapes whose
// table was dropped would make that fail for every new shape (DROP TABLE
// never reaches logical replication): they are invalidated, and the rest
// published.
func (m *Manager) publishFor(s *Shape) error {
	err := m.pub.SetShapeTables(m.runCtx, m.tablesWith(s))
	if err == nil {
		return nil
	}
	if n, derr := m.dropVanished(m.runCtx); derr != nil || n == 0 {
		return err
	}
	return m.pub.SetShapeTables(m.runCtx, m.tablesWith(s))
}

// dropVanished invalidates the shapes whose table no longer exists and
// returns how many there were.
func (m *Manager) dropVanished(ctx context.Context) (int, error) {
	m.mu.Lock()
	byOID := map[uint32][]*Shape{}
	for _, s := range m.byHandle {
		byOID[s.Def.Table.OID] = append(byOID[s.Def.Table.OID], s)
	}
	m.mu.Unlock()
	if len(byOID) == 0 {
		return 0, nil
	}
	oids := make([]uint32, 0, len(byOID))
	for oid := range byOID {
		oids = append(oids, oid)
	}
	rows, err := m.pool.Query(ctx, `SELECT oid FROM pg_class WHERE oid = ANY($1) AND relkind IN ('r', 'p')`, oids)
	if err != nil {
		return 0, err
	}
	alive, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
	if err != nil {
		return 0, err
	}
	for _, oid := range alive {
		delete(byOID, oid)
	}
	n := 0
	for _, group := range byOID {
		for _, s := range group {
			m.invalidate(s, "its table was dropped")
			n++
		}
	}
	return n, nil
}

// takeSnapshot fills a new shape's snapshot chunks. A table with a primary
// key is read in pages that hold nothing in PostgreSQL between them (see
// package snapshot), so shapes are never refused for want of snapshots;
// one without a key is read in a held snapshot.
func (m *Manager) takeSnapshot(s *Shape, md meta) {
	started := time.Now()
	rows := 0
	err := m.publishFor(s)
	if err == nil {
		if s.Def.ChangesOnly {
			err = m.fillEmpty(m.runCtx, s, &md)
		} else if snapshot.Keyed(s.Def.Table) {
			rows, err = m.fillKeyed(m.runCtx, s, &md)
		} else {
			err = m.snaps.With(m.runCtx, func(ctx context.Context, conn *pgx.Conn, ts int64) error {
				var err error
				rows, err = m.fillHeld(ctx, s, conn, ts, &md)
				return err
			})
		}
	}
	if err == nil {
		md.Complete = true
		var b []byte
		if b, err = json.Marshal(&md); err == nil {
			err = m.db.Set(metaKey(s.Handle), b, pebble.Sync)
		}
	}
	s.mu.Lock()
	if err != nil {
		s.failed = fmt.Errorf("taking the shape's snapshot: %w", err)
	} else {
		s.snapDone = true
		s.head, s.headTs, s.scanned = SnapshotEnd, md.SnapTs, md.SnapTs
	}
	s.notifyLocked()
	s.mu.Unlock()
	if err != nil {
		m.log.Error().Err(err).Str("handle", s.Handle).Msg("shape snapshot failed")
		m.invalidate(s, "snapshot failed")
		return
	}
	m.log.Info().Str("handle", s.Handle).Int("rows", rows).Int("chunks", md.Chunks).Dur("took", time.Since(started)).Msg("shape snapshot taken")
}

// tablesWith lists the tables of every shape plus s's.
func (m *Manager) tablesWith(s *Shape) []uint32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	oids := []uint32{s.Def.Table.OID}
	for _, o := range m.byHandle {
		oids = append(oids, o.Def.Table.OID)
	}
	return oids
}

// chunkWriter stores a shape's snapshot rows as chunks of about
// ChunkBytes, waking readers as each is written.
type chunkWriter struct {
	m     *Manager
	s     *Shape
	md    *meta
	chunk []byte
	rows  int
}

// startSnapshot records the snapshot's ts before any chunk is written.
func (w *chunkWriter) startSnapshot(ts int64) {
	w.md.SnapTs = ts
	w.s.mu.Lock()
	w.s.snapTs = ts
	w.s.mu.Unlock()
}

// add appends one rendered message.
func (w *chunkWriter) add(msg []byte) error {
	if len(w.chunk) > 0 {
		w.chunk = append(w.chunk, ',')
	}
	w.chunk = append(w.chunk, msg...)
	w.rows++
	if len(w.chunk) >= w.m.cfg.ChunkBytes {
		return w.put()
	}
	return nil
}

func (w *chunkWriter) put() error {
	if err := w.m.db.Set(chunkKey(w.s.Handle, w.md.Chunks), w.chunk, pebble.NoSync); err != nil {
		return err
	}
	w.md.Chunks++
	w.chunk = w.chunk[:0]
	w.s.mu.Lock()
	w.s.chunks = w.md.Chunks
	w.s.notifyLocked()
	w.s.mu.Unlock()
	return nil
}

// finish ends the snapshot with snapshot-end, carrying PostgreSQL's MVCC
// snapshot (pg_current_snapshot()'s text) at its start.
func (w *chunkWriter) finish(mvcc string) error {
	parts := strings.SplitN(mvcc, ":", 3)
	if len(parts) != 3 {
		return fmt.Errorf("unexpected snapshot %q", mvcc)
	}
	var xip []string
	if parts[2] != "" {
		xip = strings.Split(parts[2], ",")
	}
	if len(w.chunk) > 0 {
		w.chunk = append(w.chunk, ',')
	}
	w.chunk = append(w.chunk, snapshotEnd(parts[0], parts[1], xip)...)
	return w.put()
}

// fillEmpty is the snapshot of a changes_only shape: a position in the log
// and PostgreSQL's MVCC snapshot there (the snapshot-end message), no rows.
func (m *Manager) fillEmpty(ctx context.Context, s *Shape, md *meta) error {
	w := &chunkWriter{m: m, s: s, md: md}
	ts, mvcc, err := m.snaps.Start(ctx)
	if err != nil {
		return err
	}
	w.startSnapshot(ts)
	return w.finish(mvcc)
}

// keyedPage is a page of snapshot messages, rendered while it was read.
type keyedPage struct {
	buf  []byte
	ends []int
}

// fillKeyed reads the shape's rows page by page as of a new snapshot ts.
func (m *Manager) fillKeyed(ctx context.Context, s *Shape, md *meta) (int, error) {
	w := &chunkWriter{m: m, s: s, md: md}
	ts, mvcc, err := m.snaps.Start(ctx)
	if err != nil {
		return 0, err
	}
	w.startSnapshot(ts)
	d := s.Def
	var filter *snapshot.Where
	if d.Where != "" {
		filter = &snapshot.Where{SQL: d.Where, Match: d.filter.Match}
	}
	// Pages are rendered as they are read, the next one in the background.
	prepare := func() (func([][]byte) error, func() (any, error)) {
		p := &keyedPage{}
		var key []byte
		return func(values [][]byte) error {
				key = d.Table.AppendKey(key[:0], values)
				p.buf = s.enc.appendSnapshotRow(p.buf, key, values)
				p.ends = append(p.ends, len(p.buf))
				return nil
			}, func() (any, error) {
				return p, nil
			}
	}
	var after []string
	for {
		// Pages read ahead are rendered for this shape's columns: the key
		// keeps them for readers of the same definition.
		page, err := m.snaps.ReadKeyed(ctx, d.Table, ts, snapshot.KeyRange{After: after}, shapePageRows, filter, "shape "+d.Identity(), prepare)
		if err != nil {
			return w.rows, err
		}
		p := page.Prepared.(*keyedPage)
		start := 0
		for _, end := range p.ends {
			if err := w.add(p.buf[start:end]); err != nil {
				return w.rows, err
			}
			start = end
		}
		if page.Exhausted {
			return w.rows, w.finish(mvcc)
		}
		after = page.Last
	}
}

// shapePageRows is how many rows a page of a shape's snapshot reads.
const shapePageRows = 2048

// fillHeld runs the shape's query in a held snapshot's transaction (a
// table without a primary key) and stores the rows as chunks, the last
// ending with snapshot-end.
func (m *Manager) fillHeld(ctx context.Context, s *Shape, conn *pgx.Conn, ts int64, md *meta) (int, error) {
	w := &chunkWriter{m: m, s: s, md: md}
	w.startSnapshot(ts)
	var mvcc string
	if err := conn.QueryRow(ctx, "SELECT pg_current_snapshot()::text").Scan(&mvcc); err != nil {
		return 0, err
	}
	d := s.Def
	read := mergeSorted(d.Columns, d.Table.KeyColumns())
	cols := make([]string, len(read))
	for i, c := range read {
		cols[i] = quoteIdent(d.Table.Columns[c].Name)
	}
	q := "SELECT " + strings.Join(cols, ", ") + " FROM " + quoteIdent(d.Table.Schema) + "." + quoteIdent(d.Table.Name)
	if d.Where != "" {
		q += " WHERE " + d.Where
	}
	values := make([][]byte, len(d.Table.Columns))
	var msg, key []byte
	rr := conn.PgConn().ExecParams(ctx, q, nil, nil, nil, nil)
	for rr.NextRow() {
		for i, v := range rr.Values() {
			values[read[i]] = v
		}
		key = d.Table.AppendKey(key[:0], values)
		msg = s.enc.appendSnapshotRow(msg[:0], key, values)
		if err := w.add(msg); err != nil {
			rr.Close()
			return w.rows, err
		}
	}
	if _, err := rr.Close(); err != nil {
		return w.rows, err
	}
	return w.rows, w.finish(mvcc)
}

// vanishedCheck is how often shapes are checked for dropped tables.
const vanishedCheck = 30 * time.Second

// Run moves every shape's head along the log until ctx ends, and drops the
// shapes of tables that were dropped.
func (m *Manager) Run(ctx context.Context) {
	check := time.NewTicker(vanishedCheck)
	defer check.Stop()
	for {
		ch := m.store.Advanced()
		m.advance()
		select {
		case <-ctx.Done():
			return
		case <-ch:
		case <-check.C:
			if _, err := m.dropVanished(ctx); err != nil && ctx.Err() == nil {
				m.log.Warn().Err(err).Msg("checking shapes for dropped tables failed")
			}
		case <-time.After(time.Second):
		}
	}
}

// advance considers the changes logged since each shape last looked, table
// by table, and wakes the requests waiting on shapes that got messages.
func (m *Manager) advance() {
	pos := m.store.Durable()
	durable := pos.Ts
	groups := map[uint32][]*Shape{}
	m.mu.Lock()
	for _, s := range m.byHandle {
		s.mu.Lock()
		if s.snapDone && !s.gone && s.scanned < durable {
			groups[s.Def.Table.OID] = append(groups[s.Def.Table.OID], s)
		}
		s.mu.Unlock()
	}
	m.mu.Unlock()
	for oid, group := range groups {
		if err := m.advanceTable(oid, group, pos); err != nil {
			m.log.Error().Err(err).Uint32("table_oid", oid).Msg("advancing shapes failed")
		}
	}
}

func (m *Manager) advanceTable(oid uint32, group []*Shape, pos shapelog.Position) error {
	upTo := pos.Ts
	type progress struct {
		s       *Shape
		scanned int64
		head    Offset
		headTs  int64
		moved   bool
		invalid string
	}
	ps := make([]*progress, len(group))
	from := upTo
	for i, s := range group {
		s.mu.Lock()
		ps[i] = &progress{s: s, scanned: s.scanned, head: s.head, headTs: s.headTs}
		s.mu.Unlock()
		from = min(from, ps[i].scanned)
	}
	if from < m.store.Horizon() {
		for _, p := range ps {
			if p.scanned < m.store.Horizon() {
				m.invalidate(p.s, "its changes were pruned from the log")
			}
		}
		return nil
	}
	it, err := m.store.Changes(from, upTo, oid)
	if err != nil {
		return err
	}
	defer it.Close()
	commitTs := int64(-1)
	var commitLSN uint64
	for it.Next() {
		e := it.Entry()
		for _, p := range ps {
			if e.Ts <= p.scanned || p.invalid != "" {
				continue
			}
			msgs, err := p.s.conv.convert(e)
			var inv *errInvalid
			if errors.As(err, &inv) {
				p.invalid = inv.reason
				continue
			} else if err != nil {
				return err
			}
			if len(msgs) == 0 {
				continue
			}
			if e.Ts != commitTs {
				c, err := m.store.Commit(e.Ts)
				if err != nil {
					return err
				}
				commitTs, commitLSN = e.Ts, c.CommitLSN
			}
			p.head, p.headTs, p.moved = Offset{Tx: commitLSN, Op: uint64(e.Seq)*2 + uint64(len(msgs)-1)}, e.Ts, true
		}
	}
	if err := it.Err(); err != nil {
		return err
	}
	for _, p := range ps {
		if p.invalid != "" {
			m.invalidate(p.s, p.invalid)
			continue
		}
		p.s.mu.Lock()
		p.s.scanned, p.s.scannedLSN = upTo, pos.CommitLSN
		if p.moved {
			p.s.head, p.s.headTs = p.head, p.headTs
			p.s.notifyLocked()
		}
		p.s.mu.Unlock()
	}
	return nil
}
