package shapelog

import (
	"encoding/binary"
	"fmt"
)

// Net iterates changes like Changes, reduced to each transaction's net
// effect on each row: a row changed several times in one transaction comes
// out once, as it was at the commit, so every row has one version per ts.
//
//   - changes to a row after its first one in the transaction replace it:
//     insert then update is the final row (an insert's state), update then
//     delete is the delete;
//   - a row that did not exist before the transaction and does not after it
//     (insert then delete, or moved in by a key change and out again)
//     leaves nothing;
//   - a key change A→B is a delete of A (if A is not there at the commit and
//     existed before) and B's last version;
//   - a TRUNCATE drops the table's changes before it in the transaction, and
//     only the last TRUNCATE of a table in a transaction is kept.
//
// Rows are identified by their key only in tables whose key identifies
// them (collapse says which, by relation and version). The changes of the
// other tables pass as they are, except those a later TRUNCATE of their
// table in the transaction drops.
//
// A transaction is held in memory while it is small; a larger one is
// read twice (the second pass from the log), keeping only its keys; one
// that touches more than maxNetRows rows (a bulk load) passes as it is.
type Net struct {
	s        *Store
	table    uint32
	src      *Iter
	collapse func(relation, version uint32) (bool, error)

	next *Entry // the first change of the following transaction (src's)

	// The transaction being yielded.
	ts      int64
	buf     []Entry // its changes, copied, while it is small
	arena   []byte
	held    int  // bytes of the changes in buf
	spilled bool // too large to hold: replay reads it again
	// whole: the transaction touched more than maxNetRows rows, which are
	// passed as they are rather than collapsed.
	whole     bool
	replay    *Iter // the second pass over a spilled transaction
	pos       int
	rows      map[string]rowState // by relation and key
	truncated map[uint32]uint32   // relation → seq of its last TRUNCATE
	kinds     map[uint64]bool     // relation<<32|version → collapse's answer

	out Entry
	err error
}

// rowState is what one transaction did to one row.
type rowState struct {
	last    uint32 // the seq of the last change that touched it
	created bool   // its first change brought it into existence
}

// holdBytes bounds the bytes of a transaction's changes held in memory,
// counting entryBytes for each change besides its values.
const (
	holdBytes  = 4 << 20
	entryBytes = 160
)

// maxNetRows bounds the rows (keys) noted for one transaction, about 100
// bytes each: a transaction that touches more (a bulk load) is passed
// through uncollapsed, so memory stays bounded whatever its size.
var maxNetRows = 1 << 20 // a variable for tests

// NetChanges is Changes (same arguments and errors) reduced to each
// transaction's net effect (see Net). collapse reports whether a relation
// version's key identifies its rows.
func (s *Store) NetChanges(after, upTo int64, table uint32, collapse func(relation, version uint32) (bool, error)) (*Net, error) {
	src, err := s.Changes(after, upTo, table)
	if err != nil {
		return nil, err
	}
	return &Net{s: s, table: table, src: src, collapse: collapse, rows: map[string]rowState{},
		truncated: map[uint32]uint32{}, kinds: map[uint64]bool{}}, nil
}

// Next advances to the next change.
func (n *Net) Next() bool {
	for n.err == nil {
		if n.NextInTransaction() {
			return true
		}
		if n.err != nil || !n.load() {
			return false
		}
	}
	return false
}

// NextInTransaction is Next within the current transaction: false at its
// end, without reading the next one.
func (n *Net) NextInTransaction() bool {
	for n.err == nil {
		e, ok := n.candidate()
		if !ok {
			return false
		}
		if n.keep(e) {
			return true
		}
	}
	return false
}

// More reports whether a transaction follows the current one, reading one
// change ahead rather than the whole transaction.
func (n *Net) More() bool {
	if n.next == nil && n.err == nil && n.src.Next() {
		n.next = n.src.Entry()
	}
	return n.next != nil
}

// Entry is the current change. It is valid until the next call to Next.
func (n *Net) Entry() *Entry { return &n.out }

// Err is the error that stopped iteration, if any.
func (n *Net) Err() error {
	if n.err != nil {
		return n.err
	}
	return n.src.Err()
}

// Close releases the iterators.
func (n *Net) Close() error {
	if n.replay != nil {
		_ = n.replay.Close()
		n.replay = nil
	}
	err := n.src.Close()
	if n.err != nil {
		return n.err
	}
	return err
}

// candidate is the current transaction's next change, before filtering.
func (n *Net) candidate() (*Entry, bool) {
	if n.replay != nil {
		if n.replay.Next() {
			return n.replay.Entry(), true
		}
		if err := n.replay.Close(); err != nil {
			n.err = err
		}
		n.replay = nil
		return nil, false
	}
	if n.pos < len(n.buf) {
		n.pos++
		return &n.buf[n.pos-1], true
	}
	return nil, false
}

// load reads the next transaction, noting what it does to each row, and
// reports whether there is one.
func (n *Net) load() bool {
	if n.next == nil {
		if !n.src.Next() {
			return false
		}
		n.next = n.src.Entry()
	}
	n.ts, n.buf, n.arena, n.held, n.pos, n.spilled, n.whole = n.next.Ts, n.buf[:0], n.arena[:0], 0, 0, false, false
	clear(n.rows)
	clear(n.truncated)
	for e := n.next; ; e = n.src.Entry() {
		if e.Ts != n.ts {
			n.next = e
			break
		}
		if !n.spilled && !n.hold(e) || n.spilled && !n.note(e) {
			return false
		}
		if !n.src.Next() {
			n.next = nil
			break
		}
	}
	if n.spilled {
		// The transaction was too large to hold: read it again.
		if n.replay, n.err = n.s.Changes(n.ts-1, n.ts, n.table); n.err != nil {
			n.err = fmt.Errorf("reading transaction %d again: %w", n.ts, n.err)
			return false
		}
		return true
	}
	if len(n.buf) > 1 {
		for i := range n.buf {
			if !n.note(&n.buf[i]) {
				return false
			}
		}
	}
	return true
}

// hold copies e into the transaction's buffer; past holdBytes it notes
// the changes held so far and lets them go. It reports false on error.
func (n *Net) hold(e *Entry) bool {
	c := Entry{Ts: e.Ts, Seq: e.Seq, Change: Change{Op: e.Op, Relation: e.Relation, Version: e.Version}}
	c.Key, c.OldKey = n.copyBytes(e.Key), n.copyBytes(e.OldKey)
	c.Values = make([][]byte, len(e.Values))
	for i, v := range e.Values {
		c.Values[i] = n.copyBytes(v)
	}
	if e.Old != nil {
		c.Old = make([][]byte, len(e.Old))
		for i, v := range e.Old {
			c.Old[i] = n.copyBytes(v)
		}
	}
	n.buf = append(n.buf, c)
	n.held += entryBytes
	if n.held <= holdBytes {
		return true
	}
	n.spilled = true
	for i := range n.buf {
		if !n.note(&n.buf[i]) {
			return false
		}
	}
	n.buf, n.arena = n.buf[:0], n.arena[:0]
	return true
}

// copyBytes copies b (nil stays nil, empty stays empty) into the arena. A
// full arena is replaced rather than grown in place, so earlier copies
// stay valid.
func (n *Net) copyBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	if n.arena == nil || len(n.arena)+len(b) > cap(n.arena) {
		n.arena = make([]byte, 0, max(2*cap(n.arena), len(b), 4096))
	}
	start := len(n.arena)
	n.arena = append(n.arena, b...)
	n.held += len(b)
	return n.arena[start:len(n.arena):len(n.arena)]
}

// rowKey is the map key of a row: its relation and key.
func rowKey(relation uint32, key []byte) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], relation)
	return string(b[:]) + string(key)
}

// identifies reports whether e's relation version identifies rows by key.
func (n *Net) identifies(e *Entry) (bool, error) {
	k := uint64(e.Relation)<<32 | uint64(e.Version)
	if v, ok := n.kinds[k]; ok {
		return v, nil
	}
	v, err := n.collapse(e.Relation, e.Version)
	if err != nil {
		return false, err
	}
	n.kinds[k] = v
	return v, nil
}

// note records what change e does to its rows, and reports false on error.
func (n *Net) note(e *Entry) bool {
	if e.Op == OpTruncate {
		n.truncated[e.Relation] = e.Seq
		prefix := rowKey(e.Relation, nil)
		for k := range n.rows {
			if k[:4] == prefix {
				delete(n.rows, k)
			}
		}
		return true
	}
	if n.whole {
		return true
	}
	ok, err := n.identifies(e)
	if err != nil {
		n.err = err
		return false
	}
	if !ok {
		return true
	}
	if len(n.rows) >= maxNetRows {
		n.whole = true
		clear(n.rows)
		return true
	}
	touch := func(key []byte, creates bool) {
		k := rowKey(e.Relation, key)
		if st, seen := n.rows[k]; seen {
			st.last = e.Seq
			n.rows[k] = st
			return
		}
		n.rows[k] = rowState{last: e.Seq, created: creates}
	}
	if e.OldKey != nil {
		touch(e.OldKey, false)
	}
	touch(e.Key, e.Op == OpInsert || (e.Op == OpUpdate && e.OldKey != nil))
	return true
}

// keep decides what of change e the transaction's net effect keeps, and
// sets it as the current entry.
func (n *Net) keep(e *Entry) bool {
	if t, ok := n.truncated[e.Relation]; ok && e.Seq < t {
		return false // the table's later TRUNCATE in the transaction wipes it
	}
	n.out = *e
	if e.Op == OpTruncate || n.whole || (len(n.rows) == 0 && !n.spilled) {
		return true // nothing to collapse
	}
	ok, err := n.identifies(e)
	if err != nil {
		n.err = err
		return false
	}
	if !ok {
		return true
	}
	st, seen := n.rows[rowKey(e.Relation, e.Key)]
	newSide := seen && st.last == e.Seq && !(e.Op == OpDelete && st.created)
	if e.OldKey == nil {
		return newSide
	}
	old, seen := n.rows[rowKey(e.Relation, e.OldKey)]
	oldSide := seen && old.last == e.Seq && !old.created
	switch {
	case newSide && !oldSide:
		n.out.OldKey, n.out.Old = nil, nil
	case oldSide && !newSide:
		// Only the old key's removal remains: a delete of the old row.
		n.out.Op, n.out.Key, n.out.OldKey, n.out.Values, n.out.Old = OpDelete, e.OldKey, nil, e.Old, nil
	}
	return newSide || oldSide
}
