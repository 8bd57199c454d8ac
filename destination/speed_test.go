package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shapelog/shapelog/engine/recordpb"
	"github.com/shapelog/shapelog/internal/connectortest"
	"github.com/shapelog/shapelog/internal/datachannel"
	"github.com/shapelog/shapelog/protocol"
)

// speedSource plays a speed-mode source the way Airbyte's CDK may: it
// listens on the sockets and writes each a script of messages, which may
// put a STATE on another socket than its records, and probes.
type speedSource struct {
	t     *testing.T
	paths []string
}

func newSpeedSource(t *testing.T, sockets int) *speedSource {
	dir, err := os.MkdirTemp("", "sl-dst-") // short: a socket path has at most 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &speedSource{t: t}
	for i := range sockets {
		s.paths = append(s.paths, filepath.Join(dir, fmt.Sprintf("s%d.sock", i)))
	}
	t.Setenv(datachannel.EnvMedium, datachannel.Socket)
	t.Setenv(datachannel.EnvFormat, datachannel.Protobuf)
	t.Setenv(datachannel.EnvSocketPaths, strings.Join(s.paths, ","))
	t.Setenv("NAMESPACE_MAPPING_CONFIG_PATH", "")
	return s
}

// serve writes scripts[i] to socket i once the destination connects, then
// closes it; it returns at once.
func (s *speedSource) serve(scripts ...[][]byte) {
	l, err := datachannel.Listen(s.paths)
	if err != nil {
		s.t.Fatal(err)
	}
	for i, script := range scripts {
		go func() {
			conn, err := l.Conn(context.Background(), i)
			if err != nil {
				return
			}
			defer conn.Close()
			for _, m := range script {
				if _, err := conn.Write(recordpb.AppendDelimited(nil, m)); err != nil {
					return
				}
			}
		}()
	}
	s.t.Cleanup(l.Close)
}

func pbRecord(t *testing.T, stream, partition string, values ...*recordpb.Value) []byte {
	b, err := proto.Marshal(&recordpb.Message{Kind: &recordpb.Message_Record{Record: &recordpb.Record{
		StreamName: stream, EmittedAtMs: 1_700_000_000_000, PartitionId: partition, Data: values}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pbJSON(t *testing.T, line string) []byte {
	b, err := proto.Marshal(&recordpb.Message{Kind: &recordpb.Message_ProtocolMessage{ProtocolMessage: line}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pbState(t *testing.T, stream string, id int, partition string, records int) []byte {
	return pbJSON(t, fmt.Sprintf(`{"type":"STATE","state":{"type":"STREAM","stream":{"stream_descriptor":{"name":%q},"stream_state":{"c":%d}},"id":%d,"partition_id":%q,"sourceStats":{"recordCount":%d}}}`,
		stream, id, id, partition, records))
}

var pbProbe = func() []byte {
	b, _ := proto.Marshal(&recordpb.Message{Kind: &recordpb.Message_Probe{Probe: &recordpb.Probe{}}})
	return b
}()

// The destination in speed mode, fed as Airbyte's CDK may feed it: a
// STATE on another socket than its records, probes, a missing trailing
// value; it echoes each STATE once its records are committed, in order,
// and fails when a stream ends without COMPLETE.
func TestSpeedModeFromAnotherSource(t *testing.T) {
	f := newFixture(t)
	cat := connectortest.WriteJSON(t, "catalog.json", protocol.ConfiguredCatalog{Streams: []protocol.ConfiguredStream{
		stream("items", protocol.DestinationAppendDedup, [][]string{{"id"}}, nil)}})
	str := func(s string) *recordpb.Value { return &recordpb.Value{Kind: &recordpb.Value_String_{String_: s}} }
	num := func(n int64) *recordpb.Value { return &recordpb.Value{Kind: &recordpb.Value_Integer{Integer: n}} }
	null := &recordpb.Value{IsNull: true}
	complete := pbJSON(t, `{"type":"TRACE","trace":{"type":"STREAM_STATUS","emitted_at":1,"stream_status":{"stream_descriptor":{"name":"items"},"status":"COMPLETE"}}}`)
	// Fields in Airbyte's order: _ab_cdc_deleted_at, cur, id, name.
	src := newSpeedSource(t, 2)
	src.serve(
		[][]byte{
			pbRecord(t, "items", "p1", null, str("a"), num(1), str("one")),
			pbProbe,
			pbRecord(t, "items", "p1", null, str("a"), num(2), str("two")),
			pbRecord(t, "items", "p2", null, str("b"), num(3)), // name missing at the end: null
			pbState(t, "items", 2, "p2", 1),
		},
		[][]byte{
			pbState(t, "items", 1, "p1", 2), // its records are on the other socket
			complete,
		},
	)
	out := connectortest.Run(t, f.bin, nil, "write", "--config", f.config, "--catalog", cat)
	if out.Code != 0 {
		t.Fatalf("write failed:\n%s", out)
	}
	var ids []string
	for _, m := range out.OfType(protocol.TypeState) {
		ids = append(ids, fmt.Sprintf("%s:%v", *m.State.ID, m.State.DestinationStats.RecordCount))
	}
	if strings.Join(ids, ",") != "1:2,2:1" {
		t.Errorf("echoed STATEs (id:records) %v, want 1:2,2:1", ids)
	}
	if got := strings.Join(f.rows("items"), ","); got != "1:one,2:two,3:NULL" {
		t.Errorf("rows %s", got)
	}

	// A source that stopped early: clean socket ends, no COMPLETE.
	src = newSpeedSource(t, 1)
	src.serve([][]byte{pbRecord(t, "items", "q1", null, str("c"), num(4), str("four")), pbState(t, "items", 1, "q1", 1)})
	out = connectortest.Run(t, f.bin, nil, "write", "--config", f.config, "--catalog", cat)
	if out.Code == 0 || !strings.Contains(out.String(), "without a COMPLETE status") {
		t.Errorf("a channel ending without COMPLETE succeeded:\n%s", out)
	}
	if n := len(out.OfType(protocol.TypeState)); n != 1 {
		t.Errorf("%d STATEs echoed, want the committed one", n)
	}
}
