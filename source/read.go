package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/shapelog/shapelog/engine/client"
	"github.com/shapelog/shapelog/internal/connector"
	"github.com/shapelog/shapelog/internal/datachannel"
	"github.com/shapelog/shapelog/protocol"
)

// job is one configured stream to read.
type job struct {
	s      *stream
	mode   string
	state  *streamState
	schema json.RawMessage // the configured stream's json_schema
}

// reader runs the read command.
type reader struct {
	env *protocol.Env
	cfg *config
	c   *client.Client
	// pool shares snapshots' key ranges among the sockets (speed mode
	// with more than one socket; nil otherwise).
	pool *rangePool
}

// read answers the read command: for each configured stream, its snapshot
// (full refresh, or a first incremental sync), then its changes
// (incremental), with a STATE after every page.
func read(ctx context.Context, env *protocol.Env) error {
	cfg, c, err := loadConfig(env, 0)
	if err != nil {
		return err
	}
	cat, err := protocol.LoadCatalog(env.Args.Catalog)
	if err != nil {
		return err
	}
	states, err := loadStates(env.Args.State)
	if err != nil {
		return err
	}
	streams, err := loadStreams(ctx, c, cfg)
	if err != nil {
		return err
	}
	jobs, err := planJobs(cat, streams, states)
	if err != nil {
		return err
	}
	dc, err := datachannel.FromEnv()
	if err != nil {
		return protocol.ConfigError(err, "Invalid data channel: %v", err)
	}
	r := &reader{env: env, cfg: cfg, c: c}
	var failed []string
	var first error
	var mu sync.Mutex
	run := func(j job, ch *channel) {
		err := r.readStream(ctx, j, ch)
		if err == nil {
			return
		}
		var pe *protocol.Error
		if !errors.As(err, &pe) {
			pe = connector.EngineError(err, "reading stream "+j.s.desc.String())
		}
		d := j.s.desc
		pe.Stream = &d
		r.streamStatus(ch, d, protocol.StreamIncomplete)
		_ = env.Out.Write(protocol.ErrorMessage(pe))
		mu.Lock()
		defer mu.Unlock()
		failed = append(failed, d.String())
		if first == nil {
			first = pe
		}
	}
	var channelErr error
	if dc.Sockets() {
		channelErr = r.readOnChannels(ctx, dc, jobs, run)
	} else {
		for _, j := range jobs {
			if run(j, nil); ctx.Err() != nil {
				break
			}
		}
	}
	if first != nil {
		var pe *protocol.Error
		errors.As(first, &pe)
		return &protocol.Error{FailureType: pe.FailureType, Message: fmt.Sprintf("%d of %d streams failed (%v); the first failure: %s", len(failed), len(jobs), failed, pe.Message), Err: errors.Join(pe.Err, channelErr)}
	}
	if channelErr != nil {
		return channelErr
	}
	return env.Out.Flush()
}

// planJobs matches the configured streams to the engine's tables and their
// saved states. An unknown stream or sync mode is a config error naming it.
func planJobs(cat *protocol.ConfiguredCatalog, streams []*stream, states *inputStates) ([]job, error) {
	var jobs []job
	for _, cs := range cat.Streams {
		d := cs.Stream.Descriptor()
		var s *stream
		for _, cand := range streams {
			if cand.desc.Name == d.Name && (cand.desc.NamespaceOrEmpty() == d.NamespaceOrEmpty() || d.Namespace == nil) {
				if s != nil && d.Namespace == nil {
					return nil, protocol.ConfigError(nil, "Catalog stream %q has no namespace and several schemas have a table of that name: run discover again", d.Name)
				}
				s = cand
			}
		}
		if s == nil {
			e := protocol.ConfigError(nil, "Catalog stream %s is not a table the engine publishes (dropped, renamed or excluded by setting `tables`/`exclude_tables`?): refresh the source schema", d)
			e.Stream = &d
			return nil, e
		}
		switch cs.SyncMode {
		case protocol.SyncFullRefresh, protocol.SyncIncremental:
		default:
			e := protocol.ConfigError(nil, "Catalog stream %s has sync_mode %q: expected full_refresh or incremental", d, cs.SyncMode)
			e.Stream = &d
			return nil, e
		}
		st, err := states.forStream(s)
		if err != nil {
			return nil, err
		}
		jobs = append(jobs, job{s: s, mode: cs.SyncMode, state: st, schema: cs.Stream.JSONSchema})
	}
	if err := states.unusedError(); err != nil {
		return nil, err
	}
	return jobs, nil
}

// maxResyncs bounds how often one stream starts its snapshot over in one
// run (setting `invalid_cursor_behavior` = "Re-sync data") before it fails.
const maxResyncs = 3

// lostPosition reports the engine's error codes for a stream position it
// no longer has: the snapshot being read, or the changes after the cursor.
func lostPosition(code string) bool {
	return code == "SnapshotTooOld" || code == "InvalidListSnapshotCursor" || code == "InvalidWindowToReadDocuments"
}

// readStream reads one stream; its records go to stdout, or with ch to
// that data channel.
func (r *reader) readStream(ctx context.Context, j job, ch *channel) error {
	out, s := r.env.Out, j.s
	log := r.env.Log.With().Str("stream", s.desc.String()).Str("mode", j.mode).Logger()
	if err := r.streamStatus(ch, s.desc, protocol.StreamStarted); err != nil {
		return err
	}
	if err := r.streamStatus(ch, s.desc, protocol.StreamRunning); err != nil {
		return err
	}
	st := j.state
	if st == nil || (j.mode == protocol.SyncFullRefresh && !st.SnapshotHasMore) {
		st = freshState(s)
	}
	if j.mode == protocol.SyncFullRefresh {
		st.ResyncFrom = nil // no changes are read after the snapshot
	}
	if st.SnapshotHasMore && st.SnapshotCursor == nil && s.rowEstimate > 0 {
		_ = out.Write(protocol.EstimateMessage(s.desc, s.rowEstimate))
	}
	sr, err := r.newStreamReader(s, j.schema, st, ch)
	if err != nil {
		return err
	}
	start := time.Now()
	for resyncs := 0; ; resyncs++ {
		err := sr.run(ctx, j.mode)
		code := errorCode(err)
		if !lostPosition(code) {
			if err != nil {
				return err
			}
			break
		}
		if r.cfg.InvalidCursorBehavior != resyncData || resyncs == maxResyncs {
			return positionLost(s, code, err, resyncs)
		}
		if sr.spread {
			// Rows of the lost snapshot may still be on their way over
			// other sockets: a new snapshot now could land before them.
			return protocol.TransientError(err, "Stream %s lost its snapshot while reading it as key ranges over several sockets (%s): "+
				"the next attempt starts it over, as setting invalid_cursor_behavior says", s.desc, code)
		}
		sr.state = resyncState(s, sr.state, j.mode)
		ev := log.Warn().Str("code", code).Err(err).Int("resync", resyncs+1)
		if sr.state.ResyncFrom != nil {
			ev.Int64("resync_from", *sr.state.ResyncFrom).Msg("the engine no longer has this stream's snapshot or the changes after its cursor; as setting invalid_cursor_behavior says, starting a new snapshot (rows are sent again), then replaying the changes from the old position so deletes since then are sent")
		} else {
			ev.Msg("the engine no longer has this stream's snapshot; as setting invalid_cursor_behavior says, starting a new snapshot (rows are sent again)")
		}
	}
	if !sr.emitted {
		if err := sr.emitState(); err != nil {
			return err
		}
	}
	elapsed := time.Since(start)
	log.Info().Int64("records", sr.total).Dur("elapsed", elapsed).
		Int64("records_per_second", int64(float64(sr.total)/max(elapsed.Seconds(), 1e-3))).Msg("stream complete")
	return r.streamStatus(ch, s.desc, protocol.StreamComplete)
}

// newStreamReader reads stream s (configured with json_schema schema) from
// state st, its records going to ch (nil: stdout).
func (r *reader) newStreamReader(s *stream, schema json.RawMessage, st *streamState, ch *channel) (*streamReader, error) {
	sr := &streamReader{reader: r, s: s, schema: schema, w: newRecordWriter(s), state: st, ch: ch}
	if ch != nil {
		sr.partition = newPartitionID()
		if ch.proto {
			var err error
			if sr.proto, err = newProtoRecords(s, schema); err != nil {
				return nil, protocol.ConfigError(err, "Catalog stream %s: %v", s.desc, err)
			}
		}
	}
	return sr, nil
}

// resyncState is the state that starts stream s over after the engine lost
// its position in state old. In incremental mode it keeps the old position
// as ResyncFrom: the changes are read from there after the new snapshot,
// so the deletes since then, of rows the destination already has, travel.
// During a re-sync snapshot the old position is its ResyncFrom; otherwise
// it is DeltaCursor (the lost snapshot's timestamp, or the lost cursor).
func resyncState(s *stream, old *streamState, mode string) *streamState {
	st := freshState(s)
	if mode == protocol.SyncIncremental {
		st.ResyncFrom = old.ResyncFrom
		if st.ResyncFrom == nil {
			st.ResyncFrom = old.DeltaCursor
		}
	}
	return st
}

// positionLost is the config error of a stream whose position the engine
// no longer has (engine error code), after resyncs re-syncs in this run.
func positionLost(s *stream, code string, err error, resyncs int) *protocol.Error {
	why := fmt.Sprintf("the engine no longer has this stream's snapshot or the changes after its cursor (%s): "+
		"the sync was paused for longer than the engine's --retention (SHAPELOG_RETENTION), "+
		"or a snapshot of a table without a primary key was interrupted by an engine restart", code)
	if resyncs > 0 {
		return protocol.ConfigError(err, "Stream %s lost its position again after %d re-syncs in this run: %s. "+
			"Refresh the stream (or clear its data) in Airbyte, and make sure syncs run more often than the engine's --retention", s.desc, resyncs, why)
	}
	return protocol.ConfigError(err, "Stream %s cannot continue: %s. To recover, refresh the stream (or clear its data) in Airbyte, "+
		"or set the source's setting `invalid_cursor_behavior` to %q to start its snapshot over automatically", s.desc, why, resyncData)
}

// streamReader reads one stream, keeping its state.
type streamReader struct {
	*reader
	s       *stream
	schema  json.RawMessage // the configured stream's json_schema
	w       *recordWriter
	state   *streamState
	count   int64 // records since the last STATE
	total   int64
	emitted bool // a STATE was written in this run
	buf     []byte

	// Speed mode: the data channel, the partition of the records since
	// the last STATE, the STATE ordinal, and the protobuf record builder.
	ch        *channel
	partition string
	stateID   int
	proto     *protoRecords

	// A range of a snapshot read as ranges (ranges.go), and which; spread
	// says the stream's records went over other sockets in this run.
	ranged     *rangedSnapshot
	rangeIndex int
	spread     bool
}

// chunk is a run of documents of one page, copied out of the response as
// it arrives; a page's last chunk carries the state after the page.
type chunk struct {
	docs  []byte // the documents, back to back
	ends  []int  // where each ends in docs
	state *streamState
	err   error
}

// A chunk is sent on once it holds this many documents or bytes.
const (
	chunkDocs  = 1000
	chunkBytes = 1 << 20
)

// fetchPage reads the page after state st, passing each document to each,
// and moves st past it; more reports whether pages follow.
type fetchPage func(ctx context.Context, st *streamState, each func(doc []byte) error) (more bool, err error)

// run emits the snapshot (if unfinished) and, in incremental mode, the
// changes after it.
func (sr *streamReader) run(ctx context.Context, mode string) error {
	if st := sr.state; st.SnapshotHasMore {
		if st.SnapshotCursor == nil && st.SnapshotRanges == nil && sr.pool != nil {
			if err := sr.splitSnapshot(ctx); err != nil {
				return err
			}
		}
		read := sr.readSnapshot
		if st.SnapshotRanges != nil {
			read = sr.readRanges
		}
		if err := read(ctx); err != nil {
			return err
		}
	}
	if mode != protocol.SyncIncremental {
		return nil
	}
	if sr.spread {
		// The snapshot's records went over several sockets, which the
		// destination loads independently: a change read now, on this
		// socket, could land before the snapshot row it follows (a delete
		// before the row it deletes). The next sync reads the changes,
		// once these rows are committed.
		sr.env.Log.Info().Str("stream", sr.s.desc.String()).Int64("delta_cursor", *sr.state.DeltaCursor).
			Msg("the snapshot was read as key ranges over several sockets: the changes since it are read by the next sync")
		return nil
	}
	return sr.readChanges(ctx)
}

// readSnapshot emits the rest of the snapshot from the state's cursor.
func (sr *streamReader) readSnapshot(ctx context.Context) error {
	return sr.consume(ctx, func(ctx context.Context, st *streamState, each func([]byte) error) (bool, error) {
		req := client.SnapshotRequest{TableName: sr.s.apiName, Format: "json", Limit: sr.cfg.PageSize}
		if st.SnapshotCursor != nil {
			req.Snapshot, req.Cursor = st.DeltaCursor, st.SnapshotCursor
		}
		list := sr.c.ListSnapshotEach
		if sr.proto != nil {
			list = sr.listSnapshotFrames
		}
		p, err := list(ctx, req, each)
		if err != nil {
			return false, fmt.Errorf("reading a snapshot page of %s: %w", sr.s.apiName, err)
		}
		st.SnapshotCursor, st.DeltaCursor, st.SnapshotHasMore = p.Cursor, &p.Snapshot, p.HasMore
		if !p.HasMore {
			st.finishSnapshot(p.Snapshot)
		}
		return p.HasMore, nil
	})
}

// readChanges emits the changes after the state's delta cursor, up to the
// engine's log's end.
func (sr *streamReader) readChanges(ctx context.Context) error {
	for {
		err := sr.consume(ctx, func(ctx context.Context, st *streamState, each func([]byte) error) (bool, error) {
			deltas := sr.c.DocumentDeltasEach
			if sr.proto != nil {
				deltas = sr.documentDeltasFrames
			}
			p, err := deltas(ctx, client.DeltasRequest{Cursor: *st.DeltaCursor, TableName: sr.s.apiName, Format: "json", Limit: sr.cfg.PageSize}, each)
			if err != nil {
				return false, fmt.Errorf("reading the deltas of %s after ts %d: %w", sr.s.apiName, *st.DeltaCursor, err)
			}
			st.DeltaCursor = &p.Cursor
			if st.ReplayUntil != nil && p.Cursor >= *st.ReplayUntil {
				st.ReplayUntil = nil // the replay is over
			}
			return p.HasMore, nil
		})
		switch errorCode(err) {
		case "CursorTooNew":
			sr.env.Log.Warn().Str("stream", sr.s.desc.String()).Int64("cursor", *sr.state.DeltaCursor).
				Msg("the saved cursor is ahead of the engine's log (a state from another engine, or clock skew); no changes are read until the engine's log passes it")
			return nil
		case "InvalidWindowToReadDocuments":
			if sr.skipExpiredReplay(err) {
				if err := sr.emitState(); err != nil {
					return err
				}
				continue
			}
		}
		return err
	}
}

// skipExpiredReplay handles an InvalidWindowToReadDocuments answer (err)
// while the changes before a re-sync snapshot completed in this run are
// replayed: it moves the cursor past what the engine no longer has, to the
// oldest cursor the engine names (or, if it names none, to the snapshot),
// warns that the deletes in between cannot be recovered, and reports
// whether it did. It does not when the engine's oldest change is after the
// snapshot: the snapshot is then too old too, and the stream re-syncs.
func (sr *streamReader) skipExpiredReplay(err error) bool {
	st := sr.state
	if st.ReplayUntil == nil || st.DeltaCursor == nil || *st.DeltaCursor >= *st.ReplayUntil {
		return false
	}
	from, snap := *st.DeltaCursor, *st.ReplayUntil
	var ce *client.Error
	errors.As(err, &ce)
	warn := sr.env.Log.Warn().Str("stream", sr.s.desc.String()).Int64("replay_from", from).Int64("snapshot", snap)
	to := snap
	switch oldest := ce.OldestCursor; {
	case oldest == nil:
		warn.Msgf("the engine no longer has the changes after %d and does not say which it still has: reading the changes after the new snapshot (%d) instead; rows deleted in PostgreSQL between the two may be missing their deletes and remain in the destination (refresh the stream with \"clear data\" for an exact copy)", from, snap)
	case *oldest > from && *oldest <= snap:
		to = *oldest
		warn.Int64("oldest_cursor", to).Msgf("the engine no longer has the changes after %d: replaying from the oldest it still has (%d) instead; deletes between the two cannot be recovered, so rows deleted in PostgreSQL then may remain in the destination (refresh the stream with \"clear data\" for an exact copy)", from, to)
	default:
		return false
	}
	st.DeltaCursor = &to
	return true
}

// consume reads pages with fetch in the background and emits their
// records as they arrive, in chunks, and each page's STATE after its last
// record: a page of any size (one transaction is one page of changes)
// takes the memory of three chunks.
func (sr *streamReader) consume(ctx context.Context, fetch fetchPage) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	chunks := make(chan *chunk, 1)
	// At most three chunks exist: one filling, one queued, one emitted.
	spare := make(chan *chunk, 3)
	newChunk := func() *chunk {
		select {
		case c := <-spare:
			return c
		default:
			return &chunk{}
		}
	}
	send := func(c *chunk) bool {
		select {
		case chunks <- c:
			return true
		case <-ctx.Done():
			return false
		}
	}
	go func() {
		defer close(chunks)
		st := *sr.state
		for {
			c := newChunk()
			more, err := fetch(ctx, &st, func(doc []byte) error {
				if len(c.ends) >= chunkDocs || (len(c.ends) > 0 && len(c.docs)+len(doc) > chunkBytes) {
					if !send(c) {
						return ctx.Err()
					}
					c = newChunk()
				}
				c.docs = append(c.docs, doc...)
				c.ends = append(c.ends, len(c.docs))
				return nil
			})
			after := st
			c.state, c.err = &after, err
			if !send(c) || err != nil || !more {
				return
			}
		}
	}()
	pageRecords := 0
	for c := range chunks {
		if c.err != nil {
			return c.err
		}
		if err := sr.emitChunk(c); err != nil {
			return err
		}
		pageRecords += len(c.ends)
		if c.state != nil {
			changed := !sameState(sr.state, c.state)
			*sr.state = *c.state
			if pageRecords > 0 || changed {
				if err := sr.emitState(); err != nil {
					return err
				}
			}
			pageRecords = 0
		}
		c.docs, c.ends, c.state = c.docs[:0], c.ends[:0], nil
		spare <- c
	}
	return ctx.Err()
}

// emitChunk writes the records of a chunk's documents: RECORD lines to
// stdout or the data channel, or protobuf records to the data channel.
func (sr *streamReader) emitChunk(c *chunk) error {
	emittedAt := protocol.NowMillis()
	buf := sr.buf[:0]
	start, records := 0, 0
	var err error
	for _, end := range c.ends {
		doc := c.docs[start:end]
		start = end
		if sr.proto != nil {
			buf, err = sr.appendFrame(buf, doc, emittedAt)
			if len(doc) > 0 && doc[0] == frameDocument {
				records++
			}
		} else {
			buf, err = sr.w.appendRecord(buf, doc, emittedAt, sr.partition)
			records++
		}
		if err != nil {
			return protocol.SystemError(err, "The engine sent a malformed document for stream %s", sr.s.desc)
		}
	}
	sr.buf = buf
	if sr.ch != nil {
		err = sr.ch.writeRecords(buf)
	} else {
		err = sr.env.Out.WriteLines(buf)
	}
	if err != nil {
		return err
	}
	sr.count += int64(records)
	sr.total += int64(records)
	return nil
}

func sameState(a, b *streamState) bool {
	eq := func(x, y *int64) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }
	eqs := func(x, y *string) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }
	return a.SnapshotHasMore == b.SnapshotHasMore && eq(a.DeltaCursor, b.DeltaCursor) && eqs(a.SnapshotCursor, b.SnapshotCursor) &&
		eq(a.ResyncFrom, b.ResyncFrom) && eq(a.ReplayUntil, b.ReplayUntil) && slices.Equal(a.SnapshotRanges, b.SnapshotRanges)
}

// emitState writes the stream's STATE with the records since the last one.
func (sr *streamReader) emitState() error {
	if sr.ranged != nil {
		return sr.ranged.emit(sr)
	}
	return sr.writeState(sr.state, &sr.stateID)
}

// writeState writes st as the STATE after the records sr emitted since
// its last one. In speed mode it takes the next of the stream's STATE ids
// (lastID) and names the partition of those records; the destination gets
// a copy after them.
func (sr *streamReader) writeState(st *streamState, lastID *int) error {
	blob, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encoding the state of stream %s: %w", sr.s.desc, err)
	}
	m := &protocol.Message{Type: protocol.TypeState, State: &protocol.State{
		Type:        protocol.StateStream,
		Stream:      &protocol.StreamState{StreamDescriptor: sr.s.desc, StreamState: blob},
		SourceStats: &protocol.StateStats{RecordCount: protocol.Count(sr.count)},
	}}
	sr.count = 0
	sr.emitted = true
	if sr.ch == nil {
		return sr.env.Out.Write(m)
	}
	*lastID++
	id := json.RawMessage(strconv.Itoa(*lastID))
	m.State.ID, m.State.PartitionID = &id, sr.partition
	sr.partition = newPartitionID()
	line, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := sr.ch.writeState(line); err != nil {
		return err
	}
	return sr.env.Out.WriteLine(line, true)
}

// errorCode is the engine's error code in err, "" if none.
func errorCode(err error) string {
	var ce *client.Error
	if errors.As(err, &ce) {
		return ce.Code
	}
	return ""
}
