package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shapelog/shapelog/engine"
	"github.com/shapelog/shapelog/engine/catalog"
	"github.com/shapelog/shapelog/internal/connectortest"
	"github.com/shapelog/shapelog/internal/pgtest"
	"github.com/shapelog/shapelog/protocol"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// fixture is a database with an engine and the built source.
type fixture struct {
	t      *testing.T
	dbURL  string
	bin    string
	engine *engine.Engine
	config string

	storage    string
	configMods []func(map[string]any)
}

func newFixture(t *testing.T, setup string, configMods ...func(map[string]any)) *fixture {
	t.Helper()
	f := &fixture{t: t, dbURL: pgtest.NewDatabase(t), bin: connectortest.Binary(t, "source")}
	if setup != "" {
		connectortest.Exec(t, connectortest.Connect(t, f.dbURL), setup)
	}
	f.storage = t.TempDir()
	f.engine = connectortest.StartEngine(t, f.dbURL, func(c *engine.Config) {
		c.StorageDir = f.storage
		c.Filter = catalog.Filter{Schemas: []string{"public", "other"}}
	})
	f.configMods = configMods
	f.writeConfig()
	return f
}

// exec runs SQL and waits until the engine has the changes.
func (f *fixture) exec(sql string) {
	f.t.Helper()
	conn := connectortest.Connect(f.t, f.dbURL)
	connectortest.Exec(f.t, conn, sql)
	connectortest.CatchUp(f.t, f.engine, conn)
}

// restartEngine stops the engine and starts a new one on the same log.
func (f *fixture) restartEngine() {
	f.t.Helper()
	f.engine.Close(5 * time.Second)
	f.engine = connectortest.StartEngine(f.t, f.dbURL, func(c *engine.Config) { c.StorageDir = f.storage })
	f.writeConfig()
}

func (f *fixture) writeConfig() {
	cfg := map[string]any{"deployment_url": f.engine.URL(), "access_key": connectortest.AccessKey}
	for _, m := range f.configMods {
		m(cfg)
	}
	f.config = connectortest.WriteJSON(f.t, "config.json", cfg)
}

func (f *fixture) run(args ...string) *connectortest.Output {
	f.t.Helper()
	return connectortest.Run(f.t, f.bin, nil, args...)
}

// catalog discovers and configures every stream in mode.
func (f *fixture) catalog(mode string) (string, *protocol.Catalog) {
	f.t.Helper()
	out := f.run("discover", "--config", f.config)
	cats := out.OfType(protocol.TypeCatalog)
	if out.Code != 0 || len(cats) != 1 {
		f.t.Fatalf("discover:\n%s", out)
	}
	var cc protocol.ConfiguredCatalog
	for _, s := range cats[0].Catalog.Streams {
		cc.Streams = append(cc.Streams, protocol.ConfiguredStream{Stream: s, SyncMode: mode, DestinationSyncMode: "append"})
	}
	return connectortest.WriteJSON(f.t, "catalog.json", cc), cats[0].Catalog
}

// read runs read and fails the test unless it succeeds.
func (f *fixture) read(catalog string, state []json.RawMessage) *connectortest.Output {
	f.t.Helper()
	args := []string{"read", "--config", f.config, "--catalog", catalog}
	if state != nil {
		args = append(args, "--state", connectortest.WriteJSON(f.t, "state.json", stateFile(state)))
	}
	out := f.run(args...)
	if out.Code != 0 {
		f.t.Fatalf("read failed:\n%s", out)
	}
	checkStatuses(f.t, out)
	checkCounts(f.t, out)
	return out
}

// stateFile is the --state file Airbyte passes: the last STATE per stream.
func stateFile(states []json.RawMessage) string {
	return "[" + string(joinRaw(states)) + "]"
}

func joinRaw(rs []json.RawMessage) []byte {
	var b []byte
	for i, r := range rs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, r...)
	}
	return b
}

// lastStates returns the last STATE message of each stream.
func lastStates(t *testing.T, out *connectortest.Output) []json.RawMessage {
	t.Helper()
	last := map[string]json.RawMessage{}
	var order []string
	for _, m := range out.OfType(protocol.TypeState) {
		k := m.State.Stream.StreamDescriptor.String()
		if _, ok := last[k]; !ok {
			order = append(order, k)
		}
		b, _ := json.Marshal(m.State)
		last[k] = b
	}
	var res []json.RawMessage
	for _, k := range order {
		res = append(res, last[k])
	}
	return res
}

// checkStatuses asserts STARTED, RUNNING, then COMPLETE for every stream
// with records or states.
func checkStatuses(t *testing.T, out *connectortest.Output) {
	t.Helper()
	seq := map[string][]string{}
	for _, m := range out.OfType(protocol.TypeTrace) {
		if m.Trace.StreamStatus != nil {
			k := m.Trace.StreamStatus.StreamDescriptor.String()
			seq[k] = append(seq[k], m.Trace.StreamStatus.Status)
		}
	}
	for k, s := range seq {
		if !slices.Equal(s, []string{"STARTED", "RUNNING", "COMPLETE"}) {
			t.Errorf("stream %s statuses %v", k, s)
		}
	}
	for _, m := range out.OfType(protocol.TypeState) {
		if m.State.Type != "STREAM" || m.State.SourceStats == nil {
			t.Errorf("state without STREAM type or sourceStats: %+v", m.State)
		}
	}
}

// checkCounts asserts each STATE counts the records of its stream since the
// previous STATE of that stream.
func checkCounts(t *testing.T, out *connectortest.Output) {
	t.Helper()
	since := map[string]int{}
	for _, m := range out.Messages {
		switch m.Type {
		case protocol.TypeRecord:
			since[protocol.NewDescriptor(m.Record.Namespace, m.Record.Stream).String()]++
		case protocol.TypeState:
			k := m.State.Stream.StreamDescriptor.String()
			if got := int(m.State.SourceStats.RecordCount); got != since[k] {
				t.Errorf("state of %s counts %d records, %d were sent", k, got, since[k])
			}
			since[k] = 0
		}
	}
}

func TestSpecCheckAndBadConfigs(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY)`)
	out := f.run("spec")
	if specs := out.OfType(protocol.TypeSpec); out.Code != 0 || len(specs) != 1 || !specs[0].Spec.SupportsIncremental {
		t.Fatalf("spec:\n%s", out)
	}
	status := func(cfg string) *protocol.ConnectionStatus {
		t.Helper()
		out := f.run("check", "--config", cfg)
		st := out.OfType(protocol.TypeConnectionStatus)
		if out.Code != 0 || len(st) != 1 {
			t.Fatalf("check must print one status and exit 0:\n%s", out)
		}
		return st[0].ConnectionStatus
	}
	if s := status(f.config); s.Status != protocol.StatusSucceeded {
		t.Fatalf("good config: %+v", s)
	}
	for name, tc := range map[string]struct{ config, want string }{
		"wrong key":       {fmt.Sprintf(`{"deployment_url":%q,"access_key":"nope"}`, f.engine.URL()), "access_key"},
		"unreachable":     {`{"deployment_url":"http://127.0.0.1:1","access_key":"k"}`, "deployment_url"},
		"not an engine":   {`{"deployment_url":"http://127.0.0.1:1/x","access_key":"k"}`, "deployment_url"},
		"missing key":     {fmt.Sprintf(`{"deployment_url":%q}`, f.engine.URL()), "access_key"},
		"bad url":         {`{"deployment_url":"ftp://x","access_key":"k"}`, "deployment_url"},
		"bad page size":   {fmt.Sprintf(`{"deployment_url":%q,"access_key":"k","page_size":0}`, f.engine.URL()), "page_size"},
		"bad behavior":    {fmt.Sprintf(`{"deployment_url":%q,"access_key":"k","invalid_cursor_behavior":"Shrug"}`, f.engine.URL()), "invalid_cursor_behavior"},
		"malformed json":  {`{"deployment_url":`, "not valid JSON"},
		"unknown table":   {fmt.Sprintf(`{"deployment_url":%q,"access_key":%q,"tables":["nope"]}`, f.engine.URL(), connectortest.AccessKey), "tables"},
		"wrong key types": {`{"deployment_url":5,"access_key":true}`, "deployment_url"},
	} {
		s := status(connectortest.WriteJSON(t, "config.json", tc.config))
		if s.Status != protocol.StatusFailed || !strings.Contains(s.Message, tc.want) {
			t.Errorf("%s: got %+v, want FAILED mentioning %q", name, s, tc.want)
		}
	}
}

const typesTable = `
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TABLE "Mixed ""Case"".T" (
	id bigint, region text, i2 smallint, i4 int, i8 bigint, n numeric, f4 real, f8 float8,
	b bool, u uuid, d date, tm time, tmz timetz, ts timestamp, tsz timestamptz, iv interval,
	by bytea, j json, jb jsonb, ai int8[], an numeric[], e mood, _id text, _id_ text,
	PRIMARY KEY (id, region));
CREATE SCHEMA other;
CREATE TABLE other.nokey (v text);
INSERT INTO "Mixed ""Case"".T" VALUES
	(9007199254740993, 'eu', 1, 2, -9223372036854775808, 12345678901234567890.123456789, 1.5, 'NaN',
	 true, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '12:34:56.5', '12:34:56+02', '2024-01-02 03:04:05.678',
	 '2024-01-02 03:04:05.678+00', '1 day 2 hours', '\x00ff', '{"a":[1,2]}', '{"b":null}', '{1,NULL,9223372036854775807}',
	 '{1.5,NaN}', 'happy', 'x', 'y'),
	(2, 'us', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO other.nokey VALUES ('a'), ('a');`

func TestDiscoverAndReadTypes(t *testing.T) {
	f := newFixture(t, typesTable)
	catalog, cat := f.catalog(protocol.SyncFullRefresh)
	if len(cat.Streams) != 2 {
		t.Fatalf("%d streams, want 2", len(cat.Streams))
	}
	s := cat.Streams[1] // sorted: other.nokey, then public.…
	if s.Name != `Mixed "Case".T` || s.Namespace != "public" || !slices.Equal(s.SupportedSyncModes, []string{"full_refresh", "incremental"}) ||
		!s.SourceDefinedCursor || !s.IsResumable || !slices.Equal(s.DefaultCursorField, []string{"_ab_cdc_lsn"}) {
		t.Fatalf("stream: %+v", s)
	}
	if fmt.Sprint(s.SourceDefinedPrimaryKey) != "[[id] [region]]" || cat.Streams[0].SourceDefinedPrimaryKey != nil {
		t.Fatalf("primary keys: %v / %v", s.SourceDefinedPrimaryKey, cat.Streams[0].SourceDefinedPrimaryKey)
	}
	var schema struct {
		Properties map[string]map[string]any `json:"properties"`
	}
	if err := json.Unmarshal(s.JSONSchema, &schema); err != nil {
		t.Fatal(err)
	}
	for field, want := range map[string]string{
		"i8":  `{"type":["integer","null"]}`,
		"n":   `{"type":["number","null"]}`,
		"f8":  `{"type":["number","null"]}`,
		"ts":  `{"airbyte_type":"timestamp_without_timezone","format":"date-time","type":["string","null"]}`,
		"tsz": `{"airbyte_type":"timestamp_with_timezone","format":"date-time","type":["string","null"]}`,
		"tm":  `{"airbyte_type":"time_without_timezone","format":"time","type":["string","null"]}`,
		"tmz": `{"airbyte_type":"time_with_timezone","format":"time","type":["string","null"]}`,
		"d":   `{"format":"date","type":["string","null"]}`,
		"by":  `{"contentEncoding":"base64","type":["string","null"]}`,
		"id":  `{"type":"integer"}`,
		"_id": `{"type":["string","null"]}`,
	} {
		got := map[string]any{}
		for k, v := range schema.Properties[field] {
			if k != "description" && k != "$pgType" {
				got[k] = v
			}
		}
		if b, _ := json.Marshal(got); string(b) != want {
			t.Errorf("schema of %s = %s, want %s", field, b, want)
		}
	}
	for _, cdc := range []string{"_ab_cdc_lsn", "_ab_cdc_updated_at", "_ab_cdc_deleted_at"} {
		if schema.Properties[cdc] == nil {
			t.Errorf("%s not declared", cdc)
		}
	}

	out := f.read(catalog, nil)
	recs := out.Records(t)
	if len(recs) != 4 {
		t.Fatalf("want 4 records:\n%s", out)
	}
	var full map[string]any
	for _, r := range recs {
		if r["region"] == "eu" {
			full = r
		}
	}
	b, _ := json.Marshal(full)
	for _, want := range []string{
		`"id":9007199254740993`, `"i8":-9223372036854775808`, `"n":12345678901234567890.123456789`, `"f8":null`,
		`"ai":[1,null,9223372036854775807]`, `"_id_":"y"`, `"an":[1.5,null]`, `"by":"AP8="`, `"j":{"a":[1,2]}`, `"_id":"x"`,
		`"ts":"2024-01-02T03:04:05.678"`, `"_ab_cdc_deleted_at":null`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("record lacks %s: %s", want, b)
		}
	}
	var meta []string
	for _, m := range out.OfType(protocol.TypeRecord) {
		if m.Record.Meta != nil {
			for _, c := range m.Record.Meta.Changes {
				meta = append(meta, c.Field+":"+c.Change)
			}
		}
	}
	if !slices.Equal(meta, []string{"f8:NULLED", "an:NULLED"}) {
		t.Errorf("meta changes %v", meta)
	}
	// Two full refreshes give the same data (CAT's full-refresh test).
	again := f.read(catalog, lastStates(t, out)).Records(t)
	if len(again) != len(recs) {
		t.Errorf("second full refresh: %d records, want %d", len(again), len(recs))
	}
}

func TestIncrementalReadsOnlyChanges(t *testing.T) {
	f := newFixture(t, `CREATE TABLE items (id int PRIMARY KEY, name text, big text);
		INSERT INTO items SELECT g, 'n' || g, NULL FROM generate_series(1, 50) g;`,
		func(c map[string]any) { c["page_size"] = 7 })
	catalog, _ := f.catalog(protocol.SyncIncremental)
	first := f.read(catalog, nil)
	if n := len(first.Records(t)); n != 50 {
		t.Fatalf("first sync: %d records", n)
	}
	if n := len(first.OfType(protocol.TypeState)); n < 8 {
		t.Errorf("want a state per page, got %d", n)
	}
	f.exec(`INSERT INTO items VALUES (51, 'new', repeat('toast', 100000));
		UPDATE items SET name = 'changed' WHERE id = 3;
		DELETE FROM items WHERE id = 4;
		UPDATE items SET id = 100 WHERE id = 5;
		UPDATE items SET name = 'toast kept' WHERE id = 51;`)
	second := f.read(catalog, lastStates(t, first))
	recs := second.Records(t)
	var got []string
	for _, r := range recs {
		s := fmt.Sprintf("%v:%v:deleted=%v", r["id"], r["name"], r["_ab_cdc_deleted_at"] != nil)
		if r["id"] == json.Number("51") {
			s += fmt.Sprintf(":big=%d", len(fmt.Sprint(r["big"])))
		}
		got = append(got, s)
	}
	// The statements are one transaction: 51, inserted and then updated in
	// it, comes once, as it was at the commit (its TOASTed value kept).
	want := []string{"3:changed:deleted=false", "4:<nil>:deleted=true",
		"5:<nil>:deleted=true", "100:n5:deleted=false", "51:toast kept:deleted=false:big=500000"}
	if !slices.Equal(got, want) {
		t.Errorf("changes:\n got %v\nwant %v", got, want)
	}
	third := f.read(catalog, lastStates(t, second))
	if n := len(third.Records(t)); n != 0 || len(third.OfType(protocol.TypeState)) == 0 {
		t.Errorf("third sync: %d records, %d states; want 0 and ≥1", n, len(third.OfType(protocol.TypeState)))
	}
	f.exec(`TRUNCATE items; INSERT INTO items VALUES (1, 'after', NULL)`)
	fourth := f.read(catalog, lastStates(t, third)).Records(t)
	if len(fourth) != 2 || fourth[0]["_ab_cdc_truncated"] != true || fourth[0]["_ab_cdc_deleted_at"] == nil || fourth[1]["name"] != "after" {
		t.Errorf("truncate: %v", fourth)
	}
}

// A transaction larger than the page size is one page of changes (a page
// ends on a transaction boundary): its records stream out in chunks, and
// its one STATE follows the last of them.
func TestLargeTransactionIsOnePage(t *testing.T) {
	f := newFixture(t, `CREATE TABLE items (id int PRIMARY KEY, name text)`, func(c map[string]any) { c["page_size"] = 7 })
	catalog, _ := f.catalog(protocol.SyncIncremental)
	first := f.read(catalog, nil)
	f.exec(`INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 2500) g`)
	second := f.read(catalog, lastStates(t, first))
	recs := second.Records(t)
	if len(recs) != 2500 || recs[0]["id"] != json.Number("1") || recs[2499]["id"] != json.Number("2500") {
		t.Fatalf("%d records", len(recs))
	}
	states := second.OfType(protocol.TypeState)
	if len(states) != 1 || states[0].State.SourceStats.RecordCount != 2500 {
		t.Errorf("%d states after one transaction, want 1 counting its 2500 records", len(states))
	}
}

func TestInterruptedSnapshotResumes(t *testing.T) {
	f := newFixture(t, `CREATE TABLE r (id int PRIMARY KEY); INSERT INTO r SELECT generate_series(1, 100);`,
		func(c map[string]any) { c["page_size"] = 10 })
	catalog, _ := f.catalog(protocol.SyncIncremental)
	full := f.read(catalog, nil)
	// Resume from the state after the third page, as if the sync had died
	// there: only the rest is sent again.
	states := full.OfType(protocol.TypeState)
	mid, _ := json.Marshal(states[2].State)
	resumed := f.read(catalog, []json.RawMessage{mid}).Records(t)
	if len(resumed) != 70 || resumed[0]["id"] != json.Number("31") {
		t.Fatalf("resumed: %d records starting at %v", len(resumed), resumed[0]["id"])
	}
	// After an engine restart, the snapshot of a table with a primary key
	// resumes where it stopped: its position is durable (lost positions
	// are TestLostPositionFailsSync's and the re-sync tests' business).
	f.restartEngine()
	catalog, _ = f.catalog(protocol.SyncIncremental)
	if recs := f.read(catalog, []json.RawMessage{mid}).Records(t); len(recs) != 70 || recs[0]["id"] != json.Number("31") {
		t.Errorf("resumed after a restart: %d records starting at %v", len(recs), recs[0]["id"])
	}
	// A cursor from the future reads nothing and keeps its state.
	out := f.read(catalog, []json.RawMessage{json.RawMessage(`{"type":"STREAM","stream":{"stream_descriptor":{"name":"r","namespace":"public"},"stream_state":{"snapshot_has_more":false,"delta_cursor":4000000000000000000}}}`)})
	if n := len(out.Records(t)); n != 0 || len(out.OfType(protocol.TypeState)) == 0 {
		t.Errorf("future state: %d records", n)
	}
	// Legacy object states work too.
	out = f.read(catalog, nil)
	legacy := connectortest.WriteJSON(t, "legacy.json", `{"r":{"snapshot_has_more":false,"delta_cursor":4000000000000000000}}`)
	if o := f.run("read", "--config", f.config, "--catalog", catalog, "--state", legacy); o.Code != 0 || len(o.Records(t)) != 0 {
		t.Errorf("legacy state:\n%s", o)
	}
	_ = out
}

func TestBadCatalogsAndStatesFailCleanly(t *testing.T) {
	f := newFixture(t, `CREATE TABLE r (id int PRIMARY KEY); INSERT INTO r VALUES (1);`)
	catalog, _ := f.catalog(protocol.SyncIncremental)
	for name, tc := range map[string]struct {
		catalog, state string
		want           string
	}{
		"unknown stream": {`{"streams":[{"stream":{"name":"__AIRBYTE__stream_that_does_not_exist","json_schema":{},"supported_sync_modes":["full_refresh"]},"sync_mode":"INVALID","destination_sync_mode":"INVALID"}]}`, "", "__AIRBYTE__stream_that_does_not_exist"},
		"bad sync mode":  {`{"streams":[{"stream":{"name":"r","namespace":"public","json_schema":{},"supported_sync_modes":["full_refresh"]},"sync_mode":"sometimes","destination_sync_mode":"append"}]}`, "", "sometimes"},
		"not a catalog":  {`[1,2]`, "", "catalog"},
		"garbage state":  {"", `[{"type":"STREAM","stream":{"stream_descriptor":{"name":"r"},"stream_state":{"delta_cursor":"yesterday"}}}]`, "stream public.r"},
		"foreign state":  {"", `[{"type":"STREAM","stream":{"stream_descriptor":{"name":"r"},"stream_state":{"updated_at":"2020"}}}]`, "stream public.r"},
		"not a state":    {"", `"hello"`, "state file"},
	} {
		cat := catalog
		if tc.catalog != "" {
			cat = connectortest.WriteJSON(t, "catalog.json", tc.catalog)
		}
		args := []string{"read", "--config", f.config, "--catalog", cat}
		if tc.state != "" {
			args = append(args, "--state", connectortest.WriteJSON(t, "state.json", tc.state))
		}
		out := f.run(args...)
		errs := out.Errors()
		if out.Code == 0 || len(errs) == 0 || errs[0].FailureType != protocol.FailureConfig || !strings.Contains(errs[0].Message, tc.want) {
			t.Errorf("%s: want a config_error mentioning %q and a non-zero exit:\n%s", name, tc.want, out)
		}
		if n := len(out.OfType(protocol.TypeRecord)); n != 0 {
			t.Errorf("%s: %d records sent before failing", name, n)
		}
	}
}
