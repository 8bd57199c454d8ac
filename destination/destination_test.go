package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/shapelog/shapelog/engine"
	"github.com/shapelog/shapelog/internal/connectortest"
	"github.com/shapelog/shapelog/internal/pgtest"
	"github.com/shapelog/shapelog/protocol"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type fixture struct {
	t      *testing.T
	conn   *pgx.Conn
	bin    string
	engine *engine.Engine
	config string
}

func newFixture(t *testing.T, configMods ...func(map[string]any)) *fixture {
	t.Helper()
	dbURL := pgtest.NewDatabase(t)
	f := &fixture{t: t, conn: connectortest.Connect(t, dbURL), bin: connectortest.Binary(t, "destination")}
	f.engine = connectortest.StartEngine(t, dbURL)
	cfg := map[string]any{"deployment_url": f.engine.URL(), "access_key": connectortest.AccessKey}
	for _, m := range configMods {
		m(cfg)
	}
	f.config = connectortest.WriteJSON(t, "config.json", cfg)
	return f
}

// stream is a configured stream for tests.
func stream(name, mode string, pk [][]string, gen *[2]int64) protocol.ConfiguredStream {
	s := protocol.ConfiguredStream{
		Stream: protocol.Stream{Name: name, JSONSchema: json.RawMessage(`{"type":"object","properties":{
			"id":{"type":"integer"},"cur":{"type":"string"},"name":{"type":["string","null"]},
			"_ab_cdc_deleted_at":{"type":["string","null"],"format":"date-time","airbyte_type":"timestamp_with_timezone"}}}`),
			SupportedSyncModes: []string{"full_refresh", "incremental"}},
		SyncMode: "incremental", DestinationSyncMode: mode, PrimaryKey: pk,
	}
	if gen != nil {
		s.GenerationID, s.MinimumGenerationID = &gen[0], &gen[1]
	}
	return s
}

func (f *fixture) write(streams []protocol.ConfiguredStream, input ...string) *connectortest.Output {
	f.t.Helper()
	cat := connectortest.WriteJSON(f.t, "catalog.json", protocol.ConfiguredCatalog{Streams: streams})
	return connectortest.Run(f.t, f.bin, strings.NewReader(strings.Join(input, "\n")+"\n"), "write", "--config", f.config, "--catalog", cat)
}

func rec(stream, data string) string {
	return fmt.Sprintf(`{"type":"RECORD","record":{"stream":%q,"data":%s,"emitted_at":1700000000000}}`, stream, data)
}

func state(stream string, id int) string {
	return fmt.Sprintf(`{"type":"STATE","state":{"type":"STREAM","stream":{"stream_descriptor":{"name":%q},"stream_state":{"c":%d}},"sourceStats":{"recordCount":2.0},"id":%d,"extra":"kept"}}`, stream, id, id)
}

func complete(stream string) string {
	return fmt.Sprintf(`{"type":"TRACE","trace":{"type":"STREAM_STATUS","emitted_at":1,"stream_status":{"stream_descriptor":{"name":%q},"status":"COMPLETE"}}}`, stream)
}

// rows returns "id:name" of a table's rows in id order.
func (f *fixture) rows(table string) []string {
	return f.strings(`SELECT id::text || ':' || coalesce(name, 'NULL') FROM ` + pgx.Identifier{"public", table}.Sanitize() + ` ORDER BY id, name`)
}

// strings runs a query of one text column and returns its rows.
func (f *fixture) strings(query string) []string {
	f.t.Helper()
	rows, err := f.conn.Query(context.Background(), query)
	if err != nil {
		f.t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		f.t.Fatal(err)
	}
	return out
}

func TestSpecAndCheck(t *testing.T) {
	f := newFixture(t)
	bin := f.bin
	before := f.relations()
	out := connectortest.Run(t, bin, nil, "spec")
	specs := out.OfType(protocol.TypeSpec)
	if len(specs) != 1 || !slices.Equal(specs[0].Spec.SupportedDestinationSyncModes, []string{"append", "overwrite", "append_dedup"}) {
		t.Fatalf("spec:\n%s", out)
	}
	for name, tc := range map[string]struct{ config, status, want string }{
		"good":        {fmt.Sprintf(`{"deployment_url":%q,"access_key":%q}`, f.engine.URL(), connectortest.AccessKey), "SUCCEEDED", ""},
		"wrong key":   {fmt.Sprintf(`{"deployment_url":%q,"access_key":"x"}`, f.engine.URL()), "FAILED", "access_key"},
		"unreachable": {`{"deployment_url":"http://127.0.0.1:1","access_key":"x"}`, "FAILED", "deployment_url"},
		"bad batch":   {fmt.Sprintf(`{"deployment_url":%q,"access_key":"x","batch_size":-1}`, f.engine.URL()), "FAILED", "batch_size"},
		"long schema": {fmt.Sprintf(`{"deployment_url":%q,"access_key":%q,"default_schema":%q}`, f.engine.URL(), connectortest.AccessKey, strings.Repeat("s", 64)), "FAILED", "default_schema"},
		"new schema":  {fmt.Sprintf(`{"deployment_url":%q,"access_key":%q,"default_schema":"not_yet"}`, f.engine.URL(), connectortest.AccessKey), "SUCCEEDED", ""},
	} {
		out := connectortest.Run(t, bin, nil, "check", "--config", connectortest.WriteJSON(t, "c.json", tc.config))
		st := out.OfType(protocol.TypeConnectionStatus)
		if out.Code != 0 || len(st) != 1 || st[0].ConnectionStatus.Status != tc.status || !strings.Contains(st[0].ConnectionStatus.Message, tc.want) {
			t.Errorf("%s:\n%s", name, out)
		}
	}
	// check leaves the database as it was: no table (a shapelog source
	// would discover it as a stream), no schema.
	if after := f.relations(); !slices.Equal(after, before) {
		t.Errorf("check changed the database's tables and schemas:\nbefore %v\nafter  %v", before, after)
	}
}

// relations lists the database's schemas and relations, system ones left
// out.
func (f *fixture) relations() []string {
	return f.strings(`
		SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\_%' AND nspname <> 'information_schema'
		UNION ALL
		SELECT c.relkind::text || ' ' || n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
		ORDER BY 1`)
}

func TestAppendEchoesStatesAfterCommit(t *testing.T) {
	f := newFixture(t, func(c map[string]any) { c["batch_size"] = 2 })
	out := f.write([]protocol.ConfiguredStream{stream("a", "append", nil, nil), stream("b", "append", nil, nil)},
		rec("a", `{"id":1,"name":"x"}`), rec("b", `{"id":7}`), rec("a", `{"id":2,"name":"it's \"quoted\" ✓"}`),
		state("a", 1),
		`{"type":"LOG","log":{"level":"INFO","message":"ignored"}}`, `{"type":"SOMETHING_NEW","x":1}`,
		rec("a", `{"id":3,"name":null,"undeclared":"kept too"}`), rec("a", `{"id":3,"name":null}`),
		state("b", 2), state("a", 3))
	if out.Code != 0 {
		t.Fatalf("write:\n%s", out)
	}
	states := out.OfType(protocol.TypeState)
	if len(states) != 3 {
		t.Fatalf("want 3 states echoed:\n%s", out)
	}
	var counts []string
	for i, s := range states {
		var raw map[string]any
		_ = json.Unmarshal(out.Lines[indexOfState(out, i)], &raw)
		st := raw["state"].(map[string]any)
		if st["extra"] != "kept" || st["id"] == nil || st["sourceStats"] == nil {
			t.Errorf("state %d lost fields: %v", i, st)
		}
		counts = append(counts, fmt.Sprint(s.State.Stream.StreamDescriptor.Name, "=", float64(s.State.DestinationStats.RecordCount)))
	}
	if !slices.Equal(counts, []string{"a=2", "b=1", "a=2"}) {
		t.Errorf("destinationStats %v", counts)
	}
	if got := f.rows("a"); !slices.Equal(got, []string{"1:x", `2:it's "quoted" ✓`, "3:NULL", "3:NULL"}) {
		t.Errorf("rows of a: %v", got)
	}
	var meta string
	var gen *int64
	if err := f.conn.QueryRow(context.Background(), `SELECT _airbyte_meta::text, _airbyte_generation_id FROM a WHERE id = 1`).Scan(&meta, &gen); err != nil ||
		meta != `{"changes": [], "sync_id": null}` || gen != nil {
		t.Errorf("metadata: %s %v %v", meta, gen, err)
	}
}

func indexOfState(out *connectortest.Output, n int) int {
	for i, m := range out.Messages {
		if m.Type == protocol.TypeState {
			if n == 0 {
				return i
			}
			n--
		}
	}
	return -1
}

func TestDedupAppliesDeletesAndTruncates(t *testing.T) {
	f := newFixture(t)
	streams := []protocol.ConfiguredStream{stream("d", "append_dedup", [][]string{{"id"}, {"cur"}}, nil)}
	out := f.write(streams,
		rec("d", `{"id":1,"cur":"EUR","name":"one"}`), rec("d", `{"id":1,"cur":"USD","name":"one$"}`),
		rec("d", `{"id":2,"cur":"EUR","name":"two"}`), rec("d", `{"id":1,"cur":"EUR","name":"uno"}`),
		state("d", 1),
		rec("d", `{"id":2,"cur":"EUR","_ab_cdc_deleted_at":"2024-01-01T00:00:00Z"}`), state("d", 2))
	if out.Code != 0 {
		t.Fatalf("write:\n%s", out)
	}
	if got := f.rows("d"); !slices.Equal(got, []string{"1:one$", "1:uno"}) {
		t.Errorf("after dedup and delete: %v", got)
	}
	out = f.write(streams,
		rec("d", `{"id":5,"cur":"EUR","name":"before"}`),
		rec("d", `{"_ab_cdc_deleted_at":"2024-01-01T00:00:00Z","_ab_cdc_truncated":true}`),
		rec("d", `{"id":6,"cur":"EUR","name":"after"}`), state("d", 3))
	if got := f.rows("d"); out.Code != 0 || !slices.Equal(got, []string{"6:after"}) {
		t.Errorf("after truncate: %v\n%s", got, out)
	}
}

func TestOverwriteKeepsOldRowsUntilComplete(t *testing.T) {
	f := newFixture(t)
	gen := func(g int64) *[2]int64 { return &[2]int64{g, g} }
	must := func(out *connectortest.Output) {
		t.Helper()
		if out.Code != 0 {
			t.Fatalf("write:\n%s", out)
		}
	}
	must(f.write([]protocol.ConfiguredStream{stream("o", "overwrite", nil, gen(1))}, rec("o", `{"id":1}`), rec("o", `{"id":2}`), state("o", 1), complete("o")))
	if got := f.rows("o"); !slices.Equal(got, []string{"1:NULL", "2:NULL"}) {
		t.Fatalf("first generation: %v", got)
	}
	// A sync that fails (no COMPLETE) leaves the old rows readable.
	must(f.write([]protocol.ConfiguredStream{stream("o", "overwrite", nil, gen(2))}, rec("o", `{"id":3}`), state("o", 2),
		`{"type":"TRACE","trace":{"type":"STREAM_STATUS","emitted_at":1,"stream_status":{"stream_descriptor":{"name":"o"},"status":"INCOMPLETE"}}}`))
	if got := f.rows("o"); !slices.Equal(got, []string{"1:NULL", "2:NULL", "3:NULL"}) {
		t.Fatalf("failed second generation: %v", got)
	}
	must(f.write([]protocol.ConfiguredStream{stream("o", "overwrite", nil, gen(3))}, rec("o", `{"id":4}`), state("o", 3), complete("o")))
	if got := f.rows("o"); !slices.Equal(got, []string{"4:NULL"}) {
		t.Fatalf("third generation: %v", got)
	}
	// Without generation ids or statuses (older platforms), a clean end of
	// input completes the overwrite.
	must(f.write([]protocol.ConfiguredStream{stream("o", "overwrite", nil, nil)}, rec("o", `{"id":5}`), state("o", 4)))
	if got := f.rows("o"); !slices.Equal(got, []string{"5:NULL"}) {
		t.Fatalf("overwrite without generations: %v", got)
	}
}

func TestBadInputEndsTheRunAfterTheLastState(t *testing.T) {
	f := newFixture(t)
	streams := []protocol.ConfiguredStream{stream("e", "append", nil, nil)}
	for name, tc := range map[string]struct {
		bad, want string
	}{
		"malformed line": {`{"type":"RECORD","record":{`, "line 3"},
		"unknown stream": {rec("nope", `{"id":1}`), "stream nope"},
		"schema failure": {rec("e", `{"id":"not a number"}`), "line 3"},
		"not an object":  {`{"type":"RECORD","record":{"stream":"e","data":[1],"emitted_at":1}}`, "line 3"},
	} {
		if _, err := f.conn.Exec(context.Background(), `DROP TABLE IF EXISTS e`); err != nil {
			t.Fatal(err)
		}
		out := f.write(streams, rec("e", `{"id":1}`), state("e", 1), tc.bad, rec("e", `{"id":2}`), state("e", 2))
		errs := out.Errors()
		if out.Code == 0 || len(errs) == 0 || !strings.Contains(errs[0].Message, tc.want) {
			t.Errorf("%s: want a failure naming %q:\n%s", name, tc.want, out)
			continue
		}
		if n := len(out.OfType(protocol.TypeState)); n != 1 {
			t.Errorf("%s: %d states echoed, want 1", name, n)
		}
		if got := f.rows("e"); !slices.Equal(got, []string{"1:NULL"}) {
			t.Errorf("%s: rows %v, want only the committed one", name, got)
		}
	}
	// A catalog asking for dedup without a key fails before reading.
	out := f.write([]protocol.ConfiguredStream{stream("k", "append_dedup", nil, nil)}, rec("k", `{"id":1}`))
	if errs := out.Errors(); out.Code == 0 || len(errs) == 0 || errs[0].FailureType != protocol.FailureConfig || !strings.Contains(errs[0].Message, "primary key") {
		t.Errorf("dedup without key:\n%s", out)
	}
}
