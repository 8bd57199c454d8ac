package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/shapelog/shapelog/engine/client"
)

// Speed mode reads one large table's snapshot as key ranges in parallel:
// the engine cuts it into consecutive ranges of its primary key at one
// snapshot ts (list_snapshot_ranges), and each range is paged on its own
// socket. The stream's STATE then carries every unfinished range's cursor
// (snapshot_ranges); each is emitted by the range whose page it follows,
// on that range's socket, with the next id among the stream's states, so
// that the destination echoes it only once every page before it (of every
// range) is committed. A saved state with ranges resumes them, in parallel
// again in speed mode, one after the other over stdio.

// maxRanges is the most ranges the engine cuts a table into.
const maxRanges = 64

// rangePool lets the sockets' workers share the ranges of the snapshots
// being read: a worker with nothing else to do, or waiting for its own
// stream's ranges, reads one on its socket.
type rangePool struct {
	tasks   chan func(*channel)
	sockets int
}

func newRangePool(sockets int) *rangePool {
	return &rangePool{tasks: make(chan func(*channel), sockets*sockets), sockets: sockets}
}

// offer queues a range for any worker, unless the queue is full (a state
// saved with more ranges than there are sockets now): the stream's own
// worker reads it then.
func (p *rangePool) offer(task func(*channel)) bool {
	select {
	case p.tasks <- task:
		return true
	default:
		return false
	}
}

// helpUntil reads offered ranges on ch until done is closed.
func (p *rangePool) helpUntil(done <-chan struct{}, ch *channel) {
	for {
		select {
		case <-done:
			return
		case task := <-p.tasks:
			task(ch)
		}
	}
}

// rangedSnapshot is one stream's snapshot being read as ranges: their
// cursors, and the STATEs they emit.
type rangedSnapshot struct {
	owner *streamReader // the stream's reader: its state and STATE ids

	mu      sync.Mutex
	cursors []string // by range; "" once the range is read
	err     error    // the first range's failure
	cancel  context.CancelFunc
}

// splitSnapshot starts a snapshot of a stream as ranges, one per socket:
// the engine decides how many the table is worth (one for a small table,
// or one without a primary key, which is then read as usual). An engine
// without list_snapshot_ranges reads it as usual too.
func (sr *streamReader) splitSnapshot(ctx context.Context) error {
	got, err := sr.c.ListSnapshotRanges(ctx, client.SnapshotRangesRequest{TableName: sr.s.apiName, Ranges: min(sr.pool.sockets, maxRanges)})
	var ce *client.Error
	if errors.As(err, &ce) && ce.Status == http.StatusNotFound && ce.Code == "NotFound" {
		sr.env.Log.Info().Str("stream", sr.s.desc.String()).Msg("the engine cannot split a snapshot into ranges (an older version): reading it on one socket")
		return nil
	}
	if err != nil {
		return fmt.Errorf("splitting the snapshot of %s into key ranges: %w", sr.s.apiName, err)
	}
	st := sr.state
	st.DeltaCursor = &got.Snapshot
	if len(got.Cursors) == 1 {
		st.SnapshotCursor = &got.Cursors[0]
		return nil
	}
	st.SnapshotRanges = got.Cursors
	sr.env.Log.Info().Str("stream", sr.s.desc.String()).Int64("snapshot", got.Snapshot).Int("ranges", len(got.Cursors)).
		Msg("reading the snapshot as key ranges in parallel")
	return nil
}

// readRanges reads the ranges in the stream's state to their end: the
// first on the stream's own socket, the others on whichever sockets are
// free (over stdio, one after the other). A range's failure stops the
// others and is returned.
func (sr *streamReader) readRanges(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rs := &rangedSnapshot{owner: sr, cursors: append([]string(nil), sr.state.SnapshotRanges...), cancel: cancel}
	var wg sync.WaitGroup
	var own []func(*channel)
	for i := range rs.cursors {
		wg.Add(1)
		task := func(ch *channel) {
			defer wg.Done()
			rs.fail(rs.read(ctx, i, ch))
		}
		if i == 0 || sr.pool == nil || !sr.pool.offer(task) {
			own = append(own, task)
		}
	}
	for _, task := range own {
		task(sr.ch)
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	if sr.pool != nil {
		sr.pool.helpUntil(done, sr.ch)
	}
	<-done
	if rs.err != nil {
		return rs.err
	}
	return ctx.Err()
}

// read pages range i to its end on ch.
func (rs *rangedSnapshot) read(ctx context.Context, i int, ch *channel) error {
	if ctx.Err() != nil {
		return nil // another range failed: its error is the stream's
	}
	owner := rs.owner
	rs.mu.Lock()
	cursor := rs.cursors[i]
	st := &streamState{SnapshotHasMore: true, DeltaCursor: owner.state.DeltaCursor, SnapshotCursor: &cursor}
	rs.mu.Unlock()
	r, err := owner.reader.newStreamReader(owner.s, owner.schema, st, ch)
	if err != nil {
		return err
	}
	r.ranged, r.rangeIndex = rs, i
	err = r.readSnapshot(ctx)
	rs.mu.Lock()
	owner.total += r.total
	if ch != owner.ch && r.total > 0 {
		// The stream's records went over another socket (and, should a
		// range fail, some may still be on their way when a re-sync
		// starts).
		owner.spread = true
	}
	rs.mu.Unlock()
	return err
}

// fail notes a range's failure (the first one counts) and stops the others.
func (rs *rangedSnapshot) fail(err error) {
	if err == nil {
		return
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.err == nil {
		rs.err = err
		rs.cancel()
	}
}

// emit writes the STATE after a page of range r: the stream's state with
// r's cursor moved past the page (the range dropped once read), or, when
// it was the last range, the finished snapshot.
func (rs *rangedSnapshot) emit(r *streamReader) error {
	if r.ch != nil {
		// The page's records go out first, without holding up the
		// other ranges' STATEs.
		if err := r.ch.flush(); err != nil {
			return err
		}
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.cursors[r.rangeIndex] = ""
	if r.state.SnapshotHasMore {
		rs.cursors[r.rangeIndex] = *r.state.SnapshotCursor
	}
	st := rs.owner.state
	st.SnapshotRanges = nil
	for _, c := range rs.cursors {
		if c != "" {
			st.SnapshotRanges = append(st.SnapshotRanges, c)
		}
	}
	if st.SnapshotRanges == nil {
		st.finishSnapshot(*st.DeltaCursor)
	}
	rs.owner.emitted = true
	return r.writeState(st, &rs.owner.stateID)
}
