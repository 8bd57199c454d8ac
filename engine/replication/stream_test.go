package replication

import (
	"context"
	"encoding/binary"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/rs/zerolog"

	"github.com/shapelog/shapelog/engine/catalog"
	"github.com/shapelog/shapelog/engine/shapelog"
)

// pgoutput protocol v1 messages, as PostgreSQL sends them.

// pgTime is the wire form of commit and server times: microseconds since
// 2000-01-01 UTC.
var pgTime = uint64(time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC).Sub(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).Microseconds())

func appendString(b []byte, s string) []byte { return append(append(b, s...), 0) }

func beginMsg(finalLSN uint64, xid uint32) []byte {
	b := binary.BigEndian.AppendUint64([]byte{'B'}, finalLSN)
	b = binary.BigEndian.AppendUint64(b, pgTime)
	return binary.BigEndian.AppendUint32(b, xid)
}

func commitMsg(commitLSN, endLSN uint64) []byte {
	b := binary.BigEndian.AppendUint64([]byte{'C', 0}, commitLSN)
	b = binary.BigEndian.AppendUint64(b, endLSN)
	return binary.BigEndian.AppendUint64(b, pgTime)
}

type column struct {
	name string
	typ  uint32
}

// relationMsg describes a table. Column flags are left 0: the streamer takes
// keys from the catalog.
func relationMsg(oid uint32, schema, name string, identity byte, cols ...column) []byte {
	b := binary.BigEndian.AppendUint32([]byte{'R'}, oid)
	b = appendString(b, schema)
	b = appendString(b, name)
	b = append(b, identity)
	b = binary.BigEndian.AppendUint16(b, uint16(len(cols)))
	for _, c := range cols {
		b = appendString(append(b, 0), c.name)
		b = binary.BigEndian.AppendUint32(b, c.typ)
		b = binary.BigEndian.AppendUint32(b, 0xffffffff) // typmod -1
	}
	return b
}

// unchangedToast marks an unchanged TOAST value in a row.
type unchangedToast struct{}

// row holds a tuple's values: a string is a text value, nil is NULL and
// unchangedToast{} an unchanged TOAST value.
type row []any

func appendTuple(b []byte, r row) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(r)))
	for _, v := range r {
		switch v := v.(type) {
		case nil:
			b = append(b, 'n')
		case unchangedToast:
			b = append(b, 'u')
		case string:
			b = binary.BigEndian.AppendUint32(append(b, 't'), uint32(len(v)))
			b = append(b, v...)
		default:
			panic(fmt.Sprintf("row value %T", v))
		}
	}
	return b
}

func insertMsg(oid uint32, newRow row) []byte {
	b := binary.BigEndian.AppendUint32([]byte{'I'}, oid)
	return appendTuple(append(b, 'N'), newRow)
}

// updateMsg is an UPDATE; oldType is 'O' (old row), 'K' (old key) or 0 (no
// old tuple).
func updateMsg(oid uint32, oldType byte, oldRow, newRow row) []byte {
	b := binary.BigEndian.AppendUint32([]byte{'U'}, oid)
	if oldType != 0 {
		b = appendTuple(append(b, oldType), oldRow)
	}
	return appendTuple(append(b, 'N'), newRow)
}

// deleteMsg is a DELETE; oldType is 'O' (old row) or 'K' (old key).
func deleteMsg(oid uint32, oldType byte, oldRow row) []byte {
	b := binary.BigEndian.AppendUint32([]byte{'D'}, oid)
	return appendTuple(append(b, oldType), oldRow)
}

func truncateMsg(oids ...uint32) []byte {
	b := binary.BigEndian.AppendUint32([]byte{'T'}, uint32(len(oids)))
	b = append(b, 0) // options
	for _, oid := range oids {
		b = binary.BigEndian.AppendUint32(b, oid)
	}
	return b
}

// typeMsg names a user-defined type (sent before a RELATION that uses it).
func typeMsg(oid uint32, schema, name string) []byte {
	b := binary.BigEndian.AppendUint32([]byte{'Y'}, oid)
	return appendString(appendString(b, schema), name)
}

// originMsg names the origin of a transaction replicated from elsewhere.
func originMsg(lsn uint64, name string) []byte {
	return appendString(binary.BigEndian.AppendUint64([]byte{'O'}, lsn), name)
}

// logicalMsg is pg_logical_emit_message's output (sent only with the
// messages option, which the engine does not set).
func logicalMsg(lsn uint64, prefix, content string) []byte {
	b := binary.BigEndian.AppendUint64([]byte{'M', 1}, lsn)
	b = binary.BigEndian.AppendUint32(appendString(b, prefix), uint32(len(content)))
	return append(b, content...)
}

// xlogData wraps a pgoutput message in the CopyData message that carries WAL.
func xlogData(msg []byte) []byte {
	b := binary.BigEndian.AppendUint64([]byte{'w'}, 0) // WAL start: unused
	b = binary.BigEndian.AppendUint64(b, 0)            // server WAL end: unused
	b = binary.BigEndian.AppendUint64(b, pgTime)
	return append(b, msg...)
}

// keepalive is a primary keepalive CopyData message (no reply requested).
func keepalive(walEnd uint64) []byte {
	b := binary.BigEndian.AppendUint64([]byte{'k'}, walEnd)
	b = binary.BigEndian.AppendUint64(b, pgTime)
	return append(b, 0)
}

// The catalog the tests replicate.

const (
	int4OID  = 23
	textOID  = 25
	itemsOID = 16384 // public.items (id integer PRIMARY KEY, body text)
	tagsOID  = 16390 // public.tags (name text PRIMARY KEY)
	goneOID  = 16400 // public.gone (id integer, body text), dropped since
)

func itemsRel(identity byte) []byte {
	return relationMsg(itemsOID, "public", "items", identity, column{"id", int4OID}, column{"body", textOID})
}

func tagsRel() []byte {
	return relationMsg(tagsOID, "public", "tags", 'f', column{"name", textOID})
}

func goneRel() []byte {
	return relationMsg(goneOID, "public", "gone", 'f', column{"id", int4OID}, column{"body", textOID})
}

// fakeCatalog resolves the tests' types and tables without a database.
type fakeCatalog struct {
	types  map[uint32]*catalog.Type
	tables map[uint32]*catalog.Table
}

func newFakeCatalog(t *testing.T) *fakeCatalog {
	types := catalog.NewTypes()
	builtin := func(oid uint32) *catalog.Type {
		typ, err := types.Lookup(context.Background(), nil, oid) // built in: no query
		if err != nil {
			t.Fatal(err)
		}
		return typ
	}
	int4, text := builtin(int4OID), builtin(textOID)
	return &fakeCatalog{
		types: map[uint32]*catalog.Type{int4OID: int4, textOID: text},
		tables: map[uint32]*catalog.Table{
			itemsOID: {OID: itemsOID, Schema: "public", Name: "items", Columns: []catalog.Column{{Name: "id", Type: int4}, {Name: "body", Type: text}}, Key: []int{0}},
			tagsOID:  {OID: tagsOID, Schema: "public", Name: "tags", Columns: []catalog.Column{{Name: "name", Type: text}}, Key: []int{0}},
		},
	}
}

func (c *fakeCatalog) Type(_ context.Context, oid uint32) (*catalog.Type, error) {
	if typ := c.types[oid]; typ != nil {
		return typ, nil
	}
	return nil, fmt.Errorf("no type %d", oid)
}

func (c *fakeCatalog) Table(_ context.Context, oid uint32) (*catalog.Table, error) {
	if t := c.tables[oid]; t != nil {
		return t, nil
	}
	return nil, fmt.Errorf("table %d: %w", oid, catalog.ErrTableNotFound)
}

// fakeSink records what the streamer writes, as text.
type fakeSink struct {
	written   shapelog.Position
	skips     []uint64 // SkipTo calls
	relations map[uint32][]*shapelog.Relation
	txns      []*fakeTxn
}

func (f *fakeSink) Written() shapelog.Position { return f.written }
func (f *fakeSink) Durable() shapelog.Position { return f.written }
func (f *fakeSink) Advanced() <-chan struct{}  { return nil }
func (f *fakeSink) Err() error                 { return nil }

func (f *fakeSink) SkipTo(endLSN uint64) {
	f.skips = append(f.skips, endLSN)
	f.written.EndLSN = max(f.written.EndLSN, endLSN)
}

// PutRelation versions layouts as the store does.
func (f *fakeSink) PutRelation(rel shapelog.Relation) (*shapelog.Relation, error) {
	if f.relations == nil {
		f.relations = map[uint32][]*shapelog.Relation{}
	}
	versions := f.relations[rel.OID]
	if n := len(versions); n > 0 {
		last := *versions[n-1]
		last.Version = 0
		if reflect.DeepEqual(last, rel) {
			return versions[n-1], nil
		}
	}
	rel.Version = uint32(len(versions)) + 1
	f.relations[rel.OID] = append(versions, &rel)
	return &rel, nil
}

func (f *fakeSink) Begin(commitLSN uint64, xid uint32, _ int64) txnWriter {
	t := &fakeTxn{sink: f, state: "open", header: fmt.Sprintf("txn %s xid %d", pglogrepl.LSN(commitLSN), xid), commitLSN: commitLSN}
	f.txns = append(f.txns, t)
	return t
}

// lines describes every transaction begun, each followed by its changes.
func (f *fakeSink) lines() []string {
	var out []string
	for _, t := range f.txns {
		out = append(out, t.header+": "+t.state)
		for _, c := range t.changes {
			out = append(out, "  "+c)
		}
	}
	return out
}

func (f *fakeSink) describe(c *shapelog.Change) string {
	name := "?"
	if vs := f.relations[c.Relation]; c.Version >= 1 && int(c.Version) <= len(vs) {
		name = vs[c.Version-1].Name
	}
	s := fmt.Sprintf("%s %s/v%d", c.Op, name, c.Version)
	if c.Key != nil {
		s += " key=" + string(c.Key)
	}
	if c.OldKey != nil {
		s += " oldkey=" + string(c.OldKey)
	}
	if c.Values != nil {
		s += " values=" + describeRow(c.Values)
	}
	if c.Old != nil {
		s += " old=" + describeRow(c.Old)
	}
	return s
}

func describeRow(values [][]byte) string {
	parts := make([]string, len(values))
	for i, v := range values {
		if v == nil {
			parts[i] = "NULL"
		} else {
			parts[i] = string(v)
		}
	}
	return "(" + strings.Join(parts, ",") + ")"
}

type fakeTxn struct {
	sink      *fakeSink
	header    string
	commitLSN uint64
	state     string   // open, aborted or committed
	changes   []string // described as added: the streamer reuses its buffers
}

func (t *fakeTxn) Add(c *shapelog.Change) error {
	if t.state != "open" {
		return fmt.Errorf("add to a %s transaction", t.state)
	}
	t.changes = append(t.changes, t.sink.describe(c))
	return nil
}

func (t *fakeTxn) Commit(endLSN uint64) error {
	if t.state != "open" {
		return fmt.Errorf("commit of a %s transaction", t.state)
	}
	t.state = "committed, ends " + pglogrepl.LSN(endLSN).String()
	t.sink.written = shapelog.Position{CommitLSN: t.commitLSN, EndLSN: endLSN}
	return nil
}

func (t *fakeTxn) Abort() error {
	if t.state != "open" {
		return fmt.Errorf("abort of a %s transaction", t.state)
	}
	t.state = "aborted"
	return nil
}

// step is one CopyData message from the server, or the connection dropping.
type step struct {
	data      []byte
	reconnect bool   // the session ends; a new one starts
	err       string // the error the step must fail with, ending the session
}

func wal(msg []byte) step { return step{data: xlogData(msg)} }

// raw is a CopyData message as it is, with the error it must end with.
func raw(data []byte, err string) step { return step{data: data, err: err} }

func walErr(msg []byte, err string) step { return step{data: xlogData(msg), err: err} }

func ka(walEnd uint64) step { return step{data: keepalive(walEnd)} }

var reconnect = step{reconnect: true}

func TestStream(t *testing.T) {
	const (
		itemsKey1 = `"public"."items"/"1"`
		itemsKey2 = `"public"."items"/"2"`
	)
	tests := []struct {
		name      string
		written   shapelog.Position // the log's position when streaming starts
		steps     []step
		want      []string // fakeSink.lines
		skips     []uint64
		processed uint64
	}{
		{
			name: "insert",
			steps: []step{
				wal(beginMsg(0x100, 7)), wal(itemsRel('f')), wal(insertMsg(itemsOID, row{"1", "hello"})), wal(commitMsg(0x100, 0x108)),
			},
			want: []string{
				"txn 0/100 xid 7: committed, ends 0/108",
				"  insert items/v1 key=" + itemsKey1 + " values=(1,hello)",
			},
			processed: 0x108,
		},
		{
			name:    "replay skips transactions the log holds",
			written: shapelog.Position{CommitLSN: 0x200, EndLSN: 0x208},
			steps: []step{
				wal(beginMsg(0x100, 7)), wal(itemsRel('f')), wal(insertMsg(itemsOID, row{"1", "a"})), wal(commitMsg(0x100, 0x108)),
				wal(beginMsg(0x200, 8)), wal(insertMsg(itemsOID, row{"2", "b"})), wal(truncateMsg(itemsOID)), wal(commitMsg(0x200, 0x208)),
				wal(beginMsg(0x300, 9)), wal(insertMsg(itemsOID, row{"3", "c"})), wal(commitMsg(0x300, 0x308)),
			},
			want: []string{
				"txn 0/300 xid 9: committed, ends 0/308",
				`  insert items/v1 key="public"."items"/"3" values=(3,c)`,
			},
			processed: 0x308,
		},
		{
			name: "unchanged TOAST value filled in from the old row",
			steps: []step{
				wal(beginMsg(0x100, 7)), wal(itemsRel('f')),
				wal(updateMsg(itemsOID, 'O', row{"1", "big"}, row{"1", unchangedToast{}})),
				wal(commitMsg(0x100, 0x108)),
			},
			want: []string{
				"txn 0/100 xid 7: committed, ends 0/108",
				"  update items/v1 key=" + itemsKey1 + " values=(1,big) old=(1,big)",
			},
			processed: 0x108,
		},
		{
			name: "unchanged TOAST value without an old row is NULL",
			steps: []step{
				wal(beginMsg(0x100, 7)), wal(itemsRel('d')),
				wal(updateMsg(itemsOID, 0, nil, row{"1", unchangedToast{}})),
				wal(commitMsg(0x100, 0x108)),
			},
			want: []string{
				"txn 0/100 xid 7: committed, ends 0/108",
				"  update items/v1 key=" + itemsKey1 + " values=(1,NULL)",
			},
			processed: 0x108,
		},
		{
			name: "update changing the key",
			steps: []step{
				wal(beginMsg(0x100, 7)), wal(itemsRel('f')),
				wal(updateMsg(itemsOID, 'O', row{"1", "a"}, row{"2", "a"})),
				wal(commitMsg(0x100, 0x108)),
			},
			want: []string{
				"txn 0/100 xid 7: committed, ends 0/108",
				"  update items/v1 key=" + itemsKey2 + " oldkey=" + itemsKey1 + " values=(2,a) old=(1,a)",
			},
			processed: 0x108,
		},
		{
			name: "update keeping the key",
			steps: []step{
				wal(beginMsg(0x100, 7)), wal(itemsRel('f')),
				wal(updateMsg(itemsOID, 'O', row{"1", "a"}, row{"1", "b"})),
				wal(commitMsg(0x100, 0x108)),
			},
			want: []string{
				"txn 0/100 xid 7: committed, ends 0/108",
				"  update items/v1 key=" + itemsKey1 + " values=(1,b) old=(1,a)",
			},
			processed: 0x108,
		},
		{
			name: "update changing the key under REPLICA IDENTITY DEFAULT",
			steps: []step{
				wal(beginMsg(0x100, 7)), wal(itemsRel('d')),
				wal(updateMsg(itemsOID, 'K', row{"1", nil}, row{"2", "a"})),
				wal(commitMsg(0x100, 0x108)),
			},
			want: []string{
				"txn 0/100 xid 7: committed, ends 0/108",
				"  update items/v1 key=" + itemsKey2 + " oldkey=" + itemsKey1 + " values=(2,a)",
			},
			processed: 0x108,
		},
		{
			name: "delete with the old row",
			steps: []step{
				wal(beginMsg(0x100, 7)), wal(itemsRel('f')),
				wal(deleteMsg(itemsOID, 'O', row{"1", "a"})),
				wal(commitMsg(0x100, 0x108)),
			},
			want: []string{
				"txn 0/100 xid 7: committed, ends 0/108",
				"  delete items/v1 key=" + itemsKey1 + " values=(1,a)",
			},
			processed: 0x108,
		},
		{
			name: "delete with the old key",
			steps: []step{
				wal(beginMsg(0x100, 7)), wal(itemsRel('d')),
				wal(deleteMsg(itemsOID, 'K', row{"1", nil})),
				wal(commitMsg(0x100, 0x108)),
			},
			want: []string{
				"txn 0/100 xid 7: committed, ends 0/108",
				"  delete items/v1 key=" + itemsKey1 + " values=(1,NULL)",
			},
			processed: 0x108,
		},
		{
			name: "truncate of every known relation",
			steps: []step{
				wal(beginMsg(0x100, 7)), wal(itemsRel('f')), wal(tagsRel()),
				wal(truncateMsg(itemsOID, 99999, tagsOID)),
				wal(commitMsg(0x100, 0x108)),
			},
			want: []string{
				"txn 0/100 xid 7: committed, ends 0/108",
				"  truncate items/v1",
				"  truncate tags/v1",
			},
			processed: 0x108,
		},
		{
			name: "dropped table is keyed by every column",
			steps: []step{
				wal(beginMsg(0x100, 7)), wal(goneRel()), wal(insertMsg(goneOID, row{"1", "hello"})), wal(commitMsg(0x100, 0x108)),
			},
			want: []string{
				"txn 0/100 xid 7: committed, ends 0/108",
				`  insert gone/v1 key="public"."gone"/"hello"/"1" values=(1,hello)`,
			},
			processed: 0x108,
		},
		{
			name: "change before its RELATION message",
			steps: []step{
				wal(beginMsg(0x100, 7)),
				walErr(insertMsg(itemsOID, row{"1", "a"}), "change for relation 16384 before its RELATION message"),
			},
			want: []string{"txn 0/100 xid 7: aborted"},
		},
		{
			name: "unresolvable column type",
			steps: []step{
				wal(beginMsg(0x100, 7)),
				walErr(relationMsg(itemsOID, "public", "items", 'f', column{"id", 99999}), "resolving type of public.items.id"),
			},
			want: []string{"txn 0/100 xid 7: aborted"},
		},
		{
			name: "keepalive inside a transaction does not advance",
			steps: []step{
				ka(0x50),
				wal(beginMsg(0x100, 7)), wal(itemsRel('f')), wal(insertMsg(itemsOID, row{"1", "a"})),
				ka(0x180),
			},
			want: []string{
				"txn 0/100 xid 7: open",
				"  insert items/v1 key=" + itemsKey1 + " values=(1,a)",
			},
			skips:     []uint64{0x50},
			processed: 0x50,
		},
		{
			name: "keepalive between transactions advances",
			steps: []step{
				wal(beginMsg(0x100, 7)), wal(itemsRel('f')), wal(insertMsg(itemsOID, row{"1", "a"})), wal(commitMsg(0x100, 0x108)),
				ka(0x200),
			},
			want: []string{
				"txn 0/100 xid 7: committed, ends 0/108",
				"  insert items/v1 key=" + itemsKey1 + " values=(1,a)",
			},
			skips:     []uint64{0x200},
			processed: 0x200,
		},
		{
			name: "type and origin messages carry nothing for the log",
			steps: []step{
				wal(beginMsg(0x100, 7)), wal(originMsg(0x90, "elsewhere")), wal(typeMsg(70000, "public", "mood")), wal(itemsRel('f')),
				wal(insertMsg(itemsOID, row{"1", "a"})), wal(commitMsg(0x100, 0x108)),
			},
			want: []string{
				"txn 0/100 xid 7: committed, ends 0/108",
				"  insert items/v1 key=" + itemsKey1 + " values=(1,a)",
			},
			processed: 0x108,
		},
		{
			name:  "empty CopyData message",
			steps: []step{raw(nil, "empty message in the replication stream")},
		},
		{
			name:  "unknown CopyData message type",
			steps: []step{raw([]byte("x\x00\x01"), `unknown message type 'x' in the replication stream`)},
		},
		{
			name: "unknown CopyData message type between transactions does not advance",
			steps: []step{
				wal(beginMsg(0x100, 7)), wal(itemsRel('f')), wal(insertMsg(itemsOID, row{"1", "a"})), wal(commitMsg(0x100, 0x108)),
				raw(append([]byte{'q'}, keepalive(0x200)[1:]...), `unknown message type 'q'`),
			},
			want: []string{
				"txn 0/100 xid 7: committed, ends 0/108",
				"  insert items/v1 key=" + itemsKey1 + " values=(1,a)",
			},
			processed: 0x108,
		},
		{
			name:  "empty pgoutput message",
			steps: []step{walErr(nil, "empty pgoutput message")},
		},
		{
			name: "unknown pgoutput message ends the session; the next one replays the transaction",
			steps: []step{
				wal(beginMsg(0x100, 7)), wal(itemsRel('f')), wal(insertMsg(itemsOID, row{"1", "a"})),
				walErr([]byte{'Z', 0, 0, 0, 1}, `decoding pgoutput message 'Z'`),
				wal(beginMsg(0x100, 7)), wal(itemsRel('f')), wal(insertMsg(itemsOID, row{"1", "a"})), wal(commitMsg(0x100, 0x108)),
			},
			want: []string{
				"txn 0/100 xid 7: aborted",
				"  insert items/v1 key=" + itemsKey1 + " values=(1,a)",
				"txn 0/100 xid 7: committed, ends 0/108",
				"  insert items/v1 key=" + itemsKey1 + " values=(1,a)",
			},
			processed: 0x108,
		},
		{
			name: "streamed transaction message (protocol v2) is refused",
			steps: []step{
				walErr(binary.BigEndian.AppendUint32([]byte{'S'}, 9), `decoding pgoutput message 'S'`),
			},
		},
		{
			name: "logical decoding message is refused",
			steps: []step{
				wal(beginMsg(0x100, 7)),
				walErr(logicalMsg(0x100, "app", "hello"), `unexpected pgoutput message 'M' (Message)`),
			},
			want: []string{"txn 0/100 xid 7: aborted"},
		},
		{
			name: "reconnect in the middle of a transaction",
			steps: []step{
				wal(beginMsg(0x100, 7)), wal(itemsRel('f')),
				wal(insertMsg(itemsOID, row{"1", "a"})), wal(insertMsg(itemsOID, row{"2", "b"})),
				reconnect,
				wal(beginMsg(0x100, 7)), wal(itemsRel('f')),
				wal(insertMsg(itemsOID, row{"1", "a"})), wal(insertMsg(itemsOID, row{"2", "b"})), wal(insertMsg(itemsOID, row{"3", "c"})),
				wal(commitMsg(0x100, 0x108)),
			},
			want: []string{
				"txn 0/100 xid 7: aborted",
				"  insert items/v1 key=" + itemsKey1 + " values=(1,a)",
				"  insert items/v1 key=" + itemsKey2 + " values=(2,b)",
				"txn 0/100 xid 7: committed, ends 0/108",
				"  insert items/v1 key=" + itemsKey1 + " values=(1,a)",
				"  insert items/v1 key=" + itemsKey2 + " values=(2,b)",
				`  insert items/v1 key="public"."items"/"3" values=(3,c)`,
			},
			processed: 0x108,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			r := New(Config{}, nil, nil, nil, zerolog.Nop())
			out := &fakeSink{written: tc.written}
			cat := newFakeCatalog(t)
			s := newStreamer(r, nil, out, cat)
			for i, st := range tc.steps {
				if st.reconnect {
					s.close()
					s = newStreamer(r, nil, out, cat)
					continue
				}
				err := s.handleCopyData(ctx, st.data)
				switch {
				case err == nil && st.err == "":
					continue
				case err == nil:
					t.Fatalf("step %d: no error, want %q", i, st.err)
				case st.err == "" || !strings.Contains(err.Error(), st.err):
					t.Fatalf("step %d: error %q, want %q", i, err, st.err)
				}
				// The error ends the session, as it ends stream.
				s.close()
				s = newStreamer(r, nil, out, cat)
			}
			if got := out.lines(); !slices.Equal(got, tc.want) {
				t.Errorf("sink received:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if !slices.Equal(out.skips, tc.skips) {
				t.Errorf("SkipTo calls %#x, want %#x", out.skips, tc.skips)
			}
			if r.processed != tc.processed {
				t.Errorf("processed %s, want %s", pglogrepl.LSN(r.processed), pglogrepl.LSN(tc.processed))
			}
		})
	}
}

func TestLagTracker(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	type report struct {
		walEnd, durable uint64
		at              time.Duration
	}
	tests := []struct {
		name    string
		reports []report
		durable uint64
		now     time.Duration
		want    Lag
	}{
		{name: "no keepalive yet", durable: 0x100, now: time.Second, want: Lag{DurableLSN: 0x100}},
		{
			name:    "caught up",
			reports: []report{{0x200, 0x100, 0}, {0x300, 0x200, time.Second}},
			durable: 0x300, now: 5 * time.Second,
			want: Lag{ServerWALEnd: 0x300, DurableLSN: 0x300},
		},
		{
			name:    "behind since the oldest position not yet durable",
			reports: []report{{0x200, 0x100, 0}, {0x300, 0x100, time.Second}, {0x400, 0x100, 2 * time.Second}},
			durable: 0x250, now: 5 * time.Second,
			want: Lag{ServerWALEnd: 0x400, DurableLSN: 0x250, Bytes: 0x1b0, Seconds: 4},
		},
		{
			name:    "positions reported within 100ms share the earlier time",
			reports: []report{{0x200, 0x100, 0}, {0x300, 0x100, 50 * time.Millisecond}},
			durable: 0x250, now: time.Second,
			want: Lag{ServerWALEnd: 0x300, DurableLSN: 0x250, Bytes: 0xb0, Seconds: 1},
		},
		{
			name:    "a stale keepalive changes nothing",
			reports: []report{{0x300, 0x100, 0}, {0x200, 0x100, time.Second}},
			durable: 0x100, now: 2 * time.Second,
			want: Lag{ServerWALEnd: 0x300, DurableLSN: 0x100, Bytes: 0x200, Seconds: 2},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var l lagTracker
			for _, r := range tc.reports {
				l.observe(r.walEnd, r.durable, at(r.at))
			}
			if got := l.lag(tc.durable, at(tc.now)); got != tc.want {
				t.Errorf("lag %+v, want %+v", got, tc.want)
			}
		})
	}
	t.Run("bounded while stuck", func(t *testing.T) {
		var l lagTracker
		for i := range 10 * maxPending {
			l.observe(uint64(0x200+i), 0x100, at(time.Duration(i)*time.Second))
		}
		if len(l.pending) > maxPending {
			t.Fatalf("%d reports kept, want at most %d", len(l.pending), maxPending)
		}
		got := l.lag(0x100, at(time.Duration(10*maxPending)*time.Second))
		if want := float64(10 * maxPending); got.Seconds != want {
			t.Errorf("stuck since the first report: %v s, want %v", got.Seconds, want)
		}
		// Catching up halfway: the oldest report left is at most one
		// merged bucket older than the first one not yet durable.
		half := uint64(0x200 + 5*maxPending)
		got = l.lag(half, at(time.Duration(10*maxPending)*time.Second))
		if got.Seconds < float64(5*maxPending) || got.Seconds > float64(5*maxPending+20) {
			t.Errorf("half caught up: %v s, want about %d", got.Seconds, 5*maxPending)
		}
	})
}
