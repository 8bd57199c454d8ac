package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shapelog/shapelog/engine/client"
	"github.com/shapelog/shapelog/engine/recordpb"
	"github.com/shapelog/shapelog/internal/datachannel"
	"github.com/shapelog/shapelog/protocol"
)

// Speed mode (Airbyte's data channel on Unix sockets): the streams are
// read concurrently, one per socket at a time; each stream's records and a
// copy of its STATEs and statuses go to its socket, and everything but the
// records to stdout as well.

// readOnChannels reads the jobs over the data channel's sockets: each
// socket the destination connects to gets a worker reading one stream at
// a time, and the key ranges of large snapshots (ranges.go) when it has
// no stream to read (a destination may use fewer sockets than it is
// given, as Airbyte's load CDK allows). Every connected socket is closed
// at the end.
func (r *reader) readOnChannels(ctx context.Context, dc datachannel.Config, jobs []job, run func(job, *channel)) error {
	l, err := datachannel.Listen(dc.SocketPaths)
	if err != nil {
		return protocol.SystemError(err, "Cannot create the data channel's sockets (%s)", datachannel.EnvSocketPaths)
	}
	acceptCtx, stopAccepting := context.WithCancel(ctx)
	defer stopAccepting()
	if l.Len() > 1 {
		r.pool = newRangePool(l.Len())
	}
	var (
		mu        sync.Mutex
		channels  []*channel
		connected = make(chan struct{})
		once      sync.Once
		wg        sync.WaitGroup
		queue     = make(chan job)
		pending   sync.WaitGroup // the jobs not finished
		finished  = make(chan struct{})
	)
	pending.Add(len(jobs))
	go func() {
		pending.Wait()
		close(finished)
	}()
	for i := range l.Len() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := l.Conn(acceptCtx, i)
			if err != nil {
				return // not connected before the reading ended
			}
			ch := newChannel(conn, dc.Format == datachannel.Protobuf)
			mu.Lock()
			channels = append(channels, ch)
			mu.Unlock()
			once.Do(func() { close(connected) })
			for j := range queue {
				run(j, ch)
				pending.Done()
			}
			// Every stream has a worker: help read their ranges.
			if r.pool != nil {
				r.pool.helpUntil(finished, ch)
			}
		}()
	}
	var failed error
	select {
	case <-connected:
		r.env.Log.Info().Int("sockets", l.Len()).Str("format", dc.Format).Int("streams", len(jobs)).Msg("reading in speed mode: records go to the data channel")
		for i, j := range jobs {
			if ctx.Err() != nil {
				pending.Add(i - len(jobs)) // never to be read
				break
			}
			queue <- j
		}
	case <-time.After(connectTimeout):
		failed = protocol.SystemError(nil, "The destination did not connect to the data channel (%s) within %s", datachannel.EnvSocketPaths, connectTimeout)
	case <-ctx.Done():
		failed = ctx.Err()
	}
	close(queue)
	if failed != nil {
		pending.Add(-len(jobs)) // none was read
	}
	// A socket the destination has not connected to yet gets a moment to
	// be, so that it is closed rather than left to a dial that would wait
	// for a file gone with the listener; a destination that uses fewer
	// sockets costs this wait once.
	if failed == nil {
		time.AfterFunc(lateConnectGrace, stopAccepting)
	} else {
		stopAccepting()
	}
	wg.Wait()
	l.Close()
	for _, ch := range channels {
		if err := ch.close(); err != nil && failed == nil {
			failed = protocol.SystemError(err, "Closing the data channel failed: the destination may not have every record")
		}
	}
	return failed
}

// lateConnectGrace is how long the end of a read waits for sockets the
// destination has not connected to yet.
const lateConnectGrace = 10 * time.Second

// streamStatus reports a stream's status on stdout and, in speed mode, on
// its socket (the destination finishes overwrites on COMPLETE).
func (r *reader) streamStatus(ch *channel, d protocol.StreamDescriptor, status string) error {
	m := protocol.StreamStatusMessage(d, status)
	var sockErr error
	if ch != nil {
		line, err := json.Marshal(m)
		if err != nil {
			return err
		}
		sockErr = ch.writeState(line)
	}
	// Stdout gets it even when the socket failed: the platform tracks the
	// source's streams there.
	return errors.Join(r.env.Out.Write(m), sockErr)
}

// What a chunk holds in protobuf mode: each item is one of these bytes
// followed by an encoded recordpb.Fields or recordpb.Document.
const (
	frameFields   = 'F'
	frameDocument = 'D'
)

// exportFrames reads one page in protobuf, passing its fields and
// documents on as chunk items.
func (sr *streamReader) exportFrames(ctx context.Context, endpoint string, q client.ExportQuery, each func([]byte) error) (*recordpb.PageEnd, error) {
	var item []byte
	return sr.c.ExportFrames(ctx, endpoint, q, func(f *recordpb.Fields) error {
		b, err := proto.Marshal(f)
		if err != nil {
			return err
		}
		return each(append([]byte{frameFields}, b...))
	}, func(doc []byte) error {
		item = append(append(item[:0], frameDocument), doc...)
		return each(item)
	})
}

// listSnapshotFrames is ListSnapshotEach in protobuf.
func (sr *streamReader) listSnapshotFrames(ctx context.Context, req client.SnapshotRequest, each func([]byte) error) (*client.SnapshotPage, error) {
	end, err := sr.exportFrames(ctx, "list_snapshot", client.ExportQuery{TableName: req.TableName, Snapshot: req.Snapshot, Cursor: req.Cursor, Limit: req.Limit}, each)
	if err != nil {
		return nil, err
	}
	if end.Snapshot == nil {
		return nil, fmt.Errorf("list_snapshot answered without a snapshot")
	}
	return &client.SnapshotPage{Snapshot: end.GetSnapshot(), Cursor: end.Cursor, HasMore: end.GetHasMore()}, nil
}

// documentDeltasFrames is DocumentDeltasEach in protobuf.
func (sr *streamReader) documentDeltasFrames(ctx context.Context, req client.DeltasRequest, each func([]byte) error) (*client.DeltasPage, error) {
	cursor := fmt.Sprint(req.Cursor)
	end, err := sr.exportFrames(ctx, "document_deltas", client.ExportQuery{TableName: req.TableName, Cursor: &cursor, Limit: req.Limit}, each)
	if err != nil {
		return nil, err
	}
	if end.Cursor == nil {
		return nil, fmt.Errorf("document_deltas answered without a cursor")
	}
	next, err := strconv.ParseInt(*end.Cursor, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("document_deltas answered cursor %q: %w", *end.Cursor, err)
	}
	return &client.DeltasPage{Cursor: next, HasMore: end.GetHasMore()}, nil
}

// appendFrame appends the data-channel message of a chunk item: a record
// for a document; nothing for fields, which set the layout of the
// documents after them.
func (sr *streamReader) appendFrame(dst, item []byte, emittedAt int64) ([]byte, error) {
	if len(item) == 0 {
		return dst, fmt.Errorf("empty frame")
	}
	switch item[0] {
	case frameFields:
		var f recordpb.Fields
		if err := proto.Unmarshal(item[1:], &f); err != nil {
			return dst, err
		}
		sr.proto.setFields(&f)
		return dst, nil
	case frameDocument:
		return sr.proto.appendRecord(dst, item[1:], emittedAt, sr.partition)
	}
	return dst, fmt.Errorf("unknown frame kind %q", item[0])
}
