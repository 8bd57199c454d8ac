package shapes

import (
	"context"
	"errors"
	"sync"

	"github.com/shapelog/shapelog/engine/shapelog"
)

// ErrGone reports a shape that no longer exists (invalidated, deleted, or
// its changes pruned from the log): the client must refetch.
var ErrGone = errors.New("shape is gone")

// Shape is one live shape: its snapshot and the part of the change log that
// belongs to it.
type Shape struct {
	Handle string
	Def    *Definition
	// Schema is the electric-schema header.
	Schema string

	m        *Manager
	enc      *encoder
	needed   []int
	layoutMu sync.Mutex
	layouts  map[uint32]*layout // by relation version

	mu sync.Mutex
	// snapshot
	snapTs   int64 // valid once snapDone
	chunks   int   // snapshot chunks written
	snapDone bool
	failed   error
	gone     bool
	// change region: head is the offset of the shape's last message (0_inf
	// while it has none), headTs that message's transaction (snapTs for
	// 0_inf); every change with ts <= scanned has been considered.
	head    Offset
	headTs  int64
	scanned int64
	// scannedLSN is the commit LSN of the log's last transaction at
	// scanned (0 until the first advance): every change up to it is in
	// head.
	scannedLSN uint64
	// changed is closed and replaced whenever any of the above moves.
	changed  chan struct{}
	conv     converter
	cache    map[Offset]*cached
	inflight map[Offset]chan struct{}
}

// cached is a response body computed for an offset while the head was at
// head: still right while the head stays there, and for ever once closed.
type cached struct {
	head   Offset
	body   []byte
	end    Offset
	closed bool // ended before the head: the bytes can never change
}

func (s *Shape) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Head reports the shape's latest offset and a channel closed when it (or
// the shape's state) changes. A shape whose snapshot is still running has
// head BeforeAll.
func (s *Shape) Head() (Offset, <-chan struct{}, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.failed != nil: // a failed shape is gone too; say why
		return Offset{}, nil, s.failed
	case s.gone:
		return Offset{}, nil, ErrGone
	case !s.snapDone:
		return BeforeAll, s.changed, nil
	}
	return s.head, s.changed, nil
}

// SeenLSN is how far the shape has looked through the log (see
// Response.SeenLSN); read before the head, it is covered by it.
func (s *Shape) SeenLSN() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.scannedLSN
}

// Response is what a shape request gets: the messages after an offset up to
// End, and whether that is everything the shape has.
type Response struct {
	Body     []byte // messages, comma-separated, without brackets
	End      Offset
	UpToDate bool
	// SeenLSN is how far the shape had looked through the log when the
	// read began: an up-to-date response has every change of the shape's
	// up to it (an up-to-date message's global_last_seen_lsn).
	SeenLSN uint64
}

// Read returns the messages after offset: a snapshot chunk or a run of
// changes of at most about the chunk size. It waits for a snapshot chunk
// that is still being written.
func (s *Shape) Read(ctx context.Context, offset Offset) (*Response, error) {
	if !s.m.enter() {
		return nil, ErrClosed
	}
	defer s.m.leave()
	if offset.BeforeAll || (offset.inSnapshot() && offset.Op != infOp) {
		chunk := 0
		if !offset.BeforeAll {
			chunk = int(offset.Op) + 1
		}
		body, last, err := s.waitChunk(ctx, chunk)
		if err != nil {
			return nil, err
		}
		if body != nil || !last {
			return &Response{Body: body, End: Offset{Op: uint64(chunk)}}, nil
		}
		// Past the last chunk: the change region follows.
	}
	return s.readChanges(offset)
}

// waitChunk returns snapshot chunk n once written, or last=true with no body
// when the snapshot ended before chunk n.
func (s *Shape) waitChunk(ctx context.Context, n int) (body []byte, last bool, err error) {
	for {
		s.mu.Lock()
		chunks, done, failed, gone, ch := s.chunks, s.snapDone, s.failed, s.gone, s.changed
		s.mu.Unlock()
		switch {
		case failed != nil:
			return nil, false, failed
		case gone:
			return nil, false, ErrGone
		case n < chunks:
			b, err := s.m.readChunk(s.Handle, n)
			return b, false, err
		case done:
			return nil, true, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
}

// readChanges returns the change-region messages after offset. Concurrent
// requests for one offset (every live client of a shape after a write)
// share one read of the log.
func (s *Shape) readChanges(offset Offset) (*Response, error) {
	for {
		s.mu.Lock()
		head, headTs, snapTs, gone, seen := s.head, s.headTs, s.snapTs, s.gone, s.scannedLSN
		if gone {
			s.mu.Unlock()
			return nil, ErrGone
		}
		if c := s.cache[offset]; c != nil && (c.closed || c.head == head) {
			s.mu.Unlock()
			return &Response{Body: c.body, End: c.end, UpToDate: !c.end.Less(head), SeenLSN: seen}, nil
		}
		if f := s.inflight[offset]; f != nil {
			s.mu.Unlock()
			<-f
			continue
		}
		f := make(chan struct{})
		s.inflight[offset] = f
		s.mu.Unlock()
		resp, err := s.readChangesUncached(offset, head, headTs, snapTs)
		if err == nil {
			resp.SeenLSN = seen
		}
		s.mu.Lock()
		delete(s.inflight, offset)
		if err == nil {
			if len(s.cache) >= 32 {
				clear(s.cache)
			}
			s.cache[offset] = &cached{head: head, body: resp.Body, end: resp.End, closed: resp.End.Less(head)}
		}
		close(f)
		s.mu.Unlock()
		return resp, err
	}
}

func (s *Shape) readChangesUncached(offset, head Offset, headTs, snapTs int64) (*Response, error) {
	resp := &Response{End: offset}
	if offset.inSnapshot() {
		resp.End = SnapshotEnd
	}
	if !offset.Less(head) {
		resp.UpToDate = true
		return resp, nil
	}
	after, firstTs, skipOp := snapTs, int64(0), uint64(0)
	if !offset.inSnapshot() {
		var err error
		if after, firstTs, skipOp, err = s.resume(offset, snapTs); err != nil {
			return nil, err
		}
	}
	if err := s.collect(resp, after, firstTs, skipOp, headTs); err != nil {
		var inv *errInvalid
		if errors.As(err, &inv) || errors.Is(err, shapelog.ErrExpired) {
			s.m.invalidate(s, err.Error())
			return nil, ErrGone
		}
		return nil, err
	}
	resp.UpToDate = !resp.End.Less(head)
	return resp, nil
}

// resume finds where in the log the changes after offset start: inside the
// transaction that committed at offset.Tx (skipping its ops up to
// offset.Op), or, for an LSN between two logged transactions (as Electric
// allows), after the last one before it. An offset from before the shape's
// snapshot, or one the log no longer reaches, is ErrGone.
func (s *Shape) resume(offset Offset, snapTs int64) (after, firstTs int64, skipOp uint64, err error) {
	ts, ok, err := s.m.store.TsOfCommit(offset.Tx)
	if err != nil {
		return 0, 0, 0, err
	}
	if ok {
		if ts <= snapTs {
			return 0, 0, 0, ErrGone
		}
		return ts - 1, ts, offset.Op, nil
	}
	prev, ok, err := s.m.store.LastTsBefore(offset.Tx)
	if err != nil {
		return 0, 0, 0, err
	}
	if !ok || prev < snapTs {
		return 0, 0, 0, ErrGone
	}
	return prev, 0, 0, nil
}

// collect appends the messages of changes with after < ts <= upTo (skipping
// those at or before skipOp in transaction firstTs) to resp, stopping at the
// first transaction or key-change boundary past the chunk size. The last
// message of each transaction gets "last": true.
func (s *Shape) collect(resp *Response, after, firstTs int64, skipOp uint64, upTo int64) error {
	it, err := s.m.store.Changes(after, upTo, s.Def.Table.OID)
	if err != nil {
		return err
	}
	defer it.Close()
	var conv converter
	conv.s = s
	var (
		held     []byte // the last message, open: its "last" is not known yet
		holding  bool
		heldTs   int64
		heldEnd  Offset
		commit   shapelog.Commit
		commitTs int64 = -1
		limit          = s.m.cfg.ChunkBytes
	)
	flush := func(last bool) {
		if !holding {
			return
		}
		if len(resp.Body) > 0 {
			resp.Body = append(resp.Body, ',')
		}
		resp.Body = append(resp.Body, held...)
		if last {
			resp.Body = append(resp.Body, `,"last":true`...)
		}
		resp.Body = append(resp.Body, "}}"...)
		resp.End = heldEnd
		holding = false
	}
	for it.Next() {
		e := it.Entry()
		if e.Ts == firstTs && uint64(e.Seq)*2 <= skipOp {
			continue
		}
		msgs, err := conv.convert(e)
		if err != nil {
			return err
		}
		if len(msgs) == 0 {
			continue
		}
		if holding && len(resp.Body)+len(held) >= limit {
			flush(heldTs != e.Ts)
			return it.Err()
		}
		if e.Ts != commitTs {
			if commit, err = s.m.store.Commit(e.Ts); err != nil {
				return err
			}
			commitTs = e.Ts
		}
		for i := range msgs {
			op := uint64(e.Seq)*2 + uint64(i)
			flush(heldTs != e.Ts)
			held = s.enc.appendChangeOpen(held[:0], &msgs[i], commit.CommitLSN, op, commit.Xid)
			holding, heldTs, heldEnd = true, e.Ts, Offset{Tx: commit.CommitLSN, Op: op}
		}
	}
	if err := it.Err(); err != nil {
		return err
	}
	flush(true)
	return nil
}
