package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/shapelog/shapelog/protocol"
)

// TestPermanentRefusalsFailAtOnce: what PostgreSQL will refuse every time
// (a trigger that raises, more columns than a table can have) ends the run
// with a failure that is not transient and names the cause, rather than
// being retried as an engine outage.
func TestPermanentRefusalsFailAtOnce(t *testing.T) {
	f := newFixture(t)
	streams := []protocol.ConfiguredStream{stream("e", "append", nil, nil)}
	if out := f.write(streams, rec("e", `{"id":1}`), state("e", 1)); out.Code != 0 {
		t.Fatalf("first write:\n%s", out)
	}
	mustExec := func(sql string) {
		t.Helper()
		if _, err := f.conn.Exec(t.Context(), sql); err != nil {
			t.Fatal(err)
		}
	}
	mustExec(`CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'no writes to e today'; END $$`)
	mustExec(`CREATE TRIGGER refuse BEFORE INSERT ON e FOR EACH ROW EXECUTE FUNCTION refuse()`)
	out := f.write(streams, rec("e", `{"id":2}`), state("e", 2))
	if errs := out.Errors(); out.Code == 0 || len(errs) == 0 || errs[0].FailureType == protocol.FailureTransient || !strings.Contains(errs[0].Message, "no writes to e today") {
		t.Errorf("trigger refusal: want a non-transient failure naming the trigger's message:\n%s", out)
	}

	props := map[string]any{"id": map[string]any{"type": "integer"}}
	row := map[string]any{"id": 1}
	for i := range 1700 {
		props[fmt.Sprintf("c%d", i)] = map[string]any{"type": "string"}
		row[fmt.Sprintf("c%d", i)] = "v"
	}
	schema, _ := json.Marshal(map[string]any{"type": "object", "properties": props})
	data, _ := json.Marshal(row)
	wide := protocol.ConfiguredStream{Stream: protocol.Stream{Name: "wide", JSONSchema: schema, SupportedSyncModes: []string{"full_refresh"}},
		SyncMode: "full_refresh", DestinationSyncMode: "append"}
	out = f.write([]protocol.ConfiguredStream{wide}, rec("wide", string(data)), state("wide", 1))
	if errs := out.Errors(); out.Code == 0 || len(errs) == 0 || errs[0].FailureType == protocol.FailureTransient || !strings.Contains(errs[0].Message, "1600") {
		t.Errorf("1,700 columns: want a non-transient failure naming the 1600-column limit:\n%s", out)
	}
}
