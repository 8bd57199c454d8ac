package shapes

import (
	"strconv"

	"github.com/shapelog/shapelog/engine/catalog"
)

// encoder writes a shape's log messages: JSON objects in Electric's wire
// format, values as PostgreSQL text output.
type encoder struct {
	d        *Definition
	relation []byte // `"relation":["schema","table"]`
	names    [][]byte
}

func newEncoder(d *Definition) *encoder {
	e := &encoder{d: d}
	e.relation = append(e.relation, `"relation":[`...)
	e.relation = catalog.AppendString(e.relation, []byte(d.Table.Schema))
	e.relation = append(e.relation, ',')
	e.relation = catalog.AppendString(e.relation, []byte(d.Table.Name))
	e.relation = append(e.relation, ']')
	e.names = make([][]byte, len(d.Table.Columns))
	for i, c := range d.Table.Columns {
		e.names[i] = catalog.AppendString(nil, []byte(c.Name))
	}
	return e
}

// appendValues appends {"col": value, …} for the columns cols of a row in
// table order (nil = NULL).
func (e *encoder) appendValues(dst []byte, values [][]byte, cols []int) []byte {
	dst = append(dst, '{')
	for n, i := range cols {
		if n > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, e.names[i]...)
		dst = append(dst, ':')
		if values[i] == nil {
			dst = append(dst, "null"...)
		} else {
			dst = catalog.AppendString(dst, values[i])
		}
	}
	return append(dst, '}')
}

// appendSnapshotRow appends the insert message of a snapshot row.
func (e *encoder) appendSnapshotRow(dst, key []byte, values [][]byte) []byte {
	dst = append(dst, `{"key":`...)
	dst = catalog.AppendString(dst, key)
	dst = append(dst, `,"value":`...)
	dst = e.appendValues(dst, values, e.d.Columns)
	dst = append(dst, `,"headers":{"operation":"insert",`...)
	dst = append(dst, e.relation...)
	return append(dst, "}}"...)
}

// appendSubsetRow appends the insert message of a subset snapshot row,
// marked with the subset's snapshot_mark.
func (e *encoder) appendSubsetRow(dst, key []byte, values [][]byte, mark int32) []byte {
	dst = e.appendSnapshotRow(dst, key, values)
	dst = append(dst[:len(dst)-2], `,"snapshot_mark":`...) // reopen the headers
	dst = strconv.AppendInt(dst, int64(mark), 10)
	return append(dst, "}}"...)
}

// change is one message of the change region before its closing: the
// caller appends `,"last":true` when it ends its transaction, then "}}".
type change struct {
	op     string
	key    []byte
	values [][]byte
	cols   []int
	old    [][]byte // old_value
	oldCol []int
	// keyChange is "key_change_to" or "key_change_from" with the other key.
	keyChange, otherKey string
}

// appendChangeOpen appends a change message up to (not including) the end of
// its headers.
func (e *encoder) appendChangeOpen(dst []byte, c *change, lsn uint64, op uint64, xid uint32) []byte {
	dst = append(dst, `{"key":`...)
	dst = catalog.AppendString(dst, c.key)
	dst = append(dst, `,"value":`...)
	dst = e.appendValues(dst, c.values, c.cols)
	if c.old != nil {
		dst = append(dst, `,"old_value":`...)
		dst = e.appendValues(dst, c.old, c.oldCol)
	}
	dst = append(dst, `,"headers":{"operation":"`...)
	dst = append(dst, c.op...)
	dst = append(dst, `",`...)
	dst = append(dst, e.relation...)
	if c.keyChange != "" {
		dst = append(dst, `,"`...)
		dst = append(dst, c.keyChange...)
		dst = append(dst, `":`...)
		dst = catalog.AppendString(dst, []byte(c.otherKey))
	}
	dst = append(dst, `,"lsn":"`...)
	dst = strconv.AppendUint(dst, lsn, 10)
	dst = append(dst, `","op_position":`...)
	dst = strconv.AppendUint(dst, op, 10)
	dst = append(dst, `,"txids":[`...)
	dst = strconv.AppendUint(dst, uint64(xid), 10)
	return append(dst, ']')
}

// snapshotEnd is the control message that ends the snapshot.
func snapshotEnd(xmin, xmax string, xip []string) []byte {
	b := []byte(`{"headers":{"control":"snapshot-end","xmin":`)
	b = strconv.AppendQuote(b, xmin)
	b = append(b, `,"xmax":`...)
	b = strconv.AppendQuote(b, xmax)
	b = append(b, `,"xip_list":[`...)
	for i, x := range xip {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, x)
	}
	return append(b, "]}}"...)
}

// UpToDate is the control message that ends a caught-up response.
func UpToDate(lsn uint64) []byte {
	b := []byte(`{"headers":{"control":"up-to-date","global_last_seen_lsn":"`)
	b = strconv.AppendUint(b, lsn, 10)
	return append(b, `"}}`...)
}

// MustRefetch is the body of a 409.
const MustRefetch = `[{"headers":{"control":"must-refetch"}}]`
