package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"

	"github.com/shapelog/shapelog/protocol"
)

// streamState is one stream's checkpoint (the stream_state blob). The
// field names follow Airbyte's Convex source, so its states read the same.
//
//   - SnapshotHasMore with no DeltaCursor: start a snapshot.
//   - SnapshotHasMore with DeltaCursor (the snapshot's timestamp) and
//     SnapshotCursor: resume that snapshot after the last page emitted.
//   - !SnapshotHasMore: the snapshot is done; incremental syncs continue
//     with the changes after DeltaCursor.
//   - ResyncFrom (only while SnapshotHasMore): the snapshot is a re-sync
//     (setting `invalid_cursor_behavior`) of a stream whose old position the
//     engine no longer had; when it completes, DeltaCursor becomes
//     ResyncFrom, the old position, rather than the snapshot's timestamp,
//     so the changes since then (deletes above all) are read again.
//
// StreamName and StreamNamespace let tools that rebuild a descriptor from
// the blob alone (Airbyte's acceptance tests) find the stream again.
type streamState struct {
	SnapshotCursor  *string `json:"snapshot_cursor"`
	SnapshotHasMore bool    `json:"snapshot_has_more"`
	DeltaCursor     *int64  `json:"delta_cursor"`
	ResyncFrom      *int64  `json:"resync_from,omitempty"`
	StreamName      string  `json:"stream_name,omitempty"`
	StreamNamespace string  `json:"stream_namespace,omitempty"`

	// replayUntil, not saved, is the timestamp of the re-sync snapshot
	// completed in this run while DeltaCursor replays the changes before
	// it (see streamReader.skipExpiredReplay).
	replayUntil *int64
}

// freshState is the state of a stream that starts its snapshot.
func freshState(s *stream) *streamState {
	return &streamState{SnapshotHasMore: true, StreamName: s.desc.Name, StreamNamespace: s.desc.NamespaceOrEmpty()}
}

// inputStates are the states read from --state, by stream.
type inputStates struct {
	byDesc map[string]json.RawMessage // namespace "\x00" name
	byName map[string][]json.RawMessage
}

func descKey(namespace, name string) string { return namespace + "\x00" + name }

// loadStates reads the --state file: an array of state messages (STREAM,
// GLOBAL or LEGACY), or a legacy object of per-stream blobs. A missing
// path, {} and [] mean no state.
func loadStates(path string) (*inputStates, error) {
	in := &inputStates{byDesc: map[string]json.RawMessage{}, byName: map[string][]json.RawMessage{}}
	if path == "" {
		return in, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, protocol.ConfigError(err, "Cannot read the state file %s", path)
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return in, nil
	}
	bad := func(err error) error {
		return protocol.ConfigError(err, "The state file %s is not an Airbyte state (expected a JSON array of STREAM/GLOBAL state messages, or a legacy object)", path)
	}
	var msgs []protocol.State
	switch raw[0] {
	case '[':
		if err := json.Unmarshal(raw, &msgs); err != nil {
			return nil, bad(err)
		}
	case '{':
		var one protocol.State
		if err := json.Unmarshal(raw, &one); err == nil && (one.Type != "" || one.Stream != nil || one.Global != nil) {
			msgs = []protocol.State{one}
		} else {
			msgs = []protocol.State{{Type: protocol.StateLegacy, Data: raw}}
		}
	default:
		return nil, bad(nil)
	}
	for _, m := range msgs {
		switch {
		case m.Stream != nil:
			in.add(m.Stream.StreamDescriptor, m.Stream.StreamState)
		case m.Global != nil:
			for _, s := range m.Global.StreamStates {
				in.add(s.StreamDescriptor, s.StreamState)
			}
		case len(m.Data) > 0:
			var legacy map[string]json.RawMessage
			if err := json.Unmarshal(m.Data, &legacy); err != nil {
				return nil, bad(err)
			}
			for name, blob := range legacy {
				in.add(protocol.StreamDescriptor{Name: name}, blob)
			}
		}
	}
	return in, nil
}

func (in *inputStates) add(d protocol.StreamDescriptor, blob json.RawMessage) {
	if len(blob) == 0 || string(blob) == "null" {
		return
	}
	in.byDesc[descKey(d.NamespaceOrEmpty(), d.Name)] = blob
	in.byName[d.Name] = append(in.byName[d.Name], blob)
}

// forStream returns the stream's saved state, nil when it has none. A
// state saved without a namespace matches when it is the only one with
// that name. A blob that is not this source's state is a config error.
func (in *inputStates) forStream(s *stream) (*streamState, error) {
	blob, ok := in.byDesc[descKey(s.desc.NamespaceOrEmpty(), s.desc.Name)]
	if !ok {
		blob, ok = in.byDesc[descKey("", s.desc.Name)]
		if ok && len(in.byName[s.desc.Name]) != 1 {
			ok = false
		}
	}
	if !ok {
		return nil, nil
	}
	var st streamState
	var fields map[string]json.RawMessage
	err := json.Unmarshal(blob, &fields)
	if err == nil {
		err = json.Unmarshal(blob, &st)
	}
	switch {
	case err != nil:
	case fields["snapshot_has_more"] == nil && fields["delta_cursor"] == nil:
		err = fmt.Errorf("neither snapshot_has_more nor delta_cursor is set")
	case st.SnapshotHasMore && st.SnapshotCursor != nil && st.DeltaCursor == nil:
		err = fmt.Errorf("snapshot_cursor without delta_cursor")
	case !st.SnapshotHasMore && st.DeltaCursor == nil:
		err = fmt.Errorf("a finished snapshot without delta_cursor")
	case !st.SnapshotHasMore && st.ResyncFrom != nil:
		err = fmt.Errorf("a finished snapshot with resync_from")
	}
	if err != nil {
		e := protocol.ConfigError(err, "The saved state of stream %s is not a state of this source; reset the stream (or clear its state) to start over", s.desc)
		d := s.desc
		e.Stream = &d
		return nil, e
	}
	st.StreamName, st.StreamNamespace = s.desc.Name, s.desc.NamespaceOrEmpty()
	return &st, nil
}
