package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/shapelog/shapelog/engine/client"
	"github.com/shapelog/shapelog/engine/recordpb"
	"github.com/shapelog/shapelog/internal/connector"
	"github.com/shapelog/shapelog/internal/datachannel"
	"github.com/shapelog/shapelog/protocol"
)

// Speed mode (Airbyte's data channel on Unix sockets): the destination
// connects to every socket the source listens on and reads them at once,
// each with its own batches and import requests, so the engine loads what
// each socket carries concurrently. STATEs arrive on the sockets and are
// echoed on stdout once every record they cover is committed
// (partitionStates). Stdin is not read.

// dialTimeout bounds the wait for the source to create its sockets.
const dialTimeout = 15 * time.Minute

// maxFrame bounds one data-channel message (a record and its values).
const maxFrame = 256 << 20

// prepareChannels readies the plans for speed mode: the namespace mapping
// applied, and each stream's fields checked against the metadata columns
// the destination appends.
func (w *writer) prepareChannels(dc datachannel.Config) error {
	if err := w.mapNamespaces(dc); err != nil {
		return err
	}
	for _, p := range w.plans {
		for _, f := range p.fields[:len(p.fields)-len(metaFields)] {
			if slices.Contains(metaFields, f) {
				e := protocol.ConfigError(nil, "Stream %s has a field %s, a column the destination adds to every row itself: deselect it in the connection, or rename the column at the source", p.desc, f)
				e.Stream = &p.desc
				return e
			}
		}
	}
	return nil
}

// runChannels writes what the data channel's sockets carry.
func (w *writer) runChannels(ctx context.Context, dc datachannel.Config) error {
	conns, err := datachannel.Dial(ctx, dc.SocketPaths, dialTimeout)
	if err != nil {
		return protocol.SystemError(err, "Cannot connect to the source's data channel")
	}
	w.env.Log.Info().Int("sockets", len(conns)).Str("format", dc.Format).Msg("writing in speed mode: records come on the data channel")
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	speed := newPartitionStates(w.env.Out)
	writers := make([]*writer, len(conns))
	errs := make([]error, len(conns))
	// The first socket to fail says why the sync failed: the others then
	// fail because of it (their requests cut short).
	var firstMu sync.Mutex
	var first error
	var wg sync.WaitGroup
	for i, conn := range conns {
		sw := w.forSocket(speed)
		writers[i] = sw
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			defer func() {
				if p := recover(); p != nil {
					errs[i] = protocol.SystemError(fmt.Errorf("panic: %v\n%s", p, debug.Stack()), "The destination hit an internal error reading the data channel; please report it")
					cancel()
				}
			}()
			errs[i] = sw.run(ctx, func(ctx context.Context, send func() error) error {
				if dc.Format == datachannel.Protobuf {
					return sw.readProto(ctx, conn, send)
				}
				return sw.readJSON(ctx, conn, send)
			})
			if errs[i] != nil {
				firstMu.Lock()
				if first == nil && !errors.Is(errs[i], context.Canceled) {
					first = errs[i]
				}
				firstMu.Unlock()
				cancel() // one failed socket fails the sync
			}
		}()
	}
	// A failed socket ends the others' reads at once, rather than at the
	// source's next message on them.
	stopReads := context.AfterFunc(ctx, func() {
		for _, conn := range conns {
			_ = conn.SetReadDeadline(time.Now())
		}
	})
	wg.Wait()
	stopReads()
	for _, sw := range writers {
		w.total += sw.total
	}
	if first != nil {
		return first
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := speed.unfinished(); err != nil {
		return protocol.SystemError(err, "The data channel ended with STATEs whose records did not all arrive; nothing after the last echoed STATE counts as written")
	}
	complete, err := w.terminalStatuses(writers)
	if err != nil {
		return err
	}
	return w.finishOverwrites(ctx, complete)
}

// terminalStatuses checks that every stream of the catalog ended COMPLETE
// on the data channel, and returns the streams: a source that stopped
// early leaves every socket at a clean end, and only the missing statuses
// tell (Airbyte's destinations check the same).
func (w *writer) terminalStatuses(writers []*writer) ([]*streamPlan, error) {
	status := map[*streamPlan]string{}
	for _, sw := range writers {
		for p, st := range sw.terminal {
			if status[p] != protocol.StreamIncomplete {
				status[p] = st
			}
		}
	}
	var missing, incomplete []string
	var complete []*streamPlan
	for _, p := range w.plans {
		switch status[p] {
		case protocol.StreamComplete:
			complete = append(complete, p)
		case protocol.StreamIncomplete:
			incomplete = append(incomplete, p.desc.String())
		default:
			missing = append(missing, p.desc.String())
		}
	}
	slices.Sort(missing)
	slices.Sort(incomplete)
	switch {
	case len(incomplete) > 0:
		return nil, protocol.SystemError(nil, "The source reported streams %v INCOMPLETE: the sync failed at the source; what was echoed stays committed", incomplete)
	case len(missing) > 0:
		return nil, protocol.SystemError(nil, "The data channel ended without a COMPLETE status for streams %v: the source stopped early; what was echoed stays committed", missing)
	}
	return complete, nil
}

// forSocket is a writer for one socket, sharing the plans, the client and
// the STATE releasing.
func (w *writer) forSocket(speed *partitionStates) *writer {
	return &writer{env: w.env, cfg: w.cfg, c: w.c, plans: w.plans, perDesc: map[string]int64{}, spare: make(chan *batch, 3), uuids: bufio.NewReaderSize(rand.Reader, 4096), speed: speed}
}

// finishOverwrites deletes the earlier generations of the overwrite
// streams once every socket is done and every stream COMPLETE.
func (w *writer) finishOverwrites(ctx context.Context, complete []*streamPlan) error {
	keep := map[string]int64{}
	for _, p := range complete {
		if p.truncateAtEnd {
			keep[p.table] = p.generation
		}
	}
	if len(keep) == 0 {
		return nil
	}
	return w.deleteOtherGenerations(ctx, keep)
}

// speedState hands a STATE from the data channel to the releasing, after
// sending the batch so far on its way.
func (w *writer) speedState(raw json.RawMessage, send func() error) error {
	if err := send(); err != nil {
		return err
	}
	return w.speed.add(raw)
}

// speedStatus notes a stream's terminal status (COMPLETE or INCOMPLETE),
// checked and acted on once every socket has ended.
func (w *writer) speedStatus(st *protocol.StreamStatus) {
	p := lookup(w.plans, normalize(st.StreamDescriptor))
	if p == nil || (st.Status != protocol.StreamComplete && st.Status != protocol.StreamIncomplete) {
		return
	}
	if w.terminal == nil {
		w.terminal = map[*streamPlan]string{}
	}
	if w.terminal[p] != protocol.StreamIncomplete {
		w.terminal[p] = st.Status
	}
}

// readProto consumes length-delimited recordpb.Messages from one socket.
func (w *writer) readProto(ctx context.Context, conn net.Conn, send func() error) error {
	r := bufio.NewReaderSize(conn, 1<<20)
	maxBytes := w.cfg.BatchMegabytes << 20
	var buf []byte
	for n := 1; ; n++ {
		if ctx.Err() != nil {
			return nil // the committer failed; its error is reported
		}
		frame, err := recordpb.ReadFrame(r, buf, maxFrame)
		buf = frame
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return protocol.SystemError(err, "Reading message %d of the data channel failed", n)
		}
		num, typ, k := protowire.ConsumeTag(frame)
		if k < 0 || typ != protowire.BytesType {
			return protocol.SystemError(nil, "Message %d of the data channel is not an Airbyte protobuf message", n)
		}
		body, m := protowire.ConsumeBytes(frame[k:])
		if m < 0 {
			return protocol.SystemError(protowire.ParseError(m), "Message %d of the data channel is malformed", n)
		}
		switch num {
		case recordpb.MessageRecord:
			if err := w.addProtoRecord(body, n, send); err != nil {
				return err
			}
			if b := w.cur; b != nil && (b.proto.Len() >= w.cfg.BatchSize || b.proto.Size() >= maxBytes) {
				if err := send(); err != nil {
					return err
				}
			}
		case recordpb.MessageProtocolMessage:
			if err := w.protocolMessage(body, n, send); err != nil {
				return err
			}
		case recordpb.MessageProbe:
		}
	}
}

// protocolMessage handles a JSON message (a STATE, a TRACE) that came on
// the data channel.
func (w *writer) protocolMessage(line []byte, n int, send func() error) error {
	var m protocol.InputMessage
	if err := json.Unmarshal(line, &m); err != nil {
		return protocol.SystemError(err, "Message %d of the data channel is not an Airbyte message", n)
	}
	switch m.Type {
	case protocol.TypeState:
		if err := w.speedState(m.State, send); err != nil {
			return protocol.SystemError(err, "Message %d of the data channel: STATE", n)
		}
	case protocol.TypeTrace:
		if m.Trace != nil && m.Trace.StreamStatus != nil {
			w.speedStatus(m.Trace.StreamStatus)
		}
	}
	return nil
}

// addProtoRecord adds one encoded recordpb.Record (the n-th message) to the
// batch: its bytes as they are, then Airbyte's metadata columns, for the
// engine to decode once.
func (w *writer) addProtoRecord(rec []byte, n int, send func() error) error {
	var (
		ns, name, partition, meta []byte
		hasNS                     bool
		emittedAt                 uint64
		values                    int
		truncated                 bool
		p                         *streamPlan
	)
	err := recordpb.EachField(rec, func(num protowire.Number, _ protowire.Type, raw []byte, v uint64) error {
		switch num {
		case recordpb.RecordNamespace:
			ns, hasNS = raw, true
		case recordpb.RecordStream:
			name = raw
		case recordpb.RecordEmittedAtMs:
			emittedAt = v
		case recordpb.RecordPartitionID:
			partition = raw
		case recordpb.RecordData:
			if p == nil {
				var err error
				if p, err = w.protoPlan(ns, name, hasNS); err != nil {
					return err
				}
			}
			if values == p.truncatedAt && len(raw) == 2 && raw[0] == byte(recordpb.KindBoolean)<<3 && raw[1] == 1 {
				truncated = true
			}
			values++
		case recordpb.RecordMetaField:
			meta = raw
		}
		return nil
	})
	if err == nil && p == nil {
		p, err = w.protoPlan(ns, name, hasNS)
	}
	if err != nil {
		var pe *protocol.Error
		if errors.As(err, &pe) {
			return pe
		}
		return protocol.SystemError(err, "Message %d of the data channel is a malformed record", n)
	}
	d := p.desc
	w.perDesc[descKey(d)]++
	w.total++
	b := w.batch()
	if truncated && p.mode != protocol.DestinationAppend {
		// A source TRUNCATE: the table is emptied after what came before.
		b.after = append(b.after, func(ctx context.Context) error {
			if err := w.c.ClearTables(ctx, []string{p.table}); err != nil {
				return connector.EngineError(err, "applying a TRUNCATE of stream "+p.desc.String())
			}
			return nil
		})
		b.count(string(partition), len(rec))
		return send()
	}
	want := len(p.fields) - len(metaFields)
	if values > want {
		return protocol.SystemError(nil, "Message %d of the data channel, a record of stream %s, has %d values; the stream's json_schema has %d fields", n, p.desc, values, want)
	}
	if b.proto.Len() == 0 || b.lastTable != p.table {
		b.tableIndex = b.proto.Declare(p.table, p.spec, p.fields)
		b.lastTable = p.table
	}
	b.proto.AddRecordBytes(b.tableIndex, rec, func(dst []byte) []byte {
		for range want - values { // fields missing at the end are null
			dst = recordpb.AppendNull(dst)
		}
		return w.appendProtoMetadata(dst, p, int64(emittedAt), meta)
	})
	b.count(string(partition), len(rec))
	return nil
}

// count counts a record of partition id.
func (b *batch) count(id string, size int) {
	c := b.partitions[id]
	c.records++
	c.bytes += int64(size)
	b.partitions[id] = c
}

// protoPlan finds the plan of a protobuf record's stream, remembering the
// last one.
func (w *writer) protoPlan(ns, name []byte, hasNS bool) (*streamPlan, error) {
	l := &w.last
	if l.plan != nil && l.hasNamespace == hasNS && string(l.namespace) == string(ns) && string(l.name) == string(name) {
		return l.plan, nil
	}
	d := protocol.StreamDescriptor{Name: string(name)}
	if hasNS {
		s := string(ns)
		d.Namespace = &s
	}
	p := lookup(w.plans, normalize(d))
	if p == nil {
		e := protocol.ConfigError(nil, "A record of stream %s came on the data channel, which is not in the configured catalog", d)
		e.Stream = &d
		return nil, e
	}
	l.namespace, l.name, l.hasNamespace, l.plan = append(l.namespace[:0], ns...), append(l.name[:0], name...), hasNS, p
	return p, nil
}

// appendProtoMetadata appends the values of Airbyte's metadata columns, in
// the order of metaFields.
func (w *writer) appendProtoMetadata(dst []byte, p *streamPlan, emittedAt int64, meta []byte) []byte {
	var id []byte
	id = w.appendUUID(id)
	dst = recordpb.AppendBytesKind(dst, recordpb.KindString, id)
	dst = recordpb.AppendBytesKind(dst, recordpb.KindString, w.timestamp(emittedAt))
	if p.hasGeneration {
		dst = recordpb.AppendInteger(dst, p.generation)
	} else {
		dst = recordpb.AppendNull(dst)
	}
	dst, start := recordpb.BeginBytesKind(dst, recordpb.KindJSON)
	dst = append(dst, `{"sync_id":`...)
	if p.syncID != nil {
		dst = strconv.AppendInt(dst, *p.syncID, 10)
	} else {
		dst = append(dst, "null"...)
	}
	dst = append(dst, `,"changes":`...)
	dst = appendChanges(dst, meta)
	dst = append(dst, '}')
	return recordpb.EndBytesKind(dst, start)
}

// appendChanges appends a record's meta changes as JSON ([] without any).
func appendChanges(dst, meta []byte) []byte {
	var m recordpb.RecordMeta
	if len(meta) == 0 || proto.Unmarshal(meta, &m) != nil || len(m.Changes) == 0 {
		return append(dst, "[]"...)
	}
	changes := make([]protocol.FieldChange, len(m.Changes))
	for i, c := range m.Changes {
		changes[i] = protocol.FieldChange{Field: c.Field, Change: c.Change.String(), Reason: c.Reason.String()}
	}
	b, _ := json.Marshal(changes)
	return append(dst, b...)
}

// metaFields are the metadata columns' fields, as appendProtoMetadata
// appends their values.
var metaFields = []string{fieldRawID, fieldExtractedAt, fieldGenerationID, fieldMeta}

// mapNamespaces applies the connection's namespace mapping to the tables
// the streams go to: in speed mode the platform leaves the records' streams
// as the source named them and the destination maps them itself.
func (w *writer) mapNamespaces(dc datachannel.Config) error {
	m, err := datachannel.LoadNamespaceMapping(dc.NamespaceMapperPath)
	if err != nil {
		return protocol.ConfigError(err, "Cannot read the namespace mapping: %v", err)
	}
	if m == nil {
		return nil
	}
	tables := map[string]string{}
	for _, p := range w.plans {
		ns, name := m.Map(p.desc.Namespace, p.desc.Name)
		schema := w.cfg.DefaultSchema
		if ns != nil {
			schema = *ns
		}
		if len(schema) > 63 || len(name) > 63 {
			return protocol.ConfigError(nil, "Stream %s maps to table %s.%s: PostgreSQL names are at most 63 bytes", p.desc, schema, name)
		}
		p.table = client.TableName(schema, name)
		if other, ok := tables[p.table]; ok {
			return protocol.ConfigError(nil, "Streams %s and %s map to the same table %s", other, p.desc, p.table)
		}
		tables[p.table] = p.desc.String()
	}
	w.env.Log.Info().Str("namespace_definition", m.DefinitionType).Str("stream_prefix", m.StreamPrefix).Msg("applying the connection's namespace mapping")
	return nil
}
