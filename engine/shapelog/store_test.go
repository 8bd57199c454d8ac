package shapelog

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func open(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func waitDurable(t *testing.T, s *Store, ts int64) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for s.Durable().Ts < ts {
		select {
		case <-s.Advanced():
		case <-deadline:
			t.Fatalf("ts %d never became durable (at %d)", ts, s.Durable().Ts)
		}
	}
}

func row(vals ...string) [][]byte {
	out := make([][]byte, len(vals))
	for i, v := range vals {
		if v != "<null>" {
			out[i] = []byte(v)
		}
	}
	return out
}

func TestChangeRoundTrip(t *testing.T) {
	in := Change{Op: OpUpdate, Relation: 9, Version: 3, Key: []byte(`"public"."t"/"1"`), OldKey: []byte(`"public"."t"/"0"`),
		Values: row("1", "", "<null>", "big"), Old: row("0", "", "x", "big")}
	var out Change
	if err := decodeChange(in.encode(nil), 9, &out); err != nil {
		t.Fatal(err)
	}
	if out.Op != in.Op || out.Version != 3 || !bytes.Equal(out.Key, in.Key) || !bytes.Equal(out.OldKey, in.OldKey) {
		t.Fatalf("header mismatch: %+v", out)
	}
	for i := range in.Values {
		if (in.Values[i] == nil) != (out.Values[i] == nil) || !bytes.Equal(in.Values[i], out.Values[i]) {
			t.Fatalf("value %d: %q vs %q", i, in.Values[i], out.Values[i])
		}
		if (in.Old[i] == nil) != (out.Old[i] == nil) || !bytes.Equal(in.Old[i], out.Old[i]) {
			t.Fatalf("old %d: %q vs %q", i, in.Old[i], out.Old[i])
		}
	}
	if err := decodeChange([]byte{recordFormat, 'I', 0x80}, 1, &out); err == nil {
		t.Fatal("truncated record decoded without error")
	}
}

func TestCommitOrderVisibilityAndReopen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	if err := s.Init(1000, 100); err != nil {
		t.Fatal(err)
	}
	rel, err := s.PutRelation(Relation{OID: 7, Schema: "public", Name: "t", Columns: []Column{{Name: "id", TypeOID: 23}}, Key: []int{0}})
	if err != nil {
		t.Fatal(err)
	}
	// Two transactions with the same commit time still get increasing ts.
	var last int64
	for i := 0; i < 2; i++ {
		tx := s.Begin(uint64(200+i*10), uint32(50+i), 5000)
		for j := 0; j < 3; j++ {
			if err := tx.Add(&Change{Op: OpInsert, Relation: 7, Version: rel.Version, Key: []byte{byte('a' + j)}, Values: row("x")}); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(uint64(205 + i*10)); err != nil {
			t.Fatal(err)
		}
		if tx.Ts() <= last {
			t.Fatalf("ts %d not after %d", tx.Ts(), last)
		}
		last = tx.Ts()
	}
	waitDurable(t, s, last)
	if got := s.Durable().EndLSN; got != 215 {
		t.Fatalf("durable end LSN %d", got)
	}
	// An uncommitted transaction is written but must vanish on reopen.
	tx := s.Begin(300, 99, 9000)
	_ = tx.Add(&Change{Op: OpDelete, Relation: 7, Version: 1, Key: []byte("z"), Values: row("x")})
	_ = tx.Add(&Change{Op: OpDelete, Relation: 7, Version: 1, Key: []byte("z"), Values: row("x")})
	if err := tx.batch.Commit(nil); err != nil { // force the partial write to disk
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir)
	defer s.Close()
	if s.Durable().Ts != last {
		t.Fatalf("reopened at ts %d, want %d", s.Durable().Ts, last)
	}
	for _, table := range []uint32{0, 7} {
		it, err := s.Changes(s.Horizon(), 1<<62, table)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for it.Next() {
			n++
		}
		if err := it.Close(); err != nil {
			t.Fatal(err)
		}
		if n != 6 {
			t.Fatalf("table %d: %d changes after reopen, want 6", table, n)
		}
	}
	if ts, ok, _ := s.LastTsBefore(210); !ok || ts >= last {
		t.Fatalf("LastTsBefore(210) = %d %v", ts, ok)
	}
	if got, err := s.Relation(7, 1); err != nil || got.Name != "t" {
		t.Fatalf("relation not reloaded: %+v %v", got, err)
	}
}

func TestPruneExpiresOldCursors(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	_ = s.Init(1, 1)
	var tss []int64
	for i := 0; i < 3; i++ {
		tx := s.Begin(uint64(10+i), 1, int64(100*(i+1)))
		_ = tx.Add(&Change{Op: OpInsert, Relation: 1, Version: 1, Key: []byte("k"), Values: row("v")})
		_ = tx.Commit(uint64(11 + i))
		tss = append(tss, tx.Ts())
	}
	waitDurable(t, s, tss[2])
	cut, ok, err := s.TsAtOrBefore(250)
	if err != nil || !ok || cut != tss[1] {
		t.Fatalf("TsAtOrBefore = %d %v %v", cut, ok, err)
	}
	if err := s.Prune(cut); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Changes(tss[0], tss[2], 0); !errors.Is(err, ErrExpired) {
		t.Fatalf("old cursor: %v", err)
	}
	it, err := s.Changes(cut, tss[2], 1)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for it.Next() {
		n++
	}
	it.Close()
	if n != 1 {
		t.Fatalf("%d changes after prune, want 1", n)
	}
}

// payload is an incompressible, reproducible value for change i/j.
func payload(i, j int) []byte {
	b := make([]byte, 1000)
	rand.New(rand.NewSource(int64(i*100000 + j))).Read(b)
	return b
}

// TestIterEntriesStayValid guards against decoding an entry from memory the
// iterator has already moved past (sstable blocks are reused).
func TestIterEntriesStayValid(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	_ = s.Init(1, 1)
	rel, _ := s.PutRelation(Relation{OID: 5, Schema: "public", Name: "t", Columns: []Column{{Name: "v", TypeOID: 25}}})
	var last int64
	for i := 0; i < 20; i++ {
		tx := s.Begin(uint64(10+i), 1, int64(100+i))
		for j := 0; j < 1000; j++ {
			v := payload(i, j)
			_ = tx.Add(&Change{Op: OpInsert, Relation: 5, Version: rel.Version, Key: []byte(fmt.Sprint(i, "/", j)), Values: [][]byte{v}})
		}
		_ = tx.Commit(uint64(11 + i))
		last = tx.Ts()
	}
	waitDurable(t, s, last)
	if err := s.db.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, table := range []uint32{0, 5} {
		it, err := s.Changes(s.Horizon(), last, table)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for it.Next() {
			e := it.Entry()
			var i, j int
			if _, err := fmt.Sscanf(string(e.Key), "%d/%d", &i, &j); err != nil {
				t.Fatalf("key %q: %v", e.Key, err)
			}
			want := payload(i, j)
			if !bytes.Equal(e.Values[0], want) {
				t.Fatalf("table %d entry %d: value corrupted", table, n)
			}
			n++
		}
		if err := it.Close(); err != nil || n != 20000 {
			t.Fatalf("table %d: %d entries, %v", table, n, err)
		}
	}
}

// TestPruneRacingReadersNeverShortensARange prunes while readers start
// reading at the horizon they saw: each read either fails with ErrExpired
// or returns every change after its cursor, starting with the very next
// transaction.
func TestPruneRacingReadersNeverShortensARange(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	_ = s.Init(1, 1)
	var tss []int64
	for i := 0; i < 400; i++ {
		tx := s.Begin(uint64(10+i), 1, int64(1000*(i+1)))
		_ = tx.Add(&Change{Op: OpInsert, Relation: 1, Version: 1, Key: []byte("k"), Values: row("v")})
		_ = tx.Commit(uint64(11 + i))
		tss = append(tss, tx.Ts())
	}
	waitDurable(t, s, tss[len(tss)-1])
	next := map[int64]int64{}
	for i := 0; i+1 < len(tss); i++ {
		next[tss[i]] = tss[i+1]
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < len(tss)-1; i += 7 {
			if err := s.Prune(tss[i]); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	reads := 0
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		after := s.Horizon()
		want, ok := next[after]
		if !ok {
			continue
		}
		it, err := s.Changes(after, tss[len(tss)-1], 0)
		if errors.Is(err, ErrExpired) {
			continue
		}
		if err != nil {
			t.Error(err)
			break
		}
		if it.Next() && it.Entry().Ts != want {
			t.Errorf("read after %d started at %d, want %d: pruned changes were skipped", after, it.Entry().Ts, want)
			it.Close()
			break
		}
		it.Close()
		reads++
	}
	<-done
	if reads == 0 && !t.Failed() {
		t.Fatal("no read ran alongside the pruning")
	}
}
