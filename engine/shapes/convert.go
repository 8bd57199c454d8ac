package shapes

import (
	"fmt"
	"slices"

	"github.com/shapelog/shapelog/engine/shapelog"
)

// layout maps one relation version's columns onto the table columns the
// shape was defined over.
type layout struct {
	idx []int // table column → column of the version; -1 = not needed
	// bad says why changes of this version invalidate the shape ("" = fine).
	bad string
}

// needed are the table columns a shape reads: selected, key and where
// columns.
func (d *Definition) needed() []int {
	cols := slices.Clone(d.Columns)
	cols = append(cols, d.Table.KeyColumns()...)
	if d.filter != nil {
		cols = append(cols, d.filter.Columns()...)
	}
	slices.Sort(cols)
	return slices.Compact(cols)
}

func (s *Shape) layoutOf(rel *shapelog.Relation) *layout {
	s.layoutMu.Lock()
	defer s.layoutMu.Unlock()
	if l := s.layouts[rel.Version]; l != nil {
		return l
	}
	d := s.Def
	l := &layout{idx: make([]int, len(d.Table.Columns))}
	for i := range l.idx {
		l.idx[i] = -1
	}
	switch {
	case rel.Schema != d.Table.Schema || rel.Name != d.Table.Name:
		l.bad = fmt.Sprintf("table renamed to %s.%s", rel.Schema, rel.Name)
	case !d.Explicit && len(rel.Columns) != len(d.Table.Columns):
		l.bad = "columns added or dropped"
	}
	for _, i := range s.needed {
		c := d.Table.Columns[i]
		j := slices.IndexFunc(rel.Columns, func(rc shapelog.Column) bool { return rc.Name == c.Name })
		switch {
		case j < 0:
			l.bad = "column " + c.Name + " dropped or renamed"
		case rel.Columns[j].TypeOID != c.Type.OID:
			l.bad = "type of column " + c.Name + " changed"
		}
		l.idx[i] = j
	}
	s.layouts[rel.Version] = l
	return l
}

// errInvalid is returned by convert when a change invalidates the shape
// (TRUNCATE, a relevant schema change): clients must refetch.
type errInvalid struct{ reason string }

func (e *errInvalid) Error() string { return "shape invalidated: " + e.reason }

// converter turns logged changes into the shape's messages.
type converter struct {
	s        *Shape
	new, old [][]byte
	changed  []int
	out      [2]change
}

func (c *converter) arrange(dst [][]byte, src [][]byte, l *layout) [][]byte {
	dst = dst[:0]
	for _, j := range l.idx {
		if j < 0 || j >= len(src) {
			dst = append(dst, nil)
		} else {
			dst = append(dst, src[j])
		}
	}
	return dst
}

func (c *converter) match(values [][]byte) bool {
	f := c.s.Def.filter
	if f == nil {
		return true
	}
	ok, err := f.Match(values)
	return err == nil && ok
}

// deleteCols are the columns a delete message carries.
func (c *converter) deleteCols() []int {
	d := c.s.Def
	if d.Full || len(d.Table.Key) == 0 {
		return d.Columns
	}
	return d.Table.Key
}

// convert returns the messages (zero, one, or a key change's two) entry
// makes in the shape. They alias the converter until the next call.
func (c *converter) convert(e *shapelog.Entry) ([]change, error) {
	if e.Op == shapelog.OpTruncate {
		return nil, &errInvalid{"table truncated"}
	}
	rel, err := c.s.m.store.Relation(e.Relation, e.Version)
	if err != nil {
		return nil, err
	}
	l := c.s.layoutOf(rel)
	if l.bad != "" {
		return nil, &errInvalid{l.bad}
	}
	d := c.s.Def
	out := c.out[:0]
	switch e.Op {
	case shapelog.OpInsert:
		c.new = c.arrange(c.new, e.Values, l)
		if !c.match(c.new) {
			return nil, nil
		}
		out = append(out, change{op: "insert", key: e.Key, values: c.new, cols: d.Columns})
	case shapelog.OpDelete:
		c.old = c.arrange(c.old, e.Values, l)
		if !c.match(c.old) {
			return nil, nil
		}
		out = append(out, change{op: "delete", key: e.Key, values: c.old, cols: c.deleteCols()})
	case shapelog.OpUpdate:
		c.new = c.arrange(c.new, e.Values, l)
		hasOld := e.Old != nil
		if hasOld {
			c.old = c.arrange(c.old, e.Old, l)
		} else {
			c.old = c.new
		}
		inNew, inOld := c.match(c.new), c.match(c.old)
		oldKey := e.Key
		if e.OldKey != nil {
			oldKey = e.OldKey
		}
		switch {
		case inNew && inOld && e.OldKey != nil:
			out = append(out,
				change{op: "delete", key: oldKey, values: c.old, cols: c.deleteCols(), keyChange: "key_change_to", otherKey: string(e.Key)},
				change{op: "insert", key: e.Key, values: c.new, cols: d.Columns, keyChange: "key_change_from", otherKey: string(oldKey)})
		case inNew && inOld:
			c.changed = c.changed[:0]
			for _, i := range d.Columns {
				if !hasOld || (c.old[i] == nil) != (c.new[i] == nil) || string(c.old[i]) != string(c.new[i]) {
					c.changed = append(c.changed, i)
				}
			}
			if len(c.changed) == 0 {
				return nil, nil
			}
			ch := change{op: "update", key: e.Key, values: c.new}
			if d.Full {
				ch.cols = d.Columns
				if hasOld {
					ch.old, ch.oldCol = c.old, c.changed
				}
			} else {
				ch.cols = mergeSorted(d.Table.Key, c.changed)
			}
			out = append(out, ch)
		case inOld:
			out = append(out, change{op: "delete", key: oldKey, values: c.old, cols: c.deleteCols()})
		case inNew:
			out = append(out, change{op: "insert", key: e.Key, values: c.new, cols: d.Columns})
		}
	}
	return out, nil
}

// mergeSorted returns the union of the key columns and changed columns in
// table order.
func mergeSorted(key, changed []int) []int {
	out := append(slices.Clone(key), changed...)
	slices.Sort(out)
	return slices.Compact(out)
}
