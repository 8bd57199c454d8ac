package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"time"

	"github.com/shapelog/shapelog/engine/client"
	"github.com/shapelog/shapelog/internal/connector"
	"github.com/shapelog/shapelog/internal/datachannel"
	"github.com/shapelog/shapelog/protocol"
)

// batch is one import request plus what follows its commit.
type batch struct {
	records *client.Records
	proto   *client.ProtoBatch            // speed mode with protobuf: the records, as the engine's binary import
	lines   []int                         // input line of each record
	after   []func(context.Context) error // run in order after the commit (TRUNCATE, finishing overwrites)
	states  [][]byte                      // STATE lines to echo after that
	// partitions counts the records of each partition (speed mode).
	partitions map[string]partitionCount
	// lastTable and tableIndex: the table of the last protobuf record and
	// its declaration in proto.
	lastTable  string
	tableIndex uint32
}

// writer runs the write command.
type writer struct {
	env   *protocol.Env
	cfg   *config
	c     *client.Client
	plans map[string]*streamPlan

	cur *batch
	// spare holds committed batches for reuse: a batch's request body then
	// serves a later one instead of a new one growing (and the kernel
	// faulting in fresh memory) every time. Three batches are alive at
	// most: one filling, one queued, one committing.
	spare    chan *batch
	perDesc  map[string]int64 // records per stream since its STREAM state
	sinceAny int64            // records since the last GLOBAL/LEGACY state
	statuses bool             // a STREAM_STATUS arrived: finish overwrites on COMPLETE only
	uuids    *bufio.Reader
	stamp    struct {
		ms  int64
		str []byte
	}
	total int64

	// Speed mode: where STATEs are released, and the streams' terminal
	// statuses that arrived on this socket.
	speed    *partitionStates
	terminal map[*streamPlan]string
	// last is the plan of the previous protobuf record (records of one
	// stream come in runs).
	last struct {
		namespace, name []byte
		hasNamespace    bool
		plan            *streamPlan
	}
}

// write answers the write command: it reads messages on stdin, imports
// records in batches (one transaction each), and echoes each STATE once
// every record before it is committed.
func write(ctx context.Context, env *protocol.Env) error {
	cfg, c, err := loadConfig(env, 0)
	if err != nil {
		return err
	}
	cat, err := protocol.LoadCatalog(env.Args.Catalog)
	if err != nil {
		return err
	}
	plans, err := planStreams(cat, cfg)
	if err != nil {
		return err
	}
	w := &writer{env: env, cfg: cfg, c: c, plans: plans, perDesc: map[string]int64{}, spare: make(chan *batch, 3), uuids: bufio.NewReaderSize(rand.Reader, 4096)}
	dc, err := datachannel.FromEnv()
	if err != nil {
		return protocol.ConfigError(err, "Invalid data channel: %v", err)
	}
	if dc.Sockets() {
		// The tables, and so the dedup indexes, follow the mapping.
		if err := w.prepareChannels(dc); err != nil {
			return err
		}
	}
	if err := w.prepareDedup(ctx); err != nil {
		return err
	}
	start := time.Now()
	if dc.Sockets() {
		err = w.runChannels(ctx, dc)
	} else {
		err = w.run(ctx, w.read)
	}
	elapsed := time.Since(start)
	env.Log.Info().Int64("records", w.total).Dur("elapsed", elapsed).
		Int64("records_per_second", int64(float64(w.total)/max(elapsed.Seconds(), 1e-3))).Msg("write finished")
	return err
}

// prepareDedup builds the unique indexes dedup streams upsert on and waits
// until they are ready.
func (w *writer) prepareDedup(ctx context.Context) error {
	indexes := map[string][][]string{}
	var tables []string
	for _, p := range w.plans {
		if p.mode == protocol.DestinationAppendDedup {
			indexes[p.table] = p.spec.PrimaryKey
			tables = append(tables, p.table)
		}
	}
	if len(tables) == 0 {
		return nil
	}
	if err := w.c.AddPrimaryKeyIndexes(ctx, indexes); err != nil {
		return connector.EngineError(err, "creating the primary-key indexes of the dedup streams")
	}
	for wait := 50 * time.Millisecond; ; wait = min(wait*2, time.Second) {
		ready, err := w.c.PrimaryKeyIndexesReady(ctx, tables)
		if err != nil {
			return connector.EngineError(err, "waiting for the primary-key indexes")
		}
		if ready {
			return nil
		}
		w.env.Log.Info().Strs("tables", tables).Msg("waiting for primary-key indexes to be built")
		select {
		case <-ctx.Done():
			return connector.EngineError(ctx.Err(), "waiting for the primary-key indexes")
		case <-time.After(wait):
		}
	}
}

// run runs the input loop input; a committer goroutine imports the
// batches in order, so reading and parsing overlap with the engine's work.
func (w *writer) run(ctx context.Context, input func(ctx context.Context, send func() error) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	queue := make(chan *batch, 1)
	failed := make(chan error, 1)
	go func() {
		for b := range queue {
			if err := w.commit(ctx, b); err != nil {
				failed <- err
				cancel()
				for range queue {
				}
				// Closed too: send may have taken the error, and the
				// end of run still waits here.
				close(failed)
				return
			}
		}
		close(failed)
	}()
	send := func() error {
		if w.cur == nil {
			return nil
		}
		b := w.cur
		w.cur = nil
		select {
		case queue <- b:
			return nil
		case err := <-failed:
			return err
		}
	}
	inputErr := input(ctx, send)
	if inputErr == nil && w.speed == nil {
		inputErr = w.finishAtEnd(send)
	}
	if inputErr == nil {
		inputErr = send()
	}
	close(queue)
	if err, ok := <-failed; ok && err != nil {
		return err
	}
	return inputErr
}

// read consumes stdin until EOF or a bad message.
func (w *writer) read(ctx context.Context, send func() error) error {
	return w.readJSON(ctx, w.env.In, send)
}

// readJSON consumes JSON lines from r until EOF or a bad message.
func (w *writer) readJSON(ctx context.Context, r io.Reader, send func() error) error {
	in := protocol.NewReader(r)
	maxBytes := w.cfg.BatchMegabytes << 20
	for {
		if ctx.Err() != nil {
			return nil // the committer failed; its error is reported
		}
		m, err := in.ReadMessage()
		if err == io.EOF {
			return nil
		}
		var le *protocol.LineError
		if errors.As(err, &le) {
			return protocol.SystemError(err, "Input line %d is not an Airbyte message; nothing after the last echoed state was committed", le.Line)
		}
		if err != nil {
			return protocol.SystemError(err, "Reading stdin failed")
		}
		switch m.Type {
		case protocol.TypeRecord:
			p := lookup(w.plans, m.Record.Descriptor())
			if p == nil {
				d := m.Record.Descriptor()
				e := protocol.ConfigError(nil, "Input line %d is a record of stream %s, which is not in the configured catalog", in.Line(), d)
				e.Stream = &d
				return e
			}
			if err := w.addRecord(p, m.Record, in.Line(), send); err != nil {
				return err
			}
			if b := w.cur; b != nil && (b.records.Len() >= w.cfg.BatchSize || b.records.Size() >= maxBytes) {
				if err := send(); err != nil {
					return err
				}
			}
		case protocol.TypeState:
			if w.speed != nil {
				if err := w.speedState(m.State, send); err != nil {
					return protocol.SystemError(err, "Input line %d: STATE", in.Line())
				}
				continue
			}
			if err := w.addState(m.State); err != nil {
				return protocol.SystemError(err, "Input line %d: malformed STATE", in.Line())
			}
			if err := send(); err != nil {
				return err
			}
		case protocol.TypeTrace:
			if m.Trace == nil {
				continue
			}
			if st := m.Trace.StreamStatus; st != nil {
				if w.speed != nil {
					w.speedStatus(st)
					continue
				}
				if err := w.streamStatus(st, send); err != nil {
					return err
				}
			}
		}
		// LOG, CONTROL and unknown types: nothing to do.
	}
}

func (w *writer) batch() *batch {
	if w.cur == nil {
		select {
		case w.cur = <-w.spare:
		default:
			w.cur = &batch{records: &client.Records{}, proto: &client.ProtoBatch{}, partitions: map[string]partitionCount{}}
		}
	}
	return w.cur
}

// addRecord adds a record, or for a TRUNCATE marker in a dedup/overwrite
// stream, empties the table after what came before.
func (w *writer) addRecord(p *streamPlan, r *protocol.InputRecord, line int, send func() error) error {
	d := normalize(r.Descriptor())
	w.perDesc[descKey(d)]++
	w.sinceAny++
	w.total++
	if p.mode != protocol.DestinationAppend && isTruncate(r.Data) {
		b := w.batch()
		if w.speed != nil {
			b.count(r.PartitionID, len(r.Data))
		}
		b.after = append(b.after, func(ctx context.Context) error {
			if err := w.c.ClearTables(ctx, []string{p.table}); err != nil {
				return connector.EngineError(err, "applying a TRUNCATE of stream "+p.desc.String())
			}
			return nil
		})
		return send()
	}
	b := w.batch()
	if b.records.Len() == 0 || b.records.Table(b.records.Len()-1) != p.table {
		b.records.Declare(p.table, p.spec)
	}
	b.records.Add(p.table, func(dst []byte) []byte { return w.appendWithMetadata(dst, r, p) })
	b.lines = append(b.lines, line)
	if w.speed != nil {
		b.count(r.PartitionID, len(r.Data))
	}
	return nil
}

var truncateMarker = []byte(`"` + fieldTruncated + `"`)

// isTruncate reports whether data is the record a source TRUNCATE leaves.
func isTruncate(data []byte) bool {
	if !bytes.Contains(data, truncateMarker) {
		return false
	}
	var v map[string]json.RawMessage
	return json.Unmarshal(data, &v) == nil && string(v[fieldTruncated]) == "true"
}

// appendWithMetadata appends the record's data with Airbyte's metadata
// columns.
func (w *writer) appendWithMetadata(out []byte, r *protocol.InputRecord, p *streamPlan) []byte {
	data := bytes.TrimSpace(r.Data)
	out = append(out, data[:len(data)-1]...)
	if len(bytes.TrimSpace(data[1:len(data)-1])) > 0 {
		out = append(out, ',')
	}
	out = append(out, `"`+fieldRawID+`":"`...)
	out = w.appendUUID(out)
	out = append(out, `","`+fieldExtractedAt+`":"`...)
	out = append(out, w.timestamp(r.EmittedAt)...)
	out = append(out, `","`+fieldGenerationID+`":`...)
	if p.hasGeneration {
		out = strconv.AppendInt(out, p.generation, 10)
	} else {
		out = append(out, "null"...)
	}
	out = append(out, `,"`+fieldMeta+`":{"sync_id":`...)
	if p.syncID != nil {
		out = strconv.AppendInt(out, *p.syncID, 10)
	} else {
		out = append(out, "null"...)
	}
	out = append(out, `,"changes":`...)
	if r.Meta != nil && len(r.Meta.Changes) > 0 {
		changes, _ := json.Marshal(r.Meta.Changes)
		out = append(out, changes...)
	} else {
		out = append(out, "[]"...)
	}
	return append(out, "}}"...)
}

// appendUUID appends a random (version 4) UUID.
func (w *writer) appendUUID(dst []byte) []byte {
	var b [16]byte
	_, _ = io.ReadFull(w.uuids, b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return append(dst, s[:]...)
}

// timestamp formats emitted_at (ms), cached: records of one page share it.
func (w *writer) timestamp(ms int64) []byte {
	if w.stamp.str == nil || w.stamp.ms != ms {
		w.stamp.ms = ms
		w.stamp.str = time.UnixMilli(ms).UTC().AppendFormat(nil, "2006-01-02T15:04:05.000Z")
	}
	return w.stamp.str
}

// addState queues a STATE to echo after the records before it commit,
// with destinationStats counting the records of its scope since the last
// state of that scope.
func (w *writer) addState(raw json.RawMessage) error {
	var st protocol.State
	if err := json.Unmarshal(raw, &st); err != nil {
		return err
	}
	var count int64
	if st.Type == protocol.StateStream && st.Stream != nil {
		k := descKey(normalize(st.Stream.StreamDescriptor))
		count = w.perDesc[k]
		w.perDesc[k] = 0
	} else {
		count = w.sinceAny
		w.sinceAny = 0
		clear(w.perDesc)
	}
	line, err := protocol.EchoState(raw, count)
	if err != nil {
		return err
	}
	b := w.batch()
	b.states = append(b.states, line)
	return nil
}

// streamStatus acts on COMPLETE: an overwrite stream's older generations
// are deleted once everything before is committed.
func (w *writer) streamStatus(st *protocol.StreamStatus, send func() error) error {
	w.statuses = true
	p := lookup(w.plans, normalize(st.StreamDescriptor))
	if p == nil || st.Status != protocol.StreamComplete {
		return nil
	}
	if !p.truncateAtEnd {
		return nil
	}
	w.finishOverwrite([]*streamPlan{p})
	return send()
}

// finishAtEnd finishes the overwrite streams when the platform sent no
// stream statuses at all (older platforms): the end of the input is the
// only sign of success there.
func (w *writer) finishAtEnd(send func() error) error {
	if w.statuses {
		return nil
	}
	var done []*streamPlan
	for _, p := range w.plans {
		if p.truncateAtEnd {
			done = append(done, p)
		}
	}
	if len(done) == 0 {
		return nil
	}
	w.finishOverwrite(done)
	return send()
}

func (w *writer) finishOverwrite(plans []*streamPlan) {
	keep := map[string]int64{}
	for _, p := range plans {
		keep[p.table] = p.generation
	}
	b := w.batch()
	b.after = append(b.after, func(ctx context.Context) error { return w.deleteOtherGenerations(ctx, keep) })
}

// deleteOtherGenerations deletes the rows of the overwrite streams' earlier
// syncs: every generation but keep's in each table.
func (w *writer) deleteOtherGenerations(ctx context.Context, keep map[string]int64) error {
	deleted, err := w.c.DeleteOtherGenerations(ctx, keep)
	if err != nil {
		return connector.EngineError(err, "deleting the rows of earlier overwrite syncs")
	}
	for t, n := range deleted {
		w.env.Log.Info().Str("table", t).Int64("rows", n).Msg("overwrite complete: earlier rows deleted")
	}
	return nil
}

// messageIndex finds "message N" in the engine's validation errors.
var messageIndex = regexp.MustCompile(`\bmessage (\d+)\b`)

// commit imports a batch in one transaction, runs what follows it, then
// echoes its states.
func (w *writer) commit(ctx context.Context, b *batch) error {
	if b.proto.Len() > 0 {
		if err := w.c.ImportProtoBatch(ctx, b.proto, client.NewIdempotencyKey()); err != nil {
			return connector.EngineError(err, fmt.Sprintf("importing %d records from the data channel", b.proto.Len()))
		}
	}
	if n := b.records.Len(); n > 0 {
		err := w.c.ImportRecords(ctx, b.records, client.NewIdempotencyKey())
		if err != nil {
			var ce *client.Error
			if errors.As(err, &ce) && ce.Status == 400 {
				if m := messageIndex.FindStringSubmatch(ce.Message); m != nil {
					if i, _ := strconv.Atoi(m[1]); i < n {
						return protocol.SystemError(err, "The record on input line %d (table %s) was rejected: %s", b.lines[i], b.records.Table(i), ce.Message)
					}
				}
			}
			return connector.EngineError(err, fmt.Sprintf("importing %d records (input lines %d-%d)", n, b.lines[0], b.lines[n-1]))
		}
	}
	for _, f := range b.after {
		if err := f(ctx); err != nil {
			return err
		}
	}
	for _, s := range b.states {
		if err := w.env.Out.WriteLine(s, true); err != nil {
			return err
		}
	}
	if w.speed != nil {
		if err := w.speed.commit(b.partitions); err != nil {
			return err
		}
		clear(b.partitions)
	}
	b.records.Reset()
	b.proto.Reset()
	b.lines, b.after, b.states = b.lines[:0], nil, nil
	w.spare <- b // never blocks: at most three batches exist
	return nil
}
