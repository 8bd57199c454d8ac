package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/shapelog/shapelog/engine/client"
	"github.com/shapelog/shapelog/internal/connectortest"
	"github.com/shapelog/shapelog/protocol"
)

// TestStatesNotOursAreConfigErrors: a state this source did not write —
// an unknown shape, wrong types, negative cursors, unknown fields, in
// whatever stream it names — fails the read before any record with one
// config_error that names the stream, says what is wrong and how to
// recover.
func TestStatesNotOursAreConfigErrors(t *testing.T) {
	f := newFixture(t, `CREATE TABLE r (id int PRIMARY KEY); INSERT INTO r VALUES (1);`)
	catalog, _ := f.catalog(protocol.SyncIncremental)
	for _, tc := range []struct {
		name, state    string
		stream, reason string
	}{
		{"legacy object of something else", `{"a":1}`, "a", "it is 1, not a JSON object"},
		{"negative delta_cursor", `[` + string(stateMessage("r", `{"snapshot_has_more":false,"delta_cursor":-5}`)) + `]`, "public.r", "delta_cursor is -5, expected an engine timestamp"},
		{"fractional delta_cursor", `[` + string(stateMessage("r", `{"snapshot_has_more":false,"delta_cursor":1.5}`)) + `]`, "public.r", "delta_cursor is 1.5"},
		{"negative resync_from", `[` + string(stateMessage("r", `{"snapshot_has_more":true,"resync_from":-1}`)) + `]`, "public.r", "resync_from is -1"},
		{"snapshot_has_more not a boolean", `[` + string(stateMessage("r", `{"snapshot_has_more":"yes","delta_cursor":5}`)) + `]`, "public.r", `snapshot_has_more is "yes", expected true or false`},
		{"snapshot_cursor not a string", `[` + string(stateMessage("r", `{"snapshot_has_more":true,"snapshot_cursor":7,"delta_cursor":5}`)) + `]`, "public.r", "snapshot_cursor is 7, expected a string"},
		{"unknown field", `[` + string(stateMessage("r", `{"snapshot_has_more":false,"delta_cursor":5,"lsn":"0/16B3748"}`)) + `]`, "public.r", `a field "lsn"`},
		{"not an object", `[` + string(stateMessage("r", `[1,2]`)) + `]`, "public.r", "not a JSON object"},
		{"another stream's foreign state", `[` + string(stateMessage("r", `{"snapshot_has_more":false,"delta_cursor":5}`)) + `,` +
			string(stateMessage("gone", `{"cursor":"2024-01-01"}`)) + `]`, "public.gone", `cursor is "2024-01-01", expected an engine timestamp`},
		{"legacy message of something else", `{"type":"LEGACY","data":{"r":{"lsn":5}}}`, "public.r", `a field "lsn"`},
		{"another cursor field", `[` + string(stateMessage("r", `{"cursor_field":["updated_at"],"cursor":"2024-01-01"}`)) + `]`, "public.r", `cursor_field is ["updated_at"], expected ["_ab_cdc_lsn"]`},
		{"cursor not a timestamp", `[` + string(stateMessage("r", `{"cursor_field":["_ab_cdc_lsn"],"cursor":"0/16B3748"}`)) + `]`, "public.r", `cursor is "0/16B3748", expected an engine timestamp`},
		{"snapshot_ranges not strings", `[` + string(stateMessage("r", `{"snapshot_has_more":true,"delta_cursor":5,"snapshot_ranges":[1]}`)) + `]`, "public.r", "snapshot_ranges is [1], expected a list of snapshot cursors"},
		{"snapshot_ranges of a finished snapshot", `[` + string(stateMessage("r", `{"snapshot_has_more":false,"delta_cursor":5,"snapshot_ranges":["{}"]}`)) + `]`, "public.r", "snapshot_ranges outside a snapshot in progress"},
		{"snapshot_ranges with snapshot_cursor", `[` + string(stateMessage("r", `{"snapshot_has_more":true,"delta_cursor":5,"snapshot_cursor":"{}","snapshot_ranges":["{}"]}`)) + `]`, "public.r", "snapshot_ranges outside a snapshot in progress"},
		{"cursor and delta_cursor differ", `[` + string(stateMessage("r", `{"snapshot_has_more":false,"delta_cursor":5,"cursor_field":["_ab_cdc_lsn"],"cursor":6}`)) + `]`, "public.r", "cursor (6) and delta_cursor (5) differ"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := f.run("read", "--config", f.config, "--catalog", catalog, "--state", connectortest.WriteJSON(t, "state.json", tc.state))
			errs := out.Errors()
			if out.Code == 0 || len(errs) != 1 {
				t.Fatalf("want a non-zero exit and one error:\n%s", out)
			}
			e := errs[0]
			if e.FailureType != protocol.FailureConfig || e.StreamDescriptor == nil || e.StreamDescriptor.String() != tc.stream ||
				!strings.Contains(e.Message, "stream "+tc.stream) || !strings.Contains(e.Message, tc.reason) || !strings.Contains(e.Message, "Reset the stream") {
				t.Errorf("want a config_error of stream %s saying %q and how to recover, got %s: %q (stream %v)", tc.stream, tc.reason, e.FailureType, e.Message, e.StreamDescriptor)
			}
			if n := len(out.OfType(protocol.TypeRecord)); n != 0 {
				t.Errorf("%d records before failing", n)
			}
		})
	}
}

// TestLegacyStatesStillRead: the states earlier versions of this source,
// Airbyte's Convex source and the platform's legacy format hold go on from
// their cursor.
func TestLegacyStatesStillRead(t *testing.T) {
	f := newFixture(t, `CREATE TABLE r (id int PRIMARY KEY, v text); INSERT INTO r VALUES (1, 'old');`)
	catalog, _ := f.catalog(protocol.SyncIncremental)
	first := f.read(catalog, nil)
	var st struct {
		DeltaCursor int64 `json:"delta_cursor"`
	}
	states := first.OfType(protocol.TypeState)
	if err := json.Unmarshal(states[len(states)-1].State.Stream.StreamState, &st); err != nil || st.DeltaCursor <= 0 {
		t.Fatalf("last state: %s (%v)", states[len(states)-1].State.Stream.StreamState, err)
	}
	f.exec(`INSERT INTO r VALUES (2, 'new')`)
	convex := fmt.Sprintf(`{"snapshot_cursor":null,"snapshot_has_more":false,"delta_cursor":%d}`, st.DeltaCursor)
	ours := fmt.Sprintf(`{"snapshot_cursor":null,"snapshot_has_more":false,"delta_cursor":%d,"stream_name":"r","stream_namespace":"public"}`, st.DeltaCursor)
	withCursor := fmt.Sprintf(`{"snapshot_cursor":null,"snapshot_has_more":false,"delta_cursor":%d,"stream_name":"r","stream_namespace":"public","cursor_field":["_ab_cdc_lsn"],"cursor":%[1]d}`, st.DeltaCursor)
	cursorOnly := fmt.Sprintf(`{"cursor_field":["_ab_cdc_lsn"],"cursor":%d}`, st.DeltaCursor)
	for name, state := range map[string]string{
		"Convex source's state in a STREAM message": `[` + string(stateMessage("r", convex)) + `]`,
		"legacy object":                              `{"r":` + convex + `}`,
		"LEGACY message":                             `{"type":"LEGACY","data":{"r":` + convex + `}}`,
		"GLOBAL message":                             `[{"type":"GLOBAL","global":{"stream_states":[{"stream_descriptor":{"name":"r","namespace":"public"},"stream_state":` + ours + `}]}}]`,
		"STREAM without namespace":                   `[{"type":"STREAM","stream":{"stream_descriptor":{"name":"r"},"stream_state":` + ours + `}}]`,
		"state with cursor_field and cursor":         `[` + string(stateMessage("r", withCursor)) + `]`,
		"cursor alone, as database sources write it": `[` + string(stateMessage("r", cursorOnly)) + `]`,
	} {
		out := f.run("read", "--config", f.config, "--catalog", catalog, "--state", connectortest.WriteJSON(t, "state.json", state))
		recs := out.Records(t)
		if out.Code != 0 || len(recs) != 1 || recs[0]["v"] != "new" {
			t.Errorf("%s: want exit 0 and the one change after the cursor:\n%s", name, out)
		}
	}
}

// TestStatesCarryTheCursorField: every STATE names the stream's cursor
// field and carries its value as database sources do ("cursor_field",
// "cursor"), an integer like the records' _ab_cdc_lsn, equal to
// delta_cursor and never behind a record already sent. Read with a state
// from the future (CAT's test_state_with_abnormally_large_values, whose
// newer versions look for the cursor field's value in the given and the
// emitted states and check its type against the stream's schema), the
// source sends no record and a STATE with that same cursor.
func TestStatesCarryTheCursorField(t *testing.T) {
	f := newFixture(t, `CREATE TABLE r (id int PRIMARY KEY); INSERT INTO r SELECT generate_series(1, 12);`,
		func(c map[string]any) { c["page_size"] = 5 })
	catalog, cat := f.catalog(protocol.SyncIncremental)
	var schema struct {
		Properties map[string]map[string]any `json:"properties"`
	}
	if err := json.Unmarshal(cat.Streams[0].JSONSchema, &schema); err != nil || schema.Properties[fieldLSN]["type"] != "integer" {
		t.Fatalf("the cursor's schema: %v (%v)", schema.Properties[fieldLSN], err)
	}
	first := f.read(catalog, nil)
	f.exec(`INSERT INTO r VALUES (13)`)
	second := f.read(catalog, lastStates(t, first))
	if n := len(second.Records(t)); n != 1 {
		t.Fatalf("second sync: %d records, want 1", n)
	}
	for i, out := range []*connectortest.Output{first, second} {
		var maxLSN int64
		for _, r := range out.Records(t) {
			n, err := r[fieldLSN].(json.Number).Int64()
			if err != nil {
				t.Fatalf("%s = %v", fieldLSN, r[fieldLSN])
			}
			maxLSN = max(maxLSN, n)
		}
		states := out.OfType(protocol.TypeState)
		for _, m := range states {
			cursor, delta := catCursorValues(t, m.State.Stream.StreamState)
			if len(cursor) != 1 || (cursor[0] != nil && (delta == nil || *cursor[0] != *delta)) {
				t.Errorf("sync %d: state %s: want one cursor value equal to delta_cursor", i+1, m.State.Stream.StreamState)
			}
		}
		last, _ := catCursorValues(t, states[len(states)-1].State.Stream.StreamState)
		if last[0] == nil || *last[0] < maxLSN {
			t.Errorf("sync %d: the last state's cursor %v is behind a record sent (%d)", i+1, last[0], maxLSN)
		}
	}

	const future = 4000000000000000000
	abnormal, err := os.ReadFile("integration_tests/abnormal_state.json")
	if err != nil {
		t.Fatal(err)
	}
	var given []struct {
		Stream struct {
			StreamState json.RawMessage `json:"stream_state"`
		} `json:"stream"`
	}
	if err := json.Unmarshal(abnormal, &given); err != nil || len(given) == 0 {
		t.Fatalf("integration_tests/abnormal_state.json: %v", err)
	}
	if v, _ := catCursorValues(t, given[0].Stream.StreamState); len(v) != 1 || v[0] == nil || *v[0] != future {
		t.Fatalf("integration_tests/abnormal_state.json: cursor values %v, want [%d]", v, int64(future))
	}
	state := strings.ReplaceAll(string(abnormal), `"users"`, `"r"`)
	out := f.run("read", "--config", f.config, "--catalog", catalog, "--state", connectortest.WriteJSON(t, "state.json", state))
	states := out.OfType(protocol.TypeState)
	if out.Code != 0 || len(out.OfType(protocol.TypeRecord)) != 0 || len(states) == 0 {
		t.Fatalf("future state: want exit 0, no record and a state:\n%s", out)
	}
	for _, m := range states {
		if v, _ := catCursorValues(t, m.State.Stream.StreamState); len(v) != 1 || v[0] == nil || *v[0] != future {
			t.Errorf("state after a future state: %s", m.State.Stream.StreamState)
		}
	}
}

// catCursorValues finds the cursor's values in a stream_state blob as CAT
// does (the values of keys named like the cursor field, and of `cursor` in
// an object that has `cursor_field`), each as an integer (nil for null;
// anything else fails the test, as CAT's type check would), and returns
// delta_cursor too.
func catCursorValues(t *testing.T, blob json.RawMessage) (values []*int64, delta *int64) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(blob))
	dec.UseNumber()
	var st map[string]any
	if err := dec.Decode(&st); err != nil {
		t.Fatalf("state %s: %v", blob, err)
	}
	asInt := func(v any) *int64 {
		if v == nil {
			return nil
		}
		n, ok := v.(json.Number)
		i, err := n.Int64()
		if !ok || err != nil {
			t.Fatalf("state %s: cursor value %v is not an integer", blob, v)
		}
		return &i
	}
	for k, v := range st {
		_, hasField := st["cursor_field"]
		if k == fieldLSN || (k == "cursor" && hasField) {
			values = append(values, asInt(v))
		}
	}
	return values, asInt(st["delta_cursor"])
}

// TestStateSnapshotRanges: a snapshot read as key ranges saves the
// unfinished ranges' cursors and reads them back; finishing the snapshot
// drops them, and after a re-sync hands the changes the old position.
func TestStateSnapshotRanges(t *testing.T) {
	s := newStream("t", &engineTableSchema{SchemaName: "public", TableName: "t"})
	ts := int64(200)
	st := &streamState{SnapshotHasMore: true, DeltaCursor: &ts, SnapshotRanges: []string{`{"v":2,"until":["5"]}`, `{"v":2,"key":["5"]}`}}
	blob, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	in, err := loadStates(connectortest.WriteJSON(t, "state.json", "["+string(stateMessage("t", string(blob)))+"]"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := in.forStream(s)
	if err != nil || !sameState(got, st) {
		t.Fatalf("loaded %+v (%v) from %s", got, err, blob)
	}
	if sameState(got, &streamState{SnapshotHasMore: true, DeltaCursor: &ts, SnapshotRanges: st.SnapshotRanges[:1]}) {
		t.Error("sameState ignores snapshot_ranges")
	}
	got.finishSnapshot(ts)
	if got.SnapshotHasMore || got.SnapshotRanges != nil || *got.DeltaCursor != ts {
		t.Errorf("finished: %+v", got)
	}
	from := int64(100)
	resync := &streamState{SnapshotHasMore: true, DeltaCursor: &ts, ResyncFrom: &from, SnapshotRanges: st.SnapshotRanges}
	resync.finishSnapshot(ts)
	if *resync.DeltaCursor != from || resync.ResyncFrom != nil || *resync.ReplayUntil != ts {
		t.Errorf("finished re-sync: %+v", resync)
	}
}

// TestRangedStateResumesOverStdio: a state saved while a snapshot was read
// as key ranges (in speed mode) resumes over stdio: the ranges are read one
// after the other, every row once, and the last STATE is the finished
// snapshot; an incremental sync then reads the changes after its ts.
func TestRangedStateResumesOverStdio(t *testing.T) {
	f := newFixture(t, `CREATE TABLE r (id int PRIMARY KEY, v text); INSERT INTO r SELECT g, 'v' || g FROM generate_series(1, 30000) g;`,
		func(c map[string]any) { c["page_size"] = 1000 })
	catalog, _ := f.catalog(protocol.SyncIncremental)
	c, err := client.New(f.engine.URL(), connectortest.AccessKey, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ranges, err := c.ListSnapshotRanges(context.Background(), client.SnapshotRangesRequest{TableName: "r", Ranges: 3})
	if err != nil || len(ranges.Cursors) != 3 {
		t.Fatalf("ranges: %+v, %v", ranges, err)
	}
	f.exec(`DELETE FROM r WHERE id = 1; UPDATE r SET v = 'changed' WHERE id = 30000`)
	cursors, _ := json.Marshal(ranges.Cursors)
	state := stateMessage("r", fmt.Sprintf(`{"snapshot_has_more":true,"delta_cursor":%d,"snapshot_ranges":%s}`, ranges.Snapshot, cursors))
	out := f.read(catalog, []json.RawMessage{state})
	snap := json.Number(fmt.Sprint(ranges.Snapshot))
	seen := map[string]int{}
	var changes []string
	for _, rec := range out.Records(t) {
		id := fmt.Sprint(rec["id"])
		if rec["_ab_cdc_lsn"] != snap {
			changes = append(changes, id)
			continue
		}
		if seen[id]++; seen[id] > 1 {
			t.Fatalf("row %s is in the snapshot twice", id)
		}
		if want := "v" + id; rec["v"] != want {
			t.Errorf("row %s in the snapshot is %v, want %s (its value at the snapshot)", id, rec["v"], want)
		}
	}
	if len(seen) != 30000 {
		t.Errorf("%d distinct rows in the snapshot, want 30000", len(seen))
	}
	if slices.Sort(changes); !slices.Equal(changes, []string{"1", "30000"}) {
		t.Errorf("changes after the snapshot of rows %v, want 1 and 30000", changes)
	}
	last := lastStates(t, out)
	var st streamState
	var msg protocol.State
	if err := json.Unmarshal(last[0], &msg); err != nil || json.Unmarshal(msg.Stream.StreamState, &st) != nil {
		t.Fatalf("last state %s", last[0])
	}
	if st.SnapshotHasMore || st.SnapshotRanges != nil || *st.DeltaCursor <= ranges.Snapshot {
		t.Errorf("last state %s: want the snapshot finished and the changes after it read", msg.Stream.StreamState)
	}
}

// TestSavedReplayStillSkipsWhatExpired: a re-sync whose changes are read
// by a later sync (its snapshot was read as ranges) saves how far the
// replay of the old position goes; that sync, finding the old position
// expired, moves to the oldest change the engine has instead of starting
// the snapshot over again. The replay's end is dropped once passed; an
// empty range list is no ranges.
func TestSavedReplayStillSkipsWhatExpired(t *testing.T) {
	s := newStream("t", &engineTableSchema{SchemaName: "public", TableName: "t"})
	load := func(blob string) *streamState {
		t.Helper()
		in, err := loadStates(connectortest.WriteJSON(t, "state.json", "["+string(stateMessage("t", blob))+"]"))
		if err != nil {
			t.Fatal(err)
		}
		st, err := in.forStream(s)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	from, snap := int64(100), int64(200)
	resync := &streamState{SnapshotHasMore: true, ResyncFrom: &from}
	resync.finishSnapshot(snap)
	blob, _ := json.Marshal(resync)
	st := load(string(blob))
	if st.ReplayUntil == nil || *st.ReplayUntil != snap || *st.DeltaCursor != from {
		t.Fatalf("saved %s, loaded %+v", blob, st)
	}
	oldest := int64(150)
	sr := &streamReader{reader: &reader{env: &protocol.Env{Log: zerolog.Nop()}}, s: s, state: st}
	if !sr.skipExpiredReplay(&client.Error{Code: "InvalidWindowToReadDocuments", OldestCursor: &oldest}) || *st.DeltaCursor != oldest {
		t.Errorf("the replay did not move to the oldest change: %+v", st)
	}
	if st := load(`{"snapshot_has_more":true,"snapshot_ranges":[]}`); st.SnapshotRanges != nil {
		t.Errorf("empty snapshot_ranges loaded as %#v", st.SnapshotRanges)
	}
	in, err := loadStates(connectortest.WriteJSON(t, "state.json", "["+string(stateMessage("t", `{"snapshot_has_more":true,"delta_cursor":5,"snapshot_cursor":"{}","replay_until":9}`))+"]"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.forStream(s); err == nil || !strings.Contains(err.Error(), "replay_until during a snapshot") {
		t.Errorf("replay_until during a snapshot: %v", err)
	}
}
