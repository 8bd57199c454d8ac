// Package shapelog is the engine's durable change log: every committed
// transaction replicated from PostgreSQL, stored in an embedded crash-safe
// store (pebble), readable per table or in global commit order.
//
// Each transaction gets a timestamp (ts): nanoseconds since the epoch taken
// from its commit time and made strictly increasing in commit order; all its
// changes share it. Readers only ever see durable transactions: a commit
// becomes visible once the store has synced it to disk, which is also the
// moment its LSN may be confirmed to PostgreSQL.
//
// Key layout (all integers big-endian so byte order is numeric order):
//
//	m<name>                    metadata (state)
//	r<oid:4><version:4>        relation (table) versions, JSON
//	c<ts:8>                    commit records
//	l<commitLSN:8>             commit LSN -> ts
//	g<ts:8><seq:4>             global order -> table oid
//	t<oid:4><ts:8><seq:4>      changes, per table
//	x<xid:4><ts:8>             transaction id -> ts (empty value)
package shapelog

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble"
	"github.com/rs/zerolog"
)

// ErrExpired reports a cursor below the retention horizon: the changes after
// it are no longer in the log.
var ErrExpired = errors.New("cursor is older than the log's retention window")

// Position is a point in the log: the last transaction at or before it.
type Position struct {
	Ts        int64  // last ts (commit or reservation)
	CommitLSN uint64 // commit LSN of the last transaction
	EndLSN    uint64 // end LSN of the last transaction: safe to confirm to PostgreSQL
}

type state struct {
	Position
	Horizon int64 // changes with ts <= Horizon have been pruned (or were never logged)
}

func (s state) encode() []byte {
	b := make([]byte, 0, 32)
	b = binary.BigEndian.AppendUint64(b, uint64(s.Ts))
	b = binary.BigEndian.AppendUint64(b, s.CommitLSN)
	b = binary.BigEndian.AppendUint64(b, s.EndLSN)
	b = binary.BigEndian.AppendUint64(b, uint64(s.Horizon))
	return b
}

func decodeState(b []byte) (state, error) {
	if len(b) != 32 {
		return state{}, errCorrupt
	}
	return state{
		Position: Position{
			Ts:        int64(binary.BigEndian.Uint64(b)),
			CommitLSN: binary.BigEndian.Uint64(b[8:]),
			EndLSN:    binary.BigEndian.Uint64(b[16:]),
		},
		Horizon: int64(binary.BigEndian.Uint64(b[24:])),
	}, nil
}

var stateKey = []byte("mstate")

// Store is the durable change log. One goroutine writes (the replication
// loop); any number read.
type Store struct {
	db  *pebble.DB
	log zerolog.Logger

	wmu     sync.Mutex // serialises writers: lastTs and the state record
	written state      // last written (not necessarily synced) state

	mu        sync.Mutex
	durable   state         // last synced state; readers see up to durable.Ts
	advanced  chan struct{} // closed and replaced whenever durable advances
	relations map[uint32][]*Relation
	syncReq   chan struct{}
	closed    chan struct{}
	syncDone  chan struct{}
	syncErr   atomic.Pointer[error]
}

// Open opens (or creates) the store in dir, discarding any transaction that
// was written but never made durable before a crash.
func Open(dir string, log zerolog.Logger) (*Store, error) {
	opts := &pebble.Options{
		Logger:       pebbleLogger{log},
		MemTableSize: 32 << 20,
		Cache:        pebble.NewCache(32 << 20),
	}
	defer opts.Cache.Unref()
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("opening shape log store in %s: %w", dir, err)
	}
	s := &Store{
		db:        db,
		log:       log,
		advanced:  make(chan struct{}),
		relations: map[uint32][]*Relation{},
		syncReq:   make(chan struct{}, 1),
		closed:    make(chan struct{}),
		syncDone:  make(chan struct{}),
	}
	if err := s.load(); err != nil {
		db.Close()
		return nil, err
	}
	go s.syncLoop()
	return s, nil
}

func (s *Store) load() error {
	v, closer, err := s.db.Get(stateKey)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return err
	default:
		st, derr := decodeState(v)
		closer.Close()
		if derr != nil {
			return derr
		}
		s.written, s.durable = st, st
	}
	iter, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte("r"), UpperBound: []byte("s")})
	if err != nil {
		return err
	}
	for iter.First(); iter.Valid(); iter.Next() {
		var rel Relation
		if err := json.Unmarshal(iter.Value(), &rel); err != nil {
			iter.Close()
			return fmt.Errorf("relation record: %w", err)
		}
		s.relations[rel.OID] = append(s.relations[rel.OID], &rel)
	}
	if err := iter.Close(); err != nil {
		return err
	}
	// A transaction written but not committed durably before a crash leaves
	// changes above the state's ts: remove them, PostgreSQL will resend it.
	return s.discardAbove(s.written.Ts)
}

// discardAbove deletes every change and commit with ts > ts.
func (s *Store) discardAbove(ts int64) error {
	if ts == math.MaxInt64 {
		return nil
	}
	b := s.db.NewBatch()
	defer b.Close()
	_ = b.DeleteRange(gKey(ts+1, 0), []byte("h"), nil)
	_ = b.DeleteRange(cKey(ts+1), []byte("d"), nil)
	for oid := range s.relations {
		_ = b.DeleteRange(tKey(oid, ts+1, 0), tKey(oid+1, 0, 0), nil)
	}
	return b.Commit(pebble.Sync)
}

// Close stops the sync loop and closes the store.
func (s *Store) Close() error {
	close(s.closed)
	<-s.syncDone
	return s.db.Close()
}

func gKey(ts int64, seq uint32) []byte {
	k := make([]byte, 13)
	k[0] = 'g'
	binary.BigEndian.PutUint64(k[1:], uint64(ts))
	binary.BigEndian.PutUint32(k[9:], seq)
	return k
}

func tKey(oid uint32, ts int64, seq uint32) []byte {
	k := make([]byte, 17)
	k[0] = 't'
	binary.BigEndian.PutUint32(k[1:], oid)
	binary.BigEndian.PutUint64(k[5:], uint64(ts))
	binary.BigEndian.PutUint32(k[13:], seq)
	return k
}

func cKey(ts int64) []byte {
	k := make([]byte, 9)
	k[0] = 'c'
	binary.BigEndian.PutUint64(k[1:], uint64(ts))
	return k
}

func lKey(lsn uint64) []byte {
	k := make([]byte, 9)
	k[0] = 'l'
	binary.BigEndian.PutUint64(k[1:], lsn)
	return k
}

func xKey(xid uint32, ts int64) []byte {
	k := make([]byte, 13)
	k[0] = 'x'
	binary.BigEndian.PutUint32(k[1:], xid)
	binary.BigEndian.PutUint64(k[5:], uint64(ts))
	return k
}

func rKey(oid, version uint32) []byte {
	k := make([]byte, 9)
	k[0] = 'r'
	binary.BigEndian.PutUint32(k[1:], oid)
	binary.BigEndian.PutUint32(k[5:], version)
	return k
}

// Written is the position of the last written transaction (durable or not).
func (s *Store) Written() Position {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.written.Position
}

// Durable is the position of the last durable transaction: readers see up to
// its ts, and its EndLSN may be confirmed to PostgreSQL.
func (s *Store) Durable() Position {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.durable.Position
}

// Horizon is the lowest cursor the log can serve: changes at or below it are
// gone (pruned, or from before the log began).
func (s *Store) Horizon() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.durable.Horizon
}

// Advanced returns a channel closed when the durable position next moves.
// Thousands of waiters share one channel, so waiting costs nothing per change.
func (s *Store) Advanced() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.advanced
}

// nextTs is the timestamp for a transaction committed at wall time t (ns):
// t itself unless that would not be strictly after the previous one.
func nextTs(last, t int64) int64 {
	if t <= last {
		return last + 1
	}
	return t
}

// Init starts an empty log at the replication slot's consistent point: the
// log's horizon is a fresh timestamp, and the log begins after lsn.
func (s *Store) Init(now int64, lsn uint64) error {
	s.wmu.Lock()
	st := s.written
	st.Ts = nextTs(st.Ts, now)
	st.Horizon = st.Ts
	st.CommitLSN, st.EndLSN = lsn, lsn
	if err := s.db.Set(stateKey, st.encode(), pebble.Sync); err != nil {
		s.wmu.Unlock()
		return err
	}
	s.written = st
	s.wmu.Unlock()
	s.mu.Lock()
	s.durable = st
	s.mu.Unlock()
	s.publish(st)
	return nil
}

// Initialized reports whether the log has been started (Init) before.
func (s *Store) Initialized() bool { return s.Written().EndLSN != 0 }

// publish advances the durable state and wakes readers.
func (s *Store) publish(st state) {
	s.mu.Lock()
	if st.Ts > s.durable.Ts || st.EndLSN > s.durable.EndLSN || st.Horizon > s.durable.Horizon {
		if st.Horizon < s.durable.Horizon {
			st.Horizon = s.durable.Horizon
		}
		s.durable = st
		close(s.advanced)
		s.advanced = make(chan struct{})
	}
	s.mu.Unlock()
}

// syncLoop makes written transactions durable in groups: while one fsync
// runs, the writer keeps appending, and the next fsync covers all of it.
func (s *Store) syncLoop() {
	defer close(s.syncDone)
	for {
		select {
		case <-s.closed:
			return
		case <-s.syncReq:
		}
		s.wmu.Lock()
		st := s.written
		s.wmu.Unlock()
		if err := s.db.LogData(nil, pebble.Sync); err != nil {
			s.log.Error().Err(err).Msg("syncing the shape log failed")
			s.syncErr.Store(&err)
			continue
		}
		s.publish(st)
	}
}

func (s *Store) requestSync() {
	select {
	case s.syncReq <- struct{}{}:
	default:
	}
}

// Err reports a failed background sync; the writer must stop then.
func (s *Store) Err() error {
	if p := s.syncErr.Load(); p != nil {
		return *p
	}
	return nil
}

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
