package snapshot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/shapelog/shapelog/engine/catalog"
	"github.com/shapelog/shapelog/engine/shapelog"
)

// rewind knows, for one table and one snapshot ts, how each row the log
// saw change after ts looked at ts: the image before its first change. A
// page read later is turned back into the table as of ts with it (see
// Manager.rewindPage): a row whose first change the page's MVCC snapshot saw
// is replaced by that image (or dropped, when the row did not exist at ts).
//
// Only the first change of a row matters: changes to one row are
// serialised by PostgreSQL's row locks (and unique checks), so a snapshot
// that saw any of them saw the first. A TRUNCATE starts a new segment: a
// page that saw it is rewound to the empty table just after it, which the
// truncate in the changes after ts then makes right.
//
// The index holds a key and a pointer into the log per changed row; images
// are read from the log when a page needs them.
type rewind struct {
	ts      int64
	oid     uint32
	keyCols []string // the table's primary key the index is built for

	mu       sync.Mutex
	order    *keyOrder
	scanned  int64 // changes with ts <= scanned are indexed
	segments []*segment
	lastUsed time.Time
	// relation versions: where the key columns are in a change's values
	layouts map[uint32][]int
	xids    struct {
		ts  int64
		xid uint32
	}
}

// segment is the index between two truncates.
type segment struct {
	xid   uint32 // the truncating transaction; 0 for the first segment
	first map[string]*firstChange
	// gone are the rows that existed before their first change and that a
	// later change removed (deleted, or moved to another key): the only
	// rows a page may have to bring back. updated are the rows whose first
	// change updated them in place: a page filtered by a where clause may
	// miss those too (the update moved them out of it).
	gone, updated keyList
}

// keyList is a list of rows, sorted by key when the key order is Go's
// (sorted says up to where).
type keyList struct {
	fcs    []*firstChange
	sorted int
}

// image says where a row's image before its first change is.
type image byte

const (
	imageNone   image = iota // the row did not exist
	imageOld                 // the change's old row (an update)
	imageValues              // the change's values (a delete's old row)
)

// firstChange is a row's first change after the snapshot (or the truncate
// that started its segment).
type firstChange struct {
	xid     uint32
	key     []string // the row's primary-key values
	ts      int64    // where the change is in the log
	seq     uint32
	image   image
	removed bool // in the segment's gone list
}

func (l *keyList) add(fc *firstChange) {
	l.fcs = append(l.fcs, fc)
}

func newRewind(ts int64, t *catalog.Table) *rewind {
	return &rewind{ts: ts, oid: t.OID, keyCols: keyColumnNames(t), scanned: ts, segments: []*segment{{first: map[string]*firstChange{}}},
		layouts: map[uint32][]int{}, lastUsed: time.Now()}
}

func keyColumnNames(t *catalog.Table) []string {
	names := make([]string, len(t.Key))
	for i, k := range t.Key {
		names[i] = t.Columns[k].Name
	}
	return names
}

// encodeKey is a map key for primary-key text values.
func encodeKey(dst []byte, vals [][]byte) []byte {
	for _, v := range vals {
		dst = binary.AppendUvarint(dst, uint64(len(v)))
		dst = append(dst, v...)
	}
	return dst
}

// catchUp indexes the table's changes with ts in (scanned, upTo].
func (r *rewind) catchUp(store *shapelog.Store, upTo int64) error {
	if upTo <= r.scanned {
		return nil
	}
	it, err := store.Changes(r.scanned, upTo, r.oid)
	if err != nil {
		return err
	}
	defer it.Close()
	var keyBuf []byte
	for it.Next() {
		e := it.Entry()
		xid, err := r.xidOf(store, e.Ts)
		if err != nil {
			return err
		}
		seg := r.segments[len(r.segments)-1]
		if e.Op == shapelog.OpTruncate {
			r.segments = append(r.segments, &segment{xid: xid, first: map[string]*firstChange{}})
			continue
		}
		keyIdx, err := r.layout(store, e.Version)
		if err != nil {
			return err
		}
		// note records the row of row's key: its first change (with where
		// its image before is) and whether this change removes it.
		note := func(row [][]byte, before image, removes bool) {
			kv := make([][]byte, len(keyIdx))
			for i, k := range keyIdx {
				if k < len(row) {
					kv[i] = row[k]
				}
			}
			keyBuf = encodeKey(keyBuf[:0], kv)
			fc := seg.first[string(keyBuf)]
			if fc == nil {
				fc = &firstChange{xid: xid, ts: e.Ts, seq: e.Seq, image: before, key: make([]string, len(kv))}
				for i, v := range kv {
					fc.key[i] = string(v)
				}
				seg.first[string(keyBuf)] = fc
			}
			switch {
			case fc.image == imageNone:
				// nothing to bring back: the row was not there at ts
			case removes && !fc.removed:
				fc.removed = true
				seg.gone.add(fc)
			case !removes && fc.ts == e.Ts && fc.seq == e.Seq:
				seg.updated.add(fc) // its first change: an update in place
			}
		}
		switch e.Op {
		case shapelog.OpInsert:
			note(e.Values, imageNone, false)
		case shapelog.OpUpdate:
			if e.Old == nil {
				return fmt.Errorf("%w: an update of table %d at %d has no old row (the table is not REPLICA IDENTITY FULL)", errCannotRewind, r.oid, e.Ts)
			}
			if len(e.OldKey) > 0 {
				note(e.Old, imageOld, true)      // the old key's row went away
				note(e.Values, imageNone, false) // the new key's row appeared
			} else {
				note(e.Values, imageOld, false) // one row, changed
			}
		case shapelog.OpDelete:
			note(e.Values, imageValues, true)
		}
	}
	if err := it.Err(); err != nil {
		return err
	}
	r.scanned = upTo
	return nil
}

// errCannotRewind reports a change the log cannot turn back.
var errCannotRewind = fmt.Errorf("cannot rewind the table to the snapshot")

// xidOf is the transaction id of the logged transaction at ts.
func (r *rewind) xidOf(store *shapelog.Store, ts int64) (uint32, error) {
	if r.xids.ts == ts {
		return r.xids.xid, nil
	}
	c, err := store.Commit(ts)
	if err != nil {
		return 0, err
	}
	r.xids.ts, r.xids.xid = ts, c.Xid
	return c.Xid, nil
}

// layout returns where the key columns are in a relation version's values.
func (r *rewind) layout(store *shapelog.Store, version uint32) ([]int, error) {
	if idx, ok := r.layouts[version]; ok {
		return idx, nil
	}
	rel, err := store.Relation(r.oid, version)
	if err != nil {
		return nil, err
	}
	idx := make([]int, len(r.keyCols))
	for i, name := range r.keyCols {
		idx[i] = slices.IndexFunc(rel.Columns, func(c shapelog.Column) bool { return c.Name == name })
		if idx[i] < 0 {
			return nil, fmt.Errorf("%w: key column %q is not in the table's layout at the time of a change (the primary key changed)", errCannotRewind, name)
		}
	}
	r.layouts[version] = idx
	return idx, nil
}

// segmentFor is the segment a page with MVCC snapshot snap is rewound by:
// the one after the last truncate it saw.
func (r *rewind) segmentFor(snap *mvcc) *segment {
	for i := len(r.segments) - 1; i > 0; i-- {
		if snap.sees(r.segments[i].xid) {
			return r.segments[i]
		}
	}
	return r.segments[0]
}

// between returns the rows whose key may lie in (after, last] (nil bounds
// are open): exactly those when the key order is Go's (found by binary
// search in the sorted list), else all of them, for PostgreSQL to compare.
// exact says which. The result is only valid while r.mu is held.
func (l *keyList) between(o *keyOrder, after, last []string) (cands []*firstChange, exact bool) {
	if !o.isNative() {
		return l.fcs, false
	}
	if l.sorted < len(l.fcs) {
		sort.Slice(l.fcs, func(i, j int) bool { return o.compare(l.fcs[i].key, l.fcs[j].key) < 0 })
		l.sorted = len(l.fcs)
	}
	lo := 0
	if after != nil {
		lo = sort.Search(len(l.fcs), func(i int) bool { return o.compare(l.fcs[i].key, after) > 0 })
	}
	hi := len(l.fcs)
	if last != nil {
		hi = sort.Search(len(l.fcs), func(i int) bool { return o.compare(l.fcs[i].key, last) > 0 })
	}
	if lo >= hi {
		return nil, true
	}
	return l.fcs[lo:hi], true
}

// imageIn reads from the log a row's image before its first change, laid
// out by table t's current columns (matched by name; a column added since
// reads NULL).
func imageIn(store *shapelog.Store, t *catalog.Table, fc *firstChange) ([][]byte, error) {
	c, err := store.ChangeAt(t.OID, fc.ts, fc.seq)
	if errors.Is(err, shapelog.ErrExpired) {
		return nil, ErrTooOld // pruned while the page was read
	}
	if err != nil {
		return nil, err
	}
	before := c.Values
	if fc.image == imageOld {
		before = c.Old
	}
	rel, err := store.Relation(t.OID, c.Version)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(t.Columns))
	for i, col := range t.Columns {
		if j := slices.IndexFunc(rel.Columns, func(rc shapelog.Column) bool { return rc.Name == col.Name }); j >= 0 && j < len(before) {
			out[i] = before[j]
		}
	}
	return out, nil
}
