package shapelog

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble"
)

// Relation is one version of a table's layout, as the replication stream
// described it. Change values are laid out by the version they name.
type Relation struct {
	OID     uint32   `json:"oid"`
	Version uint32   `json:"version"`
	Schema  string   `json:"schema"`
	Name    string   `json:"name"`
	Columns []Column `json:"columns"`
	// Key lists the primary-key columns (indexes into Columns) in key order;
	// empty when the table has none.
	Key []int `json:"key"`
}

// Column is one column of a relation version.
type Column struct {
	Name    string `json:"name"`
	TypeOID uint32 `json:"type"`
	TypeMod int32  `json:"typmod"`
}

func sameLayout(a, b *Relation) bool {
	return a.Schema == b.Schema && a.Name == b.Name && slices.Equal(a.Columns, b.Columns) && slices.Equal(a.Key, b.Key)
}

// PutRelation records rel's layout and returns its version: the latest
// version when the layout is unchanged, else a new one.
func (s *Store) PutRelation(rel Relation) (*Relation, error) {
	s.mu.Lock()
	versions := s.relations[rel.OID]
	s.mu.Unlock()
	if n := len(versions); n > 0 && sameLayout(versions[n-1], &rel) {
		return versions[n-1], nil
	}
	rel.Version = uint32(len(versions)) + 1
	b, err := json.Marshal(&rel)
	if err != nil {
		return nil, err
	}
	// Not synced here: the first transaction that uses it syncs it, in order.
	if err := s.db.Set(rKey(rel.OID, rel.Version), b, pebble.NoSync); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.relations[rel.OID] = append(s.relations[rel.OID], &rel)
	s.mu.Unlock()
	return &rel, nil
}

// Relation returns a stored relation version.
func (s *Store) Relation(oid, version uint32) (*Relation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	vs := s.relations[oid]
	if version == 0 || int(version) > len(vs) {
		return nil, fmt.Errorf("shapelog: unknown relation %d version %d", oid, version)
	}
	return vs[version-1], nil
}

// batchBytes is how much a transaction buffers before writing a partial
// batch, so memory stays bounded for transactions of any size.
const batchBytes = 4 << 20

// Txn writes one transaction. Changes are written as they arrive, invisible
// to readers until Commit; a crash before then discards them on reopen.
type Txn struct {
	s      *Store
	commit Commit
	batch  *pebble.Batch
	seq    uint32
	buf    []byte
	tables map[uint32]bool
}

// Begin starts writing a transaction. commitTime is PostgreSQL's commit
// time in ns; the transaction's ts derives from it.
func (s *Store) Begin(commitLSN uint64, xid uint32, commitTime int64) *Txn {
	s.wmu.Lock()
	ts := nextTs(s.written.Ts, commitTime)
	s.wmu.Unlock()
	return &Txn{
		s:      s,
		commit: Commit{Ts: ts, CommitLSN: commitLSN, Xid: xid, CommitTime: commitTime},
		batch:  s.db.NewBatch(),
		tables: map[uint32]bool{},
	}
}

// Ts is the transaction's timestamp.
func (t *Txn) Ts() int64 { return t.commit.Ts }

// Add appends one change.
func (t *Txn) Add(c *Change) error {
	t.buf = c.encode(t.buf[:0])
	if err := t.batch.Set(tKey(c.Relation, t.commit.Ts, t.seq), t.buf, nil); err != nil {
		return err
	}
	var oid [4]byte
	oid[0], oid[1], oid[2], oid[3] = byte(c.Relation>>24), byte(c.Relation>>16), byte(c.Relation>>8), byte(c.Relation)
	if err := t.batch.Set(gKey(t.commit.Ts, t.seq), oid[:], nil); err != nil {
		return err
	}
	t.tables[c.Relation] = true
	t.seq++
	if t.batch.Len() >= batchBytes {
		if err := t.batch.Commit(pebble.NoSync); err != nil {
			return err
		}
		t.batch.Close()
		t.batch = t.s.db.NewBatch()
	}
	return nil
}

// Commit ends the transaction: it is written now and becomes visible (and
// confirmable) once the background sync has made it durable.
func (t *Txn) Commit(endLSN uint64) error {
	defer t.batch.Close()
	t.commit.EndLSN = endLSN
	t.commit.Changes = t.seq
	var ts [8]byte
	for i := range ts {
		ts[i] = byte(uint64(t.commit.Ts) >> (56 - 8*i))
	}
	_ = t.batch.Set(cKey(t.commit.Ts), t.commit.encode(), nil)
	_ = t.batch.Set(lKey(t.commit.CommitLSN), ts[:], nil)
	_ = t.batch.Set(xKey(t.commit.Xid, t.commit.Ts), nil, nil)
	t.s.wmu.Lock()
	st := t.s.written
	st.Ts, st.CommitLSN, st.EndLSN = t.commit.Ts, t.commit.CommitLSN, endLSN
	_ = t.batch.Set(stateKey, st.encode(), nil)
	if err := t.batch.Commit(pebble.NoSync); err != nil {
		t.s.wmu.Unlock()
		return err
	}
	t.s.written = st
	t.s.wmu.Unlock()
	t.s.requestSync()
	return nil
}

// Abort drops a transaction that will not commit (the replication
// connection broke mid-transaction; PostgreSQL will send it again).
func (t *Txn) Abort() error {
	t.batch.Close()
	if t.seq == 0 {
		return nil
	}
	b := t.s.db.NewBatch()
	defer b.Close()
	_ = b.DeleteRange(gKey(t.commit.Ts, 0), gKey(t.commit.Ts+1, 0), nil)
	for oid := range t.tables {
		_ = b.DeleteRange(tKey(oid, t.commit.Ts, 0), tKey(oid, t.commit.Ts+1, 0), nil)
	}
	return b.Commit(pebble.NoSync)
}

// SkipTo records that the stream has been consumed up to endLSN with no
// transaction for the log (keepalives past idle WAL), so the slot can be
// confirmed past it and does not pin WAL.
func (s *Store) SkipTo(endLSN uint64) {
	s.wmu.Lock()
	if endLSN <= s.written.EndLSN {
		s.wmu.Unlock()
		return
	}
	s.written.EndLSN = endLSN
	st := s.written
	s.wmu.Unlock()
	// Persisted with the next commit; until then a restart resumes from the
	// last commit, which is merely re-reading WAL that holds nothing for us.
	s.mu.Lock()
	durableTs := s.durable.Ts
	s.mu.Unlock()
	if st.Ts == durableTs {
		s.publish(st)
	}
}
