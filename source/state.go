package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"

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
//   - ReplayUntil (only once the snapshot is done): DeltaCursor is replaying
//     the changes from a re-sync's old position up to this, the re-sync
//     snapshot's timestamp (see streamReader.skipExpiredReplay); dropped
//     once the changes read pass it.
//   - SnapshotRanges (only while SnapshotHasMore, with DeltaCursor and no
//     SnapshotCursor): the snapshot is read as key ranges in parallel (speed
//     mode, see ranges.go); these are the cursors of the ranges not finished
//     yet, each where its last emitted page left it.
//
// StreamName and StreamNamespace let tools that rebuild a descriptor from
// the blob alone (Airbyte's acceptance tests) find the stream again.
//
// The saved blob also carries the stream's cursor the way Airbyte's database
// sources write it: `cursor_field` (["_ab_cdc_lsn"]) and `cursor`, a copy of
// DeltaCursor (see MarshalJSON), so that tools which look for the cursor
// field's value in a state (the acceptance tests' abnormal-state test) find
// it. On input, `cursor` stands for DeltaCursor when that is absent.
type streamState struct {
	SnapshotCursor  *string  `json:"snapshot_cursor"`
	SnapshotHasMore bool     `json:"snapshot_has_more"`
	DeltaCursor     *int64   `json:"delta_cursor"`
	ResyncFrom      *int64   `json:"resync_from,omitempty"`
	ReplayUntil     *int64   `json:"replay_until,omitempty"`
	SnapshotRanges  []string `json:"snapshot_ranges,omitempty"`
	StreamName      string   `json:"stream_name,omitempty"`
	StreamNamespace string   `json:"stream_namespace,omitempty"`
}

// cursorField is the `cursor_field` of every saved state: the discovered
// streams' cursor.
var cursorField = []string{fieldLSN}

// MarshalJSON writes the state with its cursor field and value, `cursor`
// being DeltaCursor: the position in the engine's log (engine timestamps
// are _ab_cdc_lsn values) after which the changes are read.
func (st streamState) MarshalJSON() ([]byte, error) {
	type fields streamState // without this method
	return json.Marshal(struct {
		fields
		CursorField []string `json:"cursor_field"`
		Cursor      *int64   `json:"cursor"`
	}{fields(st), cursorField, st.DeltaCursor})
}

// freshState is the state of a stream that starts its snapshot.
func freshState(s *stream) *streamState {
	return &streamState{SnapshotHasMore: true, StreamName: s.desc.Name, StreamNamespace: s.desc.NamespaceOrEmpty()}
}

// finishSnapshot marks the snapshot at ts read. After a re-sync the
// changes are read from the old position (ResyncFrom), not from ts.
func (st *streamState) finishSnapshot(ts int64) {
	st.SnapshotCursor, st.SnapshotRanges, st.SnapshotHasMore = nil, nil, false
	st.DeltaCursor = &ts
	if st.ResyncFrom != nil {
		st.DeltaCursor, st.ResyncFrom, st.ReplayUntil = st.ResyncFrom, nil, &ts
	}
}

// inputStates are the states read from --state, by stream.
type inputStates struct {
	saved  []*savedState
	byDesc map[string]*savedState // namespace "\x00" name
	byName map[string][]*savedState
}

// savedState is one stream's saved blob: its state, or why it is not a
// state of this source.
type savedState struct {
	desc protocol.StreamDescriptor // as the state names the stream
	st   *streamState
	err  error
	used bool // a configured stream took it
}

func descKey(namespace, name string) string { return namespace + "\x00" + name }

// loadStates reads the --state file: an array of state messages (STREAM,
// GLOBAL or LEGACY), or a legacy object of per-stream blobs (what Airbyte
// keeps of a source that wrote LEGACY states, Airbyte's Convex source
// among them). A missing path, {} and [] mean no state.
func loadStates(path string) (*inputStates, error) {
	in := &inputStates{byDesc: map[string]*savedState{}, byName: map[string][]*savedState{}}
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
			names := make([]string, 0, len(legacy))
			for name := range legacy {
				names = append(names, name)
			}
			sort.Strings(names)
			for _, name := range names {
				in.add(protocol.StreamDescriptor{Name: name}, legacy[name])
			}
		}
	}
	return in, nil
}

func (in *inputStates) add(d protocol.StreamDescriptor, blob json.RawMessage) {
	if len(blob) == 0 || string(blob) == "null" {
		return
	}
	ss := &savedState{desc: d}
	ss.st, ss.err = parseState(blob)
	in.saved = append(in.saved, ss)
	in.byDesc[descKey(d.NamespaceOrEmpty(), d.Name)] = ss
	in.byName[d.Name] = append(in.byName[d.Name], ss)
}

// forStream returns the stream's saved state, nil when it has none. A
// state saved without a namespace matches when it is the only one with
// that name. A blob that is not this source's state is a config error.
func (in *inputStates) forStream(s *stream) (*streamState, error) {
	ss, ok := in.byDesc[descKey(s.desc.NamespaceOrEmpty(), s.desc.Name)]
	if !ok {
		ss, ok = in.byDesc[descKey("", s.desc.Name)]
		if ok && len(in.byName[s.desc.Name]) != 1 {
			ok = false
		}
	}
	if !ok {
		return nil, nil
	}
	ss.used = true
	if ss.err != nil {
		return nil, notOurState(s.desc, ss.err)
	}
	st := *ss.st
	st.StreamName, st.StreamNamespace = s.desc.Name, s.desc.NamespaceOrEmpty()
	return &st, nil
}

// unusedError is the config error of the first saved blob no configured
// stream took that is not a state of this source (nil if none): a state
// file that holds one did not come from this source.
func (in *inputStates) unusedError() error {
	for _, ss := range in.saved {
		if !ss.used && ss.err != nil {
			return notOurState(ss.desc, ss.err)
		}
	}
	return nil
}

// notOurState is the config error of stream d, whose saved state is not a
// state of this source for the reason why.
func notOurState(d protocol.StreamDescriptor, why error) *protocol.Error {
	e := protocol.ConfigError(why, "The saved state of stream %s is not a state of this source: %v. "+
		"Reset the stream in Airbyte (or clear the connection's state) so that it starts over with a new snapshot", d, why)
	e.Stream = &d
	return e
}

// parseState decodes a stream_state blob and checks it is one this source
// (or Airbyte's Convex source, whose fields it shares) writes: an object
// of known fields with the right types, cursors that are engine
// timestamps (non-negative integers), and a consistent combination. States
// written before `cursor_field` and `cursor` existed read as they did.
func parseState(blob json.RawMessage) (*streamState, error) {
	dec := json.NewDecoder(bytes.NewReader(blob))
	dec.UseNumber()
	var fields map[string]any
	if err := dec.Decode(&fields); err != nil || fields == nil {
		return nil, fmt.Errorf("it is %s, not a JSON object", brief(blob))
	}
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names)
	if v, ok := fields["cursor_field"]; ok {
		// Another cursor field says more than its cursor's type would.
		if err := checkCursorField(v); err != nil {
			return nil, err
		}
	}
	var st streamState
	var cursor *int64
	for _, k := range names {
		var err error
		switch v := fields[k]; k {
		case "snapshot_cursor":
			st.SnapshotCursor, err = optionalString(k, v)
		case "snapshot_has_more":
			b, ok := v.(bool)
			if !ok && v != nil {
				err = wrongType(k, v, "true or false")
			}
			st.SnapshotHasMore = b
		case "delta_cursor":
			st.DeltaCursor, err = optionalTimestamp(k, v)
		case "resync_from":
			st.ResyncFrom, err = optionalTimestamp(k, v)
		case "replay_until":
			st.ReplayUntil, err = optionalTimestamp(k, v)
		case "snapshot_ranges":
			st.SnapshotRanges, err = cursorList(k, v)
		case "stream_name", "stream_namespace":
			_, err = optionalString(k, v)
		case "cursor_field":
			// checked above
		case "cursor":
			cursor, err = optionalTimestamp(k, v)
		default:
			err = fmt.Errorf("it has a field %q, which this source never writes", k)
		}
		if err != nil {
			return nil, err
		}
	}
	switch {
	case cursor != nil && st.DeltaCursor == nil:
		st.DeltaCursor = cursor
	case cursor != nil && *cursor != *st.DeltaCursor:
		return nil, fmt.Errorf("cursor (%d) and delta_cursor (%d) differ: they are the same position", *cursor, *st.DeltaCursor)
	}
	switch {
	case fields["snapshot_has_more"] == nil && st.DeltaCursor == nil:
		return nil, fmt.Errorf("neither snapshot_has_more nor delta_cursor is set")
	case st.SnapshotHasMore && st.SnapshotCursor != nil && st.DeltaCursor == nil:
		return nil, fmt.Errorf("it has a snapshot_cursor without delta_cursor (the snapshot's timestamp)")
	case !st.SnapshotHasMore && st.DeltaCursor == nil:
		return nil, fmt.Errorf("a finished snapshot (snapshot_has_more false) without delta_cursor")
	case !st.SnapshotHasMore && st.ResyncFrom != nil:
		return nil, fmt.Errorf("a finished snapshot with resync_from")
	case st.SnapshotHasMore && st.ReplayUntil != nil:
		return nil, fmt.Errorf("it has replay_until during a snapshot (it follows a finished re-sync snapshot)")
	case len(st.SnapshotRanges) > 0 && (!st.SnapshotHasMore || st.DeltaCursor == nil || st.SnapshotCursor != nil):
		return nil, fmt.Errorf("it has snapshot_ranges outside a snapshot in progress (they need snapshot_has_more, delta_cursor and no snapshot_cursor)")
	}
	return &st, nil
}

// checkCursorField checks a state's `cursor_field` (value v): null, or
// this source's cursor field.
func checkCursorField(v any) error {
	if v == nil {
		return nil
	}
	if a, ok := v.([]any); ok && len(a) == len(cursorField) {
		same := true
		for i, x := range a {
			same = same && x == cursorField[i]
		}
		if same {
			return nil
		}
	}
	want, _ := json.Marshal(cursorField)
	return wrongType("cursor_field", v, string(want)+" (this source's cursor)")
}

// optionalString is field k's value v as a string, nil for null.
func optionalString(k string, v any) (*string, error) {
	if v == nil {
		return nil, nil
	}
	s, ok := v.(string)
	if !ok {
		return nil, wrongType(k, v, "a string")
	}
	return &s, nil
}

// cursorList is field k's value v as a list of snapshot cursors (strings),
// nil for null.
func cursorList(k string, v any) ([]string, error) {
	if v == nil {
		return nil, nil
	}
	a, ok := v.([]any)
	if !ok {
		return nil, wrongType(k, v, "a list of snapshot cursors (strings)")
	}
	if len(a) == 0 {
		return nil, nil
	}
	out := make([]string, len(a))
	for i, x := range a {
		if out[i], ok = x.(string); !ok {
			return nil, wrongType(k, v, "a list of snapshot cursors (strings)")
		}
	}
	return out, nil
}

// optionalTimestamp is field k's value v as an engine timestamp (a
// non-negative integer), nil for null.
func optionalTimestamp(k string, v any) (*int64, error) {
	if v == nil {
		return nil, nil
	}
	n, ok := v.(json.Number)
	if !ok {
		return nil, wrongType(k, v, "an engine timestamp (a non-negative integer)")
	}
	ts, err := strconv.ParseInt(string(n), 10, 64)
	if err != nil || ts < 0 {
		return nil, wrongType(k, v, "an engine timestamp (a non-negative integer)")
	}
	return &ts, nil
}

func wrongType(k string, v any, want string) error {
	b, _ := json.Marshal(v)
	return fmt.Errorf("%s is %s, expected %s", k, brief(b), want)
}

// brief is b cut to a length fit for a message.
func brief(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "…"
	}
	return string(b)
}
