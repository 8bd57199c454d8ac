package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/shapelog/shapelog/internal/connectortest"
	"github.com/shapelog/shapelog/protocol"
)

// bogusSnapshotCursor parses as a list_snapshot cursor but names a snapshot
// the engine does not hold: with a `snapshot`, the engine answers
// SnapshotTooOld.
const bogusSnapshotCursor = `{"snapshot":"0000000000000000","table":0,"after":""}`

// lostSnapshotState is a state of a snapshot the engine no longer has,
// taken at ts.
func lostSnapshotState(ts int64) string {
	return fmt.Sprintf(`{"snapshot_has_more":true,"snapshot_cursor":%q,"delta_cursor":%d}`, bogusSnapshotCursor, ts)
}

// expiredCursorState is a state whose cursor is below the retention
// horizon of a fresh engine: document_deltas answers
// InvalidWindowToReadDocuments.
const expiredCursorState = `{"snapshot_has_more":false,"delta_cursor":1}`

// stateMessage is a STREAM state message of public.<name> with blob.
func stateMessage(name, blob string) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"type":"STREAM","stream":{"stream_descriptor":{"name":%q,"namespace":"public"},"stream_state":%s}}`, name, blob))
}

// setInvalidCursorBehavior rewrites the config with the setting.
func (f *fixture) setInvalidCursorBehavior(v string) {
	f.configMods = append(f.configMods, func(c map[string]any) { c["invalid_cursor_behavior"] = v })
	f.writeConfig()
}

// readFailure runs read and asserts that it fails with a config_error of
// stream (e.g. "public.r") that says how to recover, and that the stream
// ends INCOMPLETE.
func (f *fixture) readFailure(catalog string, state []json.RawMessage, stream string) *connectortest.Output {
	f.t.Helper()
	args := []string{"read", "--config", f.config, "--catalog", catalog}
	if state != nil {
		args = append(args, "--state", connectortest.WriteJSON(f.t, "state.json", stateFile(state)))
	}
	out := f.run(args...)
	var found bool
	for _, e := range out.Errors() {
		if e.StreamDescriptor != nil && e.StreamDescriptor.String() == stream {
			found = e.FailureType == protocol.FailureConfig && strings.Contains(e.Message, "Stream "+stream) &&
				strings.Contains(e.Message, "--retention") && strings.Contains(e.Message, "efresh the stream")
		}
	}
	if out.Code == 0 || !found {
		f.t.Fatalf("want a non-zero exit and a config_error of stream %s saying how to recover:\n%s", stream, out)
	}
	if got := statuses(out)[stream]; !slices.Equal(got, []string{"STARTED", "RUNNING", "INCOMPLETE"}) {
		f.t.Errorf("stream %s statuses %v, want STARTED, RUNNING, INCOMPLETE", stream, got)
	}
	checkCounts(f.t, out)
	return out
}

// statuses are the STREAM_STATUS sequences by stream.
func statuses(out *connectortest.Output) map[string][]string {
	seq := map[string][]string{}
	for _, m := range out.OfType(protocol.TypeTrace) {
		if m.Trace.StreamStatus != nil {
			k := m.Trace.StreamStatus.StreamDescriptor.String()
			seq[k] = append(seq[k], m.Trace.StreamStatus.Status)
		}
	}
	return seq
}

// logText is every LOG message, one a line.
func logText(out *connectortest.Output) string {
	var b strings.Builder
	for _, m := range out.OfType(protocol.TypeLog) {
		b.WriteString(m.Log.Level + " " + m.Log.Message + "\n")
	}
	return b.String()
}

// streamStates are the stream_state blobs of the STATE messages of stream
// name, in order.
func streamStates(t *testing.T, out *connectortest.Output, name string) []map[string]any {
	t.Helper()
	var res []map[string]any
	for _, m := range out.OfType(protocol.TypeState) {
		if m.State.Stream.StreamDescriptor.Name != name {
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(m.State.Stream.StreamState))
		dec.UseNumber()
		var st map[string]any
		if err := dec.Decode(&st); err != nil {
			t.Fatal(err)
		}
		res = append(res, st)
	}
	if len(res) == 0 {
		t.Fatalf("no STATE of stream %s", name)
	}
	return res
}

// int64Field is st[key] as an int64, and whether it is one.
func int64Field(st map[string]any, key string) (int64, bool) {
	n, ok := st[key].(json.Number)
	if !ok {
		return 0, false
	}
	v, err := n.Int64()
	return v, err == nil
}

// records are the records of stream name, decoded.
func records(t *testing.T, out *connectortest.Output, name string) []map[string]any {
	t.Helper()
	var res []map[string]any
	for _, m := range out.OfType(protocol.TypeRecord) {
		if m.Record.Stream != name {
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(m.Record.Data))
		dec.UseNumber()
		var d map[string]any
		if err := dec.Decode(&d); err != nil {
			t.Fatal(err)
		}
		res = append(res, d)
	}
	return res
}

// checkFinalState asserts the last STATE of stream name finished its
// snapshot, has no resync_from and a delta_cursor not before from, and
// returns that cursor.
func checkFinalState(t *testing.T, out *connectortest.Output, name string, from int64) int64 {
	t.Helper()
	states := streamStates(t, out, name)
	last := states[len(states)-1]
	cursor, ok := int64Field(last, "delta_cursor")
	if _, has := last["resync_from"]; has || last["snapshot_has_more"] != false || !ok || cursor < from {
		t.Errorf("final state %v: want a finished snapshot, delta_cursor ≥ %d and no resync_from", last, from)
	}
	return cursor
}

// proxy serves the engine at target through wrap and returns the URL.
func proxy(t *testing.T, target string, wrap func(next http.Handler) http.Handler) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(wrap(httputil.NewSingleHostReverseProxy(u)))
	t.Cleanup(srv.Close)
	return srv.URL
}

// By default, a stream whose snapshot or changes the engine no longer has
// fails with a config_error saying how to recover; the other streams go on.
func TestLostPositionFailsSync(t *testing.T) {
	f := newFixture(t, `CREATE TABLE r (id int PRIMARY KEY); INSERT INTO r SELECT generate_series(1, 20);
		CREATE TABLE s (id int PRIMARY KEY); INSERT INTO s SELECT generate_series(1, 5);`)
	// A lost snapshot is SnapshotTooOld, or InvalidListSnapshotCursor for an
	// engine that does not take the cursor any more.
	lostSnapshot := []string{"SnapshotTooOld", "InvalidListSnapshotCursor"}
	for _, tc := range []struct {
		mode, blob string
		codes      []string
		step       string // where it failed, in the internal message
	}{
		{protocol.SyncIncremental, lostSnapshotState(1), lostSnapshot, "reading a snapshot page of r: "},
		{protocol.SyncIncremental, expiredCursorState, []string{"InvalidWindowToReadDocuments"}, "reading the deltas of r after ts 1: "},
		{protocol.SyncFullRefresh, lostSnapshotState(1), lostSnapshot, "reading a snapshot page of r: "},
	} {
		catalog, _ := f.catalog(tc.mode)
		out := f.readFailure(catalog, []json.RawMessage{stateMessage("r", tc.blob)}, "public.r")
		msg := out.Errors()[0].Message
		if !slices.ContainsFunc(tc.codes, func(c string) bool { return strings.Contains(msg, "("+c+")") }) || !strings.Contains(msg, "invalid_cursor_behavior") {
			t.Errorf("%s %s: error %q should name the engine's code (one of %v) and the setting", tc.mode, tc.blob, msg, tc.codes)
		}
		if internal := out.Errors()[0].InternalMessage; !strings.Contains(internal, tc.step) {
			t.Errorf("%s %s: internal message %q should say where it failed (%q)", tc.mode, tc.blob, internal, tc.step)
		}
		if n := len(records(t, out, "r")); n != 0 {
			t.Errorf("%s %s: %d records of r", tc.mode, tc.blob, n)
		}
		if n, st := len(records(t, out, "s")), statuses(out)["public.s"]; n != 5 || !slices.Equal(st, []string{"STARTED", "RUNNING", "COMPLETE"}) {
			t.Errorf("%s %s: the other stream sent %d records with statuses %v; want 5, complete", tc.mode, tc.blob, n, st)
		}
	}
}

// With "Re-sync data", a lost snapshot starts over, and the changes are then
// read from the lost snapshot's timestamp: a row deleted since then, which
// the destination may already have, is sent as a delete. A run interrupted
// during the re-sync snapshot still replays from there. A full refresh
// just starts over. The snapshot is lost for real: a table without a
// primary key is read from a snapshot held open in PostgreSQL, which an
// engine restart loses while the engine's log keeps the changes after it.
func TestResyncAfterLostSnapshotReplaysDeletes(t *testing.T) {
	f := newFixture(t, `CREATE TABLE items (id int, name text);
		INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 20) g;`,
		func(c map[string]any) { c["page_size"] = 5 })
	f.setInvalidCursorBehavior("Re-sync data")
	catalog, _ := f.catalog(protocol.SyncIncremental)
	first := f.read(catalog, nil)
	midState := first.OfType(protocol.TypeState)[1].State
	mid, _ := json.Marshal(midState)
	old, ok := int64Field(streamStates(t, first, "items")[1], "delta_cursor")
	if !ok || !strings.Contains(string(midState.Stream.StreamState), `"snapshot_has_more":true`) {
		t.Fatalf("mid-snapshot state: %s", mid)
	}
	f.exec(`DELETE FROM items WHERE id = 7; UPDATE items SET name = 'changed' WHERE id = 3; INSERT INTO items VALUES (21, 'new')`)
	f.restartEngine()

	check := func(what string, out *connectortest.Output) {
		t.Helper()
		recs := records(t, out, "items")
		if len(recs) < 23 {
			t.Fatalf("%s: %d records, want 20 of the new snapshot and the changes:\n%s", what, len(recs), out)
		}
		for _, r := range recs[:20] {
			if r["id"] == json.Number("7") || r["_ab_cdc_deleted_at"] != nil {
				t.Errorf("%s: the new snapshot has %v", what, r)
			}
		}
		var got []string
		for _, r := range recs[20:] {
			got = append(got, fmt.Sprintf("%v:%v:deleted=%v", r["id"], r["name"], r["_ab_cdc_deleted_at"] != nil))
		}
		if !slices.Contains(got, "7:n7:deleted=true") || !slices.Contains(got, "21:new:deleted=false") {
			t.Errorf("%s: replayed changes %v, want the delete of 7 among them", what, got)
		}
		checkFinalState(t, out, "items", old)
	}

	out := f.read(catalog, []json.RawMessage{mid})
	check("lost snapshot", out)
	if !strings.Contains(logText(out), "starting a new snapshot") {
		t.Errorf("no warning:\n%s", logText(out))
	}
	// The re-sync snapshot's checkpoints carry the replay start.
	var found bool
	for _, st := range streamStates(t, out, "items") {
		if from, ok := int64Field(st, "resync_from"); ok && from == old && st["snapshot_has_more"] == true {
			found = true
		}
	}
	if !found {
		t.Errorf("no snapshot checkpoint with resync_from %d", old)
	}
	// A run stopped before the re-sync snapshot's first page still replays.
	out = f.read(catalog, []json.RawMessage{stateMessage("items", fmt.Sprintf(`{"snapshot_has_more":true,"resync_from":%d}`, old))})
	check("interrupted re-sync", out)
	next := f.read(catalog, lastStates(t, out))
	if n := len(next.Records(t)); n != 0 {
		t.Errorf("after the re-sync: %d records, want 0", n)
	}

	catalog, _ = f.catalog(protocol.SyncFullRefresh)
	out = f.read(catalog, []json.RawMessage{stateMessage("items", lostSnapshotState(1))})
	if recs := records(t, out, "items"); len(recs) != 20 {
		t.Errorf("full refresh re-sync: %d records, want 20", len(recs))
	}
	for _, st := range streamStates(t, out, "items") {
		if _, has := st["resync_from"]; has {
			t.Errorf("full refresh state with resync_from: %v", st)
		}
	}
}

// With "Re-sync data", an expired cursor starts a new snapshot and replays
// from the oldest change the engine still has (its `oldestCursor`), with a
// warning that deletes before it cannot be recovered; an engine that does
// not name it is read from the new snapshot. The proxy adds `oldestCursor`
// where the engine does not (yet) send it, so the replay path is tested
// either way.
func TestResyncAfterExpiredCursor(t *testing.T) {
	f := newFixture(t, `CREATE TABLE items (id int PRIMARY KEY, name text);
		INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 20) g;`,
		func(c map[string]any) { c["page_size"] = 5 })
	f.setInvalidCursorBehavior("Re-sync data")
	catalog, _ := f.catalog(protocol.SyncIncremental)

	// The engine as it is, with or without `oldestCursor`.
	out := f.read(catalog, []json.RawMessage{stateMessage("items", expiredCursorState)})
	if n := len(records(t, out, "items")); n != 20 {
		t.Errorf("%d records, want the 20 of the new snapshot", n)
	}
	if logs := logText(out); !strings.Contains(logs, "oldest it still has") && !strings.Contains(logs, "does not say which it still has") {
		t.Errorf("no warning about unrecoverable deletes:\n%s", logs)
	}
	checkFinalState(t, out, "items", 2)

	first := f.read(catalog, nil)
	states := streamStates(t, first, "items")
	kept, ok := int64Field(states[len(states)-1], "delta_cursor")
	if !ok {
		t.Fatalf("state: %v", states[len(states)-1])
	}
	f.exec(`DELETE FROM items WHERE id = 7`)
	var injected atomic.Bool
	proxyURL := proxy(t, f.engine.URL(), func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, r)
			body := rec.Body.Bytes()
			var e map[string]any
			if r.URL.Path == "/api/document_deltas" && rec.Code == http.StatusBadRequest && json.Unmarshal(body, &e) == nil &&
				e["code"] == "InvalidWindowToReadDocuments" && e["oldestCursor"] == nil {
				e["oldestCursor"] = kept
				body, _ = json.Marshal(e)
				injected.Store(true)
			}
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.WriteHeader(rec.Code)
			_, _ = w.Write(body)
		})
	})
	f.configMods = append(f.configMods, func(c map[string]any) { c["deployment_url"] = proxyURL })
	f.writeConfig()
	out = f.read(catalog, []json.RawMessage{stateMessage("items", expiredCursorState)})
	recs := records(t, out, "items")
	if len(recs) != 20 || recs[19]["id"] != json.Number("7") || recs[19]["_ab_cdc_deleted_at"] == nil {
		t.Fatalf("%d records; want the 19 rows of the new snapshot, then the delete of 7:\n%s", len(recs), out)
	}
	if logs := logText(out); !strings.Contains(logs, "oldest it still has") || !strings.Contains(logs, "cannot be recovered") {
		t.Errorf("no warning about unrecoverable deletes:\n%s", logs)
	}
	checkFinalState(t, out, "items", kept)
	t.Logf("oldestCursor added by the test's proxy: %v", injected.Load())
}

// A stream re-syncs at most maxResyncs times in one run, then fails.
func TestResyncIsBounded(t *testing.T) {
	f := newFixture(t, `CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items SELECT generate_series(1, 20);`,
		func(c map[string]any) { c["page_size"] = 5 })
	f.setInvalidCursorBehavior("Re-sync data")
	// Every snapshot is lost after its first page.
	proxyURL := proxy(t, f.engine.URL(), func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/api/list_snapshot" && r.URL.Query().Has("cursor") {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusBadRequest)
				_, _ = w.Write([]byte(`{"code":"SnapshotTooOld","message":"gone"}`))
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	f.configMods = append(f.configMods, func(c map[string]any) { c["deployment_url"] = proxyURL })
	f.writeConfig()
	catalog, _ := f.catalog(protocol.SyncIncremental)
	out := f.readFailure(catalog, nil, "public.items")
	if errs := out.Errors(); !strings.Contains(errs[0].Message, fmt.Sprintf("after %d re-syncs", maxResyncs)) {
		t.Errorf("error %q", errs[0].Message)
	}
	if n, want := len(records(t, out, "items")), 5*(maxResyncs+1); n != want {
		t.Errorf("%d records, want %d (a first page per snapshot)", n, want)
	}
	if n := strings.Count(logText(out), "starting a new snapshot"); n != maxResyncs {
		t.Errorf("%d re-sync warnings, want %d", n, maxResyncs)
	}
}

// resync_from survives a state round trip, is left out when unset, and is
// refused with a finished snapshot; resyncState keeps the oldest position.
func TestStateResyncFrom(t *testing.T) {
	s := newStream("t", &engineTableSchema{SchemaName: "public", TableName: "t"})
	ts, from := int64(200), int64(100)
	cur := `{"snapshot":"x","table":0,"after":""}`
	blob, err := json.Marshal(&streamState{SnapshotCursor: &cur, SnapshotHasMore: true, DeltaCursor: &ts, ResyncFrom: &from})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"snapshot_cursor":"{\"snapshot\":\"x\",\"table\":0,\"after\":\"\"}","snapshot_has_more":true,"delta_cursor":200,"resync_from":100,"cursor_field":["_ab_cdc_lsn"],"cursor":200}`; string(blob) != want {
		t.Fatalf("state %s\nwant %s", blob, want)
	}
	load := func(blob string) (*streamState, error) {
		t.Helper()
		in, err := loadStates(connectortest.WriteJSON(t, "state.json", "["+string(stateMessage("t", blob))+"]"))
		if err != nil {
			t.Fatal(err)
		}
		return in.forStream(s)
	}
	st, err := load(string(blob))
	if err != nil || st.ResyncFrom == nil || *st.ResyncFrom != 100 || *st.DeltaCursor != 200 || *st.SnapshotCursor != cur {
		t.Fatalf("loaded %+v, %v", st, err)
	}
	if blob, _ := json.Marshal(freshState(s)); strings.Contains(string(blob), "resync_from") {
		t.Errorf("unset resync_from is written: %s", blob)
	}
	if _, err := load(`{"snapshot_has_more":false,"delta_cursor":5,"resync_from":4}`); err == nil || !strings.Contains(err.Error(), "resync_from") {
		t.Errorf("a finished snapshot with resync_from: %v", err)
	}
	if !sameState(st, st) || sameState(st, &streamState{SnapshotCursor: &cur, SnapshotHasMore: true, DeltaCursor: &ts}) {
		t.Error("sameState ignores resync_from")
	}

	// The old position: the replay start of a re-sync in progress, else the
	// cursor; none in full refresh.
	for _, tc := range []struct {
		old  *streamState
		mode string
		want *int64
	}{
		{st, protocol.SyncIncremental, &from},
		{&streamState{DeltaCursor: &ts}, protocol.SyncIncremental, &ts},
		{&streamState{SnapshotHasMore: true}, protocol.SyncIncremental, nil},
		{st, protocol.SyncFullRefresh, nil},
	} {
		got := resyncState(s, tc.old, tc.mode)
		if !got.SnapshotHasMore || got.SnapshotCursor != nil || got.DeltaCursor != nil ||
			(got.ResyncFrom == nil) != (tc.want == nil) || (tc.want != nil && *got.ResyncFrom != *tc.want) {
			t.Errorf("resyncState(%+v, %s) = %+v, want resync_from %v", tc.old, tc.mode, got, tc.want)
		}
	}
}

// TestStateFromBeforeDurableSnapshotsResumes: a state saved in the middle
// of a snapshot by an earlier version (its cursor names a held session the
// engine lost with its upgrade) resumes under the default "Fail sync": the
// table is read again from its start at the state's snapshot ts, and the
// deltas from that ts carry a delete made since.
func TestStateFromBeforeDurableSnapshotsResumes(t *testing.T) {
	f := newFixture(t, `CREATE TABLE r (id int PRIMARY KEY); INSERT INTO r SELECT generate_series(1, 50);`,
		func(c map[string]any) { c["page_size"] = 10 })
	catalog, _ := f.catalog(protocol.SyncIncremental)
	var first struct {
		DeltaCursor int64 `json:"delta_cursor"`
	}
	states := f.read(catalog, nil).OfType(protocol.TypeState)
	if err := json.Unmarshal(states[0].State.Stream.StreamState, &first); err != nil || first.DeltaCursor == 0 {
		t.Fatalf("first state: %s (%v)", states[0].State.Stream.StreamState, err)
	}
	f.exec(`DELETE FROM r WHERE id = 7`)
	old := fmt.Sprintf(`{"snapshot_has_more":true,"snapshot_cursor":%q,"delta_cursor":%d}`, `{"snapshot":"3f2a9c0d1b7e4a55","table":0,"after":"(0,20)"}`, first.DeltaCursor)
	recs := f.read(catalog, []json.RawMessage{stateMessage("r", old)}).Records(t)
	ids := map[string]int{}
	deleted := false
	for _, r := range recs {
		ids[fmt.Sprint(r["id"])]++
		if r["_ab_cdc_deleted_at"] != nil && fmt.Sprint(r["id"]) == "7" {
			deleted = true
		}
	}
	if len(ids) != 50 || !deleted {
		t.Fatalf("resumed old state: %d distinct ids (want the 50 at the snapshot's ts), delete of 7 delivered: %v", len(ids), deleted)
	}
}
