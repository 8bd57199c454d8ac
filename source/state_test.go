package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

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
			string(stateMessage("gone", `{"cursor":"2024-01-01"}`)) + `]`, "public.gone", `a field "cursor"`},
		{"legacy message of something else", `{"type":"LEGACY","data":{"r":{"lsn":5}}}`, "public.r", `a field "lsn"`},
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
	for name, state := range map[string]string{
		"Convex source's state in a STREAM message": `[` + string(stateMessage("r", convex)) + `]`,
		"legacy object":            `{"r":` + convex + `}`,
		"LEGACY message":           `{"type":"LEGACY","data":{"r":` + convex + `}}`,
		"GLOBAL message":           `[{"type":"GLOBAL","global":{"stream_states":[{"stream_descriptor":{"name":"r","namespace":"public"},"stream_state":` + ours + `}]}}]`,
		"STREAM without namespace": `[{"type":"STREAM","stream":{"stream_descriptor":{"name":"r"},"stream_state":` + ours + `}}]`,
	} {
		out := f.run("read", "--config", f.config, "--catalog", catalog, "--state", connectortest.WriteJSON(t, "state.json", state))
		recs := out.Records(t)
		if out.Code != 0 || len(recs) != 1 || recs[0]["v"] != "new" {
			t.Errorf("%s: want exit 0 and the one change after the cursor:\n%s", name, out)
		}
	}
}
