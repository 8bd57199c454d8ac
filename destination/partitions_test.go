package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/shapelog/shapelog/protocol"
)

func speedStateLine(stream string, id int, partition string, records int) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"type":"STREAM","stream":{"stream_descriptor":{"name":%q,"namespace":"public"},"stream_state":{"n":%d}},"id":%d,"partition_id":%q,"sourceStats":{"recordCount":%d}}`,
		stream, id, id, partition, records))
}

// STATEs are echoed once all their partition's records are committed, in
// id order per stream, whatever order records and states arrive in.
func TestPartitionStatesRelease(t *testing.T) {
	var out bytes.Buffer
	w := protocol.NewWriter(&out)
	ps := newPartitionStates(w)
	echoed := func() []string {
		_ = w.Flush()
		var ids []string
		for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			if line == "" {
				continue
			}
			var m struct {
				State struct {
					ID               int             `json:"id"`
					Stream           json.RawMessage `json:"stream"`
					DestinationStats struct {
						RecordCount float64 `json:"recordCount"`
					} `json:"destinationStats"`
					Committed int64 `json:"committedRecordsCount"`
				} `json:"state"`
			}
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatal(err)
			}
			name := "a"
			if bytes.Contains(m.State.Stream, []byte(`"b"`)) {
				name = "b"
			}
			ids = append(ids, fmt.Sprintf("%s%d:%v/%d", name, m.State.ID, m.State.DestinationStats.RecordCount, m.State.Committed))
		}
		out.Reset()
		return ids
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// a2 arrives before a1, b1's records before b1.
	must(ps.add(speedStateLine("a", 2, "pa2", 1)))
	must(ps.commit(map[string]partitionCount{"pb1": {records: 2, bytes: 20}, "pa2": {records: 1, bytes: 5}}))
	must(ps.add(speedStateLine("a", 1, "pa1", 3)))
	if got := echoed(); len(got) != 0 {
		t.Fatalf("echoed before a1's records: %v", got)
	}
	must(ps.add(speedStateLine("b", 1, "pb1", 2)))
	if got := echoed(); strings.Join(got, ",") != "b1:2/2" {
		t.Fatalf("b1: %v", got)
	}
	must(ps.commit(map[string]partitionCount{"pa1": {records: 2}}))
	if got := echoed(); len(got) != 0 {
		t.Fatalf("a1 with 2 of 3 records: %v", got)
	}
	must(ps.commit(map[string]partitionCount{"pa1": {records: 1}}))
	if got := echoed(); strings.Join(got, ",") != "a1:3/3,a2:1/4" {
		t.Fatalf("a1 then a2: %v", got)
	}
	// An empty partition is released at once; a state never completed is
	// reported at the end.
	must(ps.add(speedStateLine("a", 3, "pa3", 0)))
	must(ps.add(speedStateLine("a", 4, "pa4", 5)))
	if got := echoed(); strings.Join(got, ",") != "a3:0/4" {
		t.Fatalf("a3: %v", got)
	}
	if err := ps.unfinished(); err == nil || !strings.Contains(err.Error(), "id 4 (0 of 5 records") {
		t.Fatalf("unfinished: %v", err)
	}
	if err := ps.add(speedStateLine("a", 4, "x", 1)); err == nil {
		t.Fatal("a repeated id was accepted")
	}
	if err := ps.add(json.RawMessage(`{"type":"STREAM","stream":{"stream_descriptor":{"name":"a"}}}`)); err == nil {
		t.Fatal("a STATE without id and partition_id was accepted")
	}
}

func TestPartitionStatesRefuseBadStates(t *testing.T) {
	ps := newPartitionStates(protocol.NewWriter(&bytes.Buffer{}))
	for _, raw := range []string{
		`{"type":"STREAM","stream":{"stream_descriptor":{"name":"a"}},"id":1,"partition_id":"p","sourceStats":{}}`,
		`{"type":"STREAM","stream":{"stream_descriptor":{"name":"a"}},"id":1,"partition_id":"p","sourceStats":{"recordCount":-1}}`,
		`{"type":"STREAM","stream":{"stream_descriptor":{"name":"a"}},"id":1,"partition_id":"p","sourceStats":{"recordCount":1.5}}`,
		`{"type":"STREAM","stream":{"stream_descriptor":{"name":"a"}},"id":0,"partition_id":"p","sourceStats":{"recordCount":1}}`,
		`{"type":"STREAM","stream":{"stream_descriptor":{"name":"a"}},"id":4294967296,"partition_id":"p","sourceStats":{"recordCount":1}}`,
	} {
		if err := ps.add(json.RawMessage(raw)); err == nil {
			t.Errorf("accepted %s", raw)
		}
	}
}
