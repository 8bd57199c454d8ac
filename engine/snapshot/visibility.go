package snapshot

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/shapelog/shapelog/engine/shapelog"
)

// xmaxWindow is how far past a snapshot's xmax missesLoggedUpTo looks.
const xmaxWindow = 1 << 20

// mvcc is a PostgreSQL MVCC snapshot as pg_current_snapshot() prints it:
// which transactions a query saw.
type mvcc struct {
	xmin, xmax uint64          // 64-bit (epoch-extended) transaction ids
	xip        map[uint64]bool // in progress when it was taken
}

// parseMVCC parses pg_current_snapshot()'s text form "xmin:xmax:xip,…".
func parseMVCC(s string) (*mvcc, error) {
	parts := strings.SplitN(s, ":", 3)
	if len(parts) != 3 {
		return nil, fmt.Errorf("unexpected snapshot %q", s)
	}
	m := &mvcc{xip: map[uint64]bool{}}
	var err error
	if m.xmin, err = strconv.ParseUint(parts[0], 10, 64); err != nil {
		return nil, fmt.Errorf("unexpected snapshot %q", s)
	}
	if m.xmax, err = strconv.ParseUint(parts[1], 10, 64); err != nil {
		return nil, fmt.Errorf("unexpected snapshot %q", s)
	}
	if parts[2] != "" {
		for _, x := range strings.Split(parts[2], ",") {
			v, err := strconv.ParseUint(x, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("unexpected snapshot %q", s)
			}
			m.xip[v] = true
		}
	}
	return m, nil
}

// widen turns the 32-bit id of a transaction that committed shortly
// before or after the snapshot (as pgoutput sends it) into its 64-bit id.
func (m *mvcc) widen(xid uint32) uint64 {
	d := int64(int32(uint32(m.xmax) - xid))
	return uint64(int64(m.xmax) - d)
}

// sees reports whether the snapshot saw the committed transaction xid.
func (m *mvcc) sees(xid uint32) bool {
	full := m.widen(xid)
	switch {
	case full < m.xmin:
		return true
	case full >= m.xmax:
		return false
	}
	return !m.xip[full]
}

// missesLoggedUpTo reports whether the snapshot failed to see a transaction
// the log holds at or before ts: one that had written its commit record but
// was still finishing (commit order is not visibility order in PostgreSQL;
// a synchronous standby widens the gap). Such a snapshot cannot serve a
// page as of ts; a moment later one can.
func (m *mvcc) missesLoggedUpTo(store *shapelog.Store, ts int64) (bool, error) {
	missed := false
	check := func(xid uint32, at int64) bool {
		if at <= ts && at > store.Horizon() && !m.sees(xid) {
			missed = true
			return false
		}
		return true
	}
	for x := range m.xip {
		if err := store.TxnsByXid(uint32(x), uint64(uint32(x))+1, check); err != nil || missed {
			return missed, err
		}
	}
	// Transactions at or past xmax: ids given out after the snapshot's
	// horizon that had committed by the time the log was read. Those are
	// few and close to xmax; the window is kept far below 2^31 so that a
	// transaction logged long ago (its 32-bit id reused since) is not taken
	// for one of them.
	from := uint32(m.xmax)
	to := uint64(from) + xmaxWindow
	if err := store.TxnsByXid(from, min(to, 1<<32), check); err != nil || missed {
		return missed, err
	}
	if to > 1<<32 {
		return missed, store.TxnsByXid(0, to-1<<32, check)
	}
	return missed, nil
}
