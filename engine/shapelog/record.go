package shapelog

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Op is the kind of a logged change.
type Op byte

// The change kinds. Truncate has no key or values: it empties the table.
const (
	OpInsert   Op = 'I'
	OpUpdate   Op = 'U'
	OpDelete   Op = 'D'
	OpTruncate Op = 'T'
)

func (o Op) String() string {
	switch o {
	case OpInsert:
		return "insert"
	case OpUpdate:
		return "update"
	case OpDelete:
		return "delete"
	case OpTruncate:
		return "truncate"
	}
	return fmt.Sprintf("op(%d)", o)
}

// Change is one row change. Values hold PostgreSQL text output per column of
// the relation version (nil = NULL).
type Change struct {
	Op       Op
	Relation uint32 // table OID
	Version  uint32 // relation version the values are laid out by
	// Key is the row's identity (the Electric key / Convex _id) after the change;
	// for deletes, the identity of the deleted row.
	Key []byte
	// OldKey is set on updates that change the key.
	OldKey []byte
	// Values is the new row for inserts and updates, the old row for deletes.
	Values [][]byte
	// Old is the row before an update, when PostgreSQL sent it (REPLICA
	// IDENTITY FULL); nil otherwise.
	Old [][]byte
}

const recordFormat = 1

// Old-value markers: an unchanged column is stored once.
const (
	oldNull = 0
	oldSame = 1
)

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// encode appends the stored form of c.
func (c *Change) encode(dst []byte) []byte {
	dst = append(dst, recordFormat, byte(c.Op))
	dst = binary.AppendUvarint(dst, uint64(c.Version))
	dst = appendBytes(dst, c.Key)
	dst = appendBytes(dst, c.OldKey)
	dst = binary.AppendUvarint(dst, uint64(len(c.Values)))
	for _, v := range c.Values {
		if v == nil {
			dst = append(dst, 0)
			continue
		}
		dst = binary.AppendUvarint(dst, uint64(len(v))+1)
		dst = append(dst, v...)
	}
	if c.Old == nil {
		return append(dst, 0)
	}
	dst = binary.AppendUvarint(dst, uint64(len(c.Old))+1)
	for i, v := range c.Old {
		switch {
		case v == nil:
			dst = append(dst, oldNull)
		case i < len(c.Values) && c.Values[i] != nil && string(v) == string(c.Values[i]):
			dst = append(dst, oldSame)
		default:
			dst = binary.AppendUvarint(dst, uint64(len(v))+2)
			dst = append(dst, v...)
		}
	}
	return dst
}

var errCorrupt = errors.New("shapelog: corrupt change record")

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(n uint64) []byte {
	if d.err != nil {
		return nil
	}
	if uint64(len(d.b)) < n {
		d.err = errCorrupt
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// decode parses a stored change. The result aliases b.
func decodeChange(b []byte, relation uint32, c *Change) error {
	if len(b) < 2 || b[0] != recordFormat {
		return errCorrupt
	}
	d := decoder{b: b[2:]}
	*c = Change{Op: Op(b[1]), Relation: relation}
	c.Version = uint32(d.uvarint())
	c.Key = d.bytes(d.uvarint())
	if k := d.bytes(d.uvarint()); len(k) > 0 {
		c.OldKey = k
	}
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)) {
		return errCorrupt
	}
	c.Values = make([][]byte, n)
	for i := range c.Values {
		if l := d.uvarint(); l > 0 {
			c.Values[i] = d.bytes(l - 1)
			if c.Values[i] == nil && d.err == nil {
				c.Values[i] = []byte{}
			}
		}
	}
	if m := d.uvarint(); m > 0 {
		if d.err == nil && m-1 > uint64(len(d.b)) {
			return errCorrupt
		}
		c.Old = make([][]byte, m-1)
		for i := range c.Old {
			switch l := d.uvarint(); l {
			case oldNull:
			case oldSame:
				if i < len(c.Values) {
					c.Old[i] = c.Values[i]
				}
			default:
				c.Old[i] = d.bytes(l - 2)
				if c.Old[i] == nil && d.err == nil {
					c.Old[i] = []byte{}
				}
			}
		}
	}
	return d.err
}

// Commit describes one committed transaction in the log.
type Commit struct {
	Ts         int64  // engine timestamp, ns since the epoch, strictly increasing
	CommitLSN  uint64 // LSN of the commit record (pgoutput's final LSN; Electric's tx offset)
	EndLSN     uint64 // LSN just past the commit record (what is confirmed to PostgreSQL)
	Xid        uint32
	CommitTime int64 // PostgreSQL commit time, ns since the epoch
	Changes    uint32
}

func (c *Commit) encode() []byte {
	b := make([]byte, 0, 40)
	b = binary.BigEndian.AppendUint64(b, c.CommitLSN)
	b = binary.BigEndian.AppendUint64(b, c.EndLSN)
	b = binary.BigEndian.AppendUint32(b, c.Xid)
	b = binary.BigEndian.AppendUint64(b, uint64(c.CommitTime))
	b = binary.BigEndian.AppendUint32(b, c.Changes)
	return b
}

func decodeCommit(ts int64, b []byte) (Commit, error) {
	if len(b) != 32 {
		return Commit{}, errCorrupt
	}
	return Commit{
		Ts:         ts,
		CommitLSN:  binary.BigEndian.Uint64(b),
		EndLSN:     binary.BigEndian.Uint64(b[8:]),
		Xid:        binary.BigEndian.Uint32(b[16:]),
		CommitTime: int64(binary.BigEndian.Uint64(b[20:])),
		Changes:    binary.BigEndian.Uint32(b[28:]),
	}, nil
}
