package snapshot

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/shapelog/shapelog/engine/catalog"
	"github.com/shapelog/shapelog/engine/shapelog"
)

// rewind knows, for one table and one snapshot ts, how each row the log
// saw change after ts looked at ts: the image before its first change. A
// page read later is turned back into the table as of ts with it (see
// Manager.Read): a row whose first change the page's MVCC snapshot saw is
// replaced by that image (or dropped, when the row did not exist at ts).
//
// Only the first change of a row matters: changes to one row are
// serialised by PostgreSQL's row locks (and unique checks), so a snapshot
// that saw any of them saw the first. A TRUNCATE starts a new segment: a
// page that saw it is rewound to the empty table just after it, which the
// truncate in the changes after ts then makes right.
type rewind struct {
	ts      int64
	oid     uint32
	keyCols []string // the table's primary key the index is built for

	mu       sync.Mutex
	order    *keyOrder
	scanned  int64 // changes with ts <= scanned are indexed
	segments []*segment
	lastUsed time.Time
	// relation versions: how to find the key columns in a change's values
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
}

// firstChange is a row's first change after the snapshot (or the truncate
// that started its segment).
type firstChange struct {
	xid     uint32
	key     []string // the row's primary-key values
	before  [][]byte // the row before the change, by relation version; nil: it did not exist
	version uint32
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
		note := func(row [][]byte, before [][]byte) {
			if row == nil {
				return
			}
			kv := make([][]byte, len(keyIdx))
			for i, k := range keyIdx {
				if k < len(row) {
					kv[i] = row[k]
				}
			}
			keyBuf = encodeKey(keyBuf[:0], kv)
			if _, ok := seg.first[string(keyBuf)]; ok {
				return
			}
			fc := &firstChange{xid: xid, version: e.Version, key: make([]string, len(kv))}
			for i, v := range kv {
				fc.key[i] = string(v)
			}
			if before != nil {
				fc.before = make([][]byte, len(before))
				for i, v := range before {
					if v != nil {
						fc.before[i] = slices.Clone(v)
						if fc.before[i] == nil {
							fc.before[i] = []byte{}
						}
					}
				}
			}
			seg.first[string(keyBuf)] = fc
		}
		switch e.Op {
		case shapelog.OpInsert:
			note(e.Values, nil)
		case shapelog.OpUpdate:
			if e.Old == nil {
				return fmt.Errorf("%w: an update of table %d at %d has no old row (the table is not REPLICA IDENTITY FULL)", errCannotRewind, r.oid, e.Ts)
			}
			if len(e.OldKey) > 0 {
				note(e.Old, e.Old)  // the old key's row went away
				note(e.Values, nil) // the new key's row appeared
			} else {
				note(e.Values, e.Old) // one row, changed
			}
		case shapelog.OpDelete:
			note(e.Values, e.Values)
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

// imageIn lays a stored before-image out by table t's current columns
// (matched by name; a column added since reads NULL).
func imageIn(store *shapelog.Store, t *catalog.Table, oid uint32, fc *firstChange) ([][]byte, error) {
	rel, err := store.Relation(oid, fc.version)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(t.Columns))
	for i, c := range t.Columns {
		if j := slices.IndexFunc(rel.Columns, func(rc shapelog.Column) bool { return rc.Name == c.Name }); j >= 0 && j < len(fc.before) {
			out[i] = fc.before[j]
		}
	}
	return out, nil
}
