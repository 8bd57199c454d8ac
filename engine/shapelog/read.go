package shapelog

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble"
)

// Entry is one change read from the log.
type Entry struct {
	Ts  int64
	Seq uint32 // position inside the transaction: 0, 1, 2, …
	Change
}

// Iter walks changes in commit order. Entries are valid until the next call
// to Next.
type Iter struct {
	s       *Store
	table   uint32
	it      *pebble.Iterator
	entry   Entry
	err     error
	started bool // the pebble iterator is on the current entry
}

// Changes iterates the changes with after < ts <= upTo, of one table (its
// OID) or of all tables (table 0), in commit order. after must not be below
// the horizon (ErrExpired), and upTo should not pass Durable().Ts.
func (s *Store) Changes(after, upTo int64, table uint32) (*Iter, error) {
	if after < s.Horizon() {
		return nil, ErrExpired
	}
	it := &Iter{s: s, table: table}
	if upTo <= after {
		return it, nil
	}
	var opts pebble.IterOptions
	if table == 0 {
		opts = pebble.IterOptions{LowerBound: gKey(after+1, 0), UpperBound: gKey(upTo+1, 0)}
	} else {
		opts = pebble.IterOptions{LowerBound: tKey(table, after+1, 0), UpperBound: tKey(table, upTo+1, 0)}
	}
	var err error
	if it.it, err = s.db.NewIter(&opts); err != nil {
		return nil, err
	}
	// Prune raises the horizon before it deletes: if the iterator may miss
	// pruned changes, the horizon says so now.
	if after < s.Horizon() {
		_ = it.it.Close()
		return nil, ErrExpired
	}
	return it, nil
}

// Next advances to the next change.
func (it *Iter) Next() bool {
	if it.it == nil || it.err != nil {
		return false
	}
	// The current entry aliases the iterator's value, so the iterator moves
	// only now.
	if it.started {
		it.it.Next()
	} else {
		it.it.First()
		it.started = true
	}
	if !it.it.Valid() {
		return false
	}
	k := it.it.Key()
	var oid uint32
	var value []byte
	if it.table == 0 {
		oid = binary.BigEndian.Uint32(it.it.Value())
		ts, seq := int64(binary.BigEndian.Uint64(k[1:])), binary.BigEndian.Uint32(k[9:])
		v, closer, err := it.s.db.Get(tKey(oid, ts, seq))
		if err != nil {
			it.err = fmt.Errorf("shapelog: change %d/%d of table %d: %w", ts, seq, oid, err)
			return false
		}
		value = append(value, v...)
		closer.Close()
		it.entry.Ts, it.entry.Seq = ts, seq
	} else {
		oid = it.table
		it.entry.Ts = int64(binary.BigEndian.Uint64(k[5:]))
		it.entry.Seq = binary.BigEndian.Uint32(k[13:])
		value = it.it.Value()
	}
	if err := decodeChange(value, oid, &it.entry.Change); err != nil {
		it.err = fmt.Errorf("shapelog: change %d/%d of table %d: %w", it.entry.Ts, it.entry.Seq, oid, err)
		return false
	}
	return true
}

// Entry is the current change.
func (it *Iter) Entry() *Entry { return &it.entry }

// Err is the error that stopped iteration, if any.
func (it *Iter) Err() error { return it.err }

// Close releases the iterator.
func (it *Iter) Close() error {
	if it.it == nil {
		return it.err
	}
	err := it.it.Close()
	if it.err != nil {
		return it.err
	}
	return err
}

// LastTsBefore returns the ts of the last logged transaction whose commit LSN
// is below lsn, or ok=false when there is none in the log.
func (s *Store) LastTsBefore(lsn uint64) (ts int64, ok bool, err error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte("l"), UpperBound: lKey(lsn)})
	if err != nil {
		return 0, false, err
	}
	defer it.Close()
	if !it.Last() {
		return 0, false, it.Error()
	}
	return int64(binary.BigEndian.Uint64(it.Value())), true, nil
}

// Prune removes every transaction with ts <= before and raises the horizon
// to it: cursors below it then get ErrExpired.
func (s *Store) Prune(before int64) error {
	if before <= s.Horizon() {
		return nil
	}
	if d := s.Durable().Ts; before > d {
		before = d
	}
	// Commit LSNs grow with ts: the LSN index is cut at the first kept commit.
	var lsnCut []byte
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: cKey(before + 1), UpperBound: []byte("d")})
	if err != nil {
		return err
	}
	if it.First() {
		lsnCut = lKey(binary.BigEndian.Uint64(it.Value()))
	} else {
		lsnCut = []byte("m")
	}
	if err := it.Close(); err != nil {
		return err
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := s.deleteXids(b, before); err != nil {
		return err
	}
	_ = b.DeleteRange(gKey(0, 0), gKey(before+1, 0), nil)
	_ = b.DeleteRange(cKey(0), cKey(before+1), nil)
	_ = b.DeleteRange(lKey(0), lsnCut, nil)
	// Readers see the new horizon before any deletion: one that opened its
	// iterator after the deletions re-checks the horizon and gets
	// ErrExpired instead of a silently shortened range.
	s.mu.Lock()
	for oid := range s.relations {
		_ = b.DeleteRange(tKey(oid, 0, 0), tKey(oid, before+1, 0), nil)
	}
	s.durable.Horizon = before
	s.mu.Unlock()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	st := s.written
	st.Horizon = before
	_ = b.Set(stateKey, st.encode(), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		return err
	}
	s.written.Horizon = before
	return nil
}

// TsAtOrBefore returns the ts of the last transaction committed (by
// PostgreSQL's clock) at or before commitTime, for time-based retention.
func (s *Store) TsAtOrBefore(commitTime int64) (int64, bool, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte("c"), UpperBound: []byte("d")})
	if err != nil {
		return 0, false, err
	}
	defer it.Close()
	// ts >= commit time for every transaction, so every ts <= commitTime
	// qualifies; walk back from there over the few whose ts was bumped.
	for valid := it.SeekLT(cKey(commitTime + 1)); valid; valid = it.Prev() {
		c, err := decodeCommit(int64(binary.BigEndian.Uint64(it.Key()[1:])), it.Value())
		if err != nil {
			return 0, false, err
		}
		if c.CommitTime <= commitTime {
			return c.Ts, true, nil
		}
	}
	return 0, false, it.Error()
}

// Commit returns the commit record of the transaction with timestamp ts.
func (s *Store) Commit(ts int64) (Commit, error) {
	v, closer, err := s.db.Get(cKey(ts))
	if errors.Is(err, pebble.ErrNotFound) {
		if ts <= s.Horizon() {
			return Commit{}, ErrExpired
		}
		return Commit{}, fmt.Errorf("shapelog: no transaction with ts %d", ts)
	}
	if err != nil {
		return Commit{}, err
	}
	defer closer.Close()
	return decodeCommit(ts, v)
}

// TsOfCommit returns the ts of the logged transaction whose commit LSN is
// lsn, or ok=false when the log holds no such transaction (never logged, or
// pruned).
func (s *Store) TsOfCommit(lsn uint64) (ts int64, ok bool, err error) {
	v, closer, err := s.db.Get(lKey(lsn))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, false, errCorrupt
	}
	return int64(binary.BigEndian.Uint64(v)), true, nil
}

// deleteXids adds to b the deletion of the transaction-id index entries of
// the commits with ts <= before.
func (s *Store) deleteXids(b *pebble.Batch, before int64) error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: cKey(0), UpperBound: cKey(before + 1)})
	if err != nil {
		return err
	}
	for valid := it.First(); valid; valid = it.Next() {
		c, err := decodeCommit(int64(binary.BigEndian.Uint64(it.Key()[1:])), it.Value())
		if err != nil {
			it.Close()
			return err
		}
		_ = b.Delete(xKey(c.Xid, c.Ts), nil)
	}
	return it.Close()
}

// TxnsByXid calls fn, in transaction-id order, with each durable logged
// transaction whose PostgreSQL transaction id (32 bits, as pgoutput sends
// it) is in [from, to), until fn returns false. to is exclusive and may be
// 1<<32. A transaction id reused after wraparound may appear more than once,
// with different timestamps.
func (s *Store) TxnsByXid(from uint32, to uint64, fn func(xid uint32, ts int64) bool) error {
	upper := []byte("y")
	if to < 1<<32 {
		upper = xKey(uint32(to), 0)
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: xKey(from, 0), UpperBound: upper})
	if err != nil {
		return err
	}
	defer it.Close()
	durable := s.Durable().Ts
	for valid := it.First(); valid; valid = it.Next() {
		k := it.Key()
		if len(k) != 13 {
			return errCorrupt
		}
		ts := int64(binary.BigEndian.Uint64(k[5:]))
		if ts > durable {
			continue
		}
		if !fn(binary.BigEndian.Uint32(k[1:]), ts) {
			return nil
		}
	}
	return it.Error()
}

// ChangeAt returns the change at (ts, seq) of table, decoded into memory of
// its own.
func (s *Store) ChangeAt(table uint32, ts int64, seq uint32) (*Change, error) {
	v, closer, err := s.db.Get(tKey(table, ts, seq))
	if errors.Is(err, pebble.ErrNotFound) {
		if ts <= s.Horizon() {
			return nil, ErrExpired
		}
		return nil, fmt.Errorf("shapelog: no change %d/%d of table %d", ts, seq, table)
	}
	if err != nil {
		return nil, err
	}
	b := append([]byte(nil), v...)
	closer.Close()
	c := &Change{}
	if err := decodeChange(b, table, c); err != nil {
		return nil, fmt.Errorf("shapelog: change %d/%d of table %d: %w", ts, seq, table, err)
	}
	return c, nil
}
