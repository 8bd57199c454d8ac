package main

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"time"

	"github.com/shapelog/shapelog/engine/recordpb"
	"github.com/shapelog/shapelog/protocol"
	"google.golang.org/protobuf/encoding/protowire"
)

// channel is one data-channel socket (speed mode): records, and a copy of
// each STATE after the records it covers, as length-delimited protobuf
// messages or as JSON lines.
type channel struct {
	conn  *net.UnixConn
	w     *bufio.Writer
	proto bool
	buf   []byte
}

// connectTimeout bounds the wait for the destination to connect to a
// first socket.
const connectTimeout = 10 * time.Minute

func newChannel(conn *net.UnixConn, proto bool) *channel {
	return &channel{conn: conn, w: bufio.NewWriterSize(conn, 1<<20), proto: proto}
}

// writeRecords writes encoded records: frames, or JSON lines.
func (ch *channel) writeRecords(b []byte) error {
	_, err := ch.w.Write(b)
	return ch.failed(err)
}

// flush sends what is buffered.
func (ch *channel) flush() error {
	return ch.failed(ch.w.Flush())
}

// failed explains a write error: the destination is gone.
func (ch *channel) failed(err error) error {
	if err == nil {
		return nil
	}
	return protocol.SystemError(err, "Writing to the data channel failed: the destination closed its socket (it failed or was stopped)")
}

// writeState writes a copy of a STATE message (its JSON line, without the
// newline) and flushes, so the destination can commit what it covers.
func (ch *channel) writeState(line []byte) error {
	if ch.proto {
		n := protowire.SizeBytes(len(line))
		ch.buf = protowire.AppendVarint(ch.buf[:0], uint64(1+n))
		ch.buf = protowire.AppendTag(ch.buf, recordpb.MessageProtocolMessage, protowire.BytesType)
		ch.buf = protowire.AppendBytes(ch.buf, line)
	} else {
		ch.buf = append(append(ch.buf[:0], line...), '\n')
	}
	if _, err := ch.w.Write(ch.buf); err != nil {
		return ch.failed(err)
	}
	return ch.failed(ch.w.Flush())
}

// close flushes and closes the socket: the destination sees its end.
func (ch *channel) close() error {
	err := ch.w.Flush()
	if cerr := ch.conn.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("closing the data channel socket: %w", err)
	}
	return nil
}

// newPartitionID names the records of one page and the STATE after them.
func newPartitionID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
