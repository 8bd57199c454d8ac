package shapes

import (
	"errors"
	"math"
	"strconv"
	"strings"
)

// Offset is a position in a shape's log, as Electric writes it: "-1" before
// everything, "0_<n>" the end of snapshot chunk n, "0_inf" the end of the
// snapshot, "<lsn>_<op>" a change: the commit LSN of its transaction
// (decimal) and its position inside it (0, 2, 4, …; a key change takes two).
type Offset struct {
	Tx uint64
	Op uint64 // infOp for "inf"
	// BeforeAll is the "-1" offset.
	BeforeAll bool
}

const infOp = math.MaxUint64

// The offsets with names.
var (
	BeforeAll   = Offset{BeforeAll: true}
	SnapshotEnd = Offset{Op: infOp}
)

// ErrOffset reports an offset that is not one of the forms above.
var ErrOffset = errors.New("has invalid format")

// ParseOffset parses an offset; "now" is the caller's business.
func ParseOffset(s string) (Offset, error) {
	if s == "-1" {
		return BeforeAll, nil
	}
	tx, op, ok := strings.Cut(s, "_")
	if !ok {
		return Offset{}, ErrOffset
	}
	t, err := strconv.ParseUint(tx, 10, 64)
	if err != nil {
		return Offset{}, ErrOffset
	}
	if op == "inf" {
		return Offset{Tx: t, Op: infOp}, nil
	}
	o, err := strconv.ParseUint(op, 10, 63)
	if err != nil {
		return Offset{}, ErrOffset
	}
	return Offset{Tx: t, Op: o}, nil
}

func (o Offset) String() string {
	if o.BeforeAll {
		return "-1"
	}
	op := "inf"
	if o.Op != infOp {
		op = strconv.FormatUint(o.Op, 10)
	}
	return strconv.FormatUint(o.Tx, 10) + "_" + op
}

// Less orders offsets: before-all first, then by transaction, then by
// operation ("inf" last).
func (o Offset) Less(p Offset) bool {
	switch {
	case o.BeforeAll || p.BeforeAll:
		return o.BeforeAll && !p.BeforeAll
	case o.Tx != p.Tx:
		return o.Tx < p.Tx
	}
	return o.Op < p.Op
}

// inSnapshot says whether o lies in the snapshot region (tx 0).
func (o Offset) inSnapshot() bool { return !o.BeforeAll && o.Tx == 0 }
