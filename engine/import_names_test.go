package engine_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shapelog/shapelog/engine/client"
)

// wantBadRequest checks a 400 with code whose message names every one of
// words (a table, a field, a message index).
func wantBadRequest(t *testing.T, err error, code string, words ...string) {
	t.Helper()
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 400 || ce.Code != code {
		t.Fatalf("got %v, want 400 %s", err, code)
	}
	for _, w := range words {
		if !strings.Contains(ce.Message, w) {
			t.Errorf("message %q does not name %q", ce.Message, w)
		}
	}
}

func waitIndexes(t *testing.T, c *client.Client, tables ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ready, err := c.PrimaryKeyIndexesReady(t.Context(), tables)
		if err != nil {
			t.Fatal(err)
		}
		if ready {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("indexes of %v never became ready", tables)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestImportSystemColumnNames: fields named like PostgreSQL's system
// columns (which no table can have) land in the column of that name with
// an underscore appended, declared or not, as keys too.
func TestImportSystemColumnNames(t *testing.T) {
	conn, c, ctx := importSetup(t)
	schema := json.RawMessage(`{"type":"object","properties":{"ctid":{"type":"integer"},"xmin":{"type":"string"},"v":{"type":"string"}}}`)
	tables := map[string]client.TableSpec{
		"sys":   {JSONSchema: schema},
		"loose": {},
		"keyed": {PrimaryKey: [][]string{{"xmax"}}, JSONSchema: json.RawMessage(`{"type":"object","properties":{"xmax":{"type":"integer"},"v":{"type":"string"}}}`)},
	}
	req := client.ImportRequest{Tables: tables, Messages: append(append(
		msgs("sys", `{"ctid":1,"xmin":"a","v":"x","tableoid":true}`),
		msgs("loose", `{"cmin":1.5,"cmax":"s","ctid_x":2,"CTID":3}`)...),
		msgs("keyed", `{"xmax":1,"v":"a"}`, `{"xmax":1,"v":"b"}`, `{"xmax":2,"v":"c"}`)...)}
	if err := c.ImportAirbyteRecords(ctx, req, ""); err != nil {
		t.Fatal(err)
	}
	if got := columnTypes(t, conn, "sys"); got != "ctid_ bigint, v text, xmin_ text, tableoid_ boolean" {
		t.Errorf("sys columns: %s", got)
	}
	if got := rowsOf(t, conn, `SELECT ctid_, xmin_, v, tableoid_ FROM sys`); strings.Join(got, ",") != "1|a|x|true" {
		t.Errorf("sys rows: %v", got)
	}
	if got := rowsOf(t, conn, `SELECT cmin_::text, cmax_, ctid_x::text, "CTID"::text FROM loose`); strings.Join(got, ",") != "1.5|s|2|3" {
		t.Errorf("loose rows: %v", got)
	}
	// The key index is on the renamed column, and dedup works through it.
	if err := c.ImportAirbyteRecords(ctx, client.ImportRequest{Tables: tables, Messages: msgs("keyed", `{"xmax":2,"v":"c2"}`)}, ""); err != nil {
		t.Fatal(err)
	}
	if got := rowsOf(t, conn, `SELECT xmax_, v FROM keyed ORDER BY 1`); strings.Join(got, ",") != "1|b,2|c2" {
		t.Errorf("keyed rows: %v", got)
	}
	if got := rowsOf(t, conn, `SELECT indexdef FROM pg_indexes WHERE tablename = 'keyed'`); len(got) != 1 || !strings.Contains(got[0], "(xmax_)") {
		t.Errorf("keyed index: %v", got)
	}
	// add_primary_key_indexes maps the key the same way.
	if err := c.AddPrimaryKeyIndexes(ctx, map[string][][]string{"early": {{"ctid"}}}); err != nil {
		t.Fatal(err)
	}
	waitIndexes(t, c, "early")
	early := map[string]client.TableSpec{"early": {PrimaryKey: [][]string{{"ctid"}}, JSONSchema: json.RawMessage(`{"type":"object","properties":{"ctid":{"type":"integer"}}}`)}}
	if err := c.ImportAirbyteRecords(ctx, client.ImportRequest{Tables: early, Messages: msgs("early", `{"ctid":7}`, `{"ctid":7}`)}, ""); err != nil {
		t.Fatal(err)
	}
	if got := rowsOf(t, conn, `SELECT ctid_ FROM early`); strings.Join(got, ",") != "7" {
		t.Errorf("early rows: %v", got)
	}
}

// TestImportRejectsUnusableNames: names that cannot be columns are 400s
// naming the table and the field, whether declared or only in records,
// and nothing of the request is written.
func TestImportRejectsUnusableNames(t *testing.T) {
	conn, c, ctx := importSetup(t)
	long1, long2 := strings.Repeat("x", 63)+"_a", strings.Repeat("x", 63)+"_b"
	props := func(names ...string) json.RawMessage {
		p := map[string]any{}
		for _, n := range names {
			p[n] = map[string]any{"type": "string"}
		}
		b, _ := json.Marshal(map[string]any{"type": "object", "properties": p})
		return b
	}
	record := func(fields map[string]any) string {
		b, _ := json.Marshal(fields)
		return string(b)
	}
	for i, tc := range []struct {
		name  string
		spec  client.TableSpec
		data  []string
		code  string
		words []string
	}{
		{"declared collision after renaming", client.TableSpec{JSONSchema: props("ctid", "ctid_")}, nil, "InvalidFieldName", []string{"bad", `"ctid"`, `"ctid_"`}},
		{"record collision after renaming", client.TableSpec{}, []string{`{"a":1}`, `{"ctid":1,"ctid_":2}`}, "InvalidFieldName", []string{"bad", "ctid", "message 2"}},
		{"collision across records", client.TableSpec{}, []string{`{"ctid_":1}`, `{"ctid":2}`}, "InvalidFieldName", []string{"bad", "ctid", "message 2"}},
		{"declared staging name", client.TableSpec{JSONSchema: props("_shapelog_seq")}, nil, "InvalidFieldName", []string{"bad", "_shapelog_seq"}},
		{"record staging name", client.TableSpec{}, []string{`{"_shapelog_deleted":true}`}, "InvalidFieldName", []string{"bad", "_shapelog_deleted", "message 1"}},
		{"declared empty name", client.TableSpec{JSONSchema: props("")}, nil, "InvalidFieldName", []string{"bad", `""`}},
		{"record empty name", client.TableSpec{}, []string{`{"":1}`}, "InvalidFieldName", []string{"bad", `""`, "message 1"}},
		{"declared long names", client.TableSpec{JSONSchema: props(long1, long2)}, nil, "InvalidFieldName", []string{"bad", "63"}},
		{"record long name", client.TableSpec{}, []string{record(map[string]any{long1: 1})}, "InvalidFieldName", []string{"bad", long1, "message 1"}},
		{"NUL in a name", client.TableSpec{}, []string{`{"a\u0000b":1}`}, "InvalidFieldName", []string{"bad", "message 1"}},
		{"staging name as key", client.TableSpec{PrimaryKey: [][]string{{"_shapelog_seq"}}}, []string{`{"_shapelog_seq":1}`}, "InvalidPrimaryKey", []string{"bad", "_shapelog_seq"}},
		{"CDC field as key", client.TableSpec{PrimaryKey: [][]string{{"_ab_cdc_lsn"}}}, []string{`{"_ab_cdc_lsn":1}`}, "InvalidPrimaryKey", []string{"bad", "_ab_cdc_lsn"}},
		{"nested key into a string column", client.TableSpec{PrimaryKey: [][]string{{"meta", "ref"}}, JSONSchema: json.RawMessage(`{"type":"object","properties":{"meta":{"type":"string"}}}`)},
			[]string{`{"meta":"x"}`}, "InvalidPrimaryKey", []string{"bad", "meta.ref", "meta"}},
		{"nested key into a number column", client.TableSpec{PrimaryKey: [][]string{{"meta", "ref"}}, JSONSchema: json.RawMessage(`{"type":"object","properties":{"meta":{"type":"integer"}}}`)},
			nil, "InvalidPrimaryKey", []string{"bad", "meta.ref"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Each case has its own tables; "good" comes first, so the
			// messages of "bad" start at index 1.
			bad, good := fmt.Sprintf("bad%d", i), fmt.Sprintf("good%d", i)
			req := client.ImportRequest{
				Tables:   map[string]client.TableSpec{bad: tc.spec, good: {}},
				Messages: append(msgs(good, `{"ok":1}`), msgs(bad, tc.data...)...),
			}
			tc.words[0] = bad
			wantBadRequest(t, c.ImportAirbyteRecords(ctx, req, ""), tc.code, tc.words...)
			if got := rowsOf(t, conn, `SELECT count(*) FROM pg_class WHERE relname IN ('`+bad+`', '`+good+`')`); got[0] != "0" {
				t.Errorf("a rejected request created tables")
			}
		})
	}
}

// TestNestedKeyNeedsJSONColumn: add_primary_key_indexes and imports refuse
// a nested key into an existing column that is not json/jsonb.
func TestNestedKeyNeedsJSONColumn(t *testing.T) {
	conn, c, ctx := importSetup(t)
	mustExec(t, conn, `CREATE TABLE flat (meta text, n int); INSERT INTO flat VALUES ('x', 1)`)
	wantBadRequest(t, c.AddPrimaryKeyIndexes(ctx, map[string][][]string{"flat": {{"meta", "ref"}}}), "InvalidPrimaryKey", "flat", "meta.ref", "text")
	if got := rowsOf(t, conn, `SELECT count(*) FROM pg_indexes WHERE tablename = 'flat'`); got[0] != "0" {
		t.Errorf("an index was built: %v", got)
	}
	spec := client.TableSpec{PrimaryKey: [][]string{{"meta", "ref"}}, JSONSchema: json.RawMessage(`{"type":"object","properties":{"meta":{"type":"object"}}}`)}
	err := c.ImportAirbyteRecords(ctx, client.ImportRequest{Tables: map[string]client.TableSpec{"flat": spec}, Messages: msgs("flat", `{"meta":{"ref":"a"}}`)}, "")
	wantBadRequest(t, err, "InvalidPrimaryKey", "flat", "meta.ref")
	if got := columnTypes(t, conn, "flat"); got != "meta text, n integer" {
		t.Errorf("flat was altered: %s", got)
	}
	// A provisional jsonb root made by add_primary_key_indexes stays jsonb:
	// a schema declaring the field a string is refused, not applied.
	if err := c.AddPrimaryKeyIndexes(ctx, map[string][][]string{"deep": {{"meta", "ref"}}}); err != nil {
		t.Fatal(err)
	}
	waitIndexes(t, c, "deep")
	deep := client.TableSpec{PrimaryKey: [][]string{{"meta", "ref"}}, JSONSchema: json.RawMessage(`{"type":"object","properties":{"meta":{"type":"string"}}}`)}
	err = c.ImportAirbyteRecords(ctx, client.ImportRequest{Tables: map[string]client.TableSpec{"deep": deep}, Messages: msgs("deep", `{"meta":"x"}`)}, "")
	wantBadRequest(t, err, "InvalidPrimaryKey", "deep", "meta.ref")
	deep.JSONSchema = json.RawMessage(`{"type":"object","properties":{"meta":{"type":"object"},"v":{"type":"integer"}}}`)
	if err := c.ImportAirbyteRecords(ctx, client.ImportRequest{Tables: map[string]client.TableSpec{"deep": deep}, Messages: msgs("deep", `{"meta":{"ref":"a"},"v":1}`, `{"meta":{"ref":"a"},"v":2}`)}, ""); err != nil {
		t.Fatal(err)
	}
	if got := rowsOf(t, conn, `SELECT meta->>'ref', v FROM deep`); strings.Join(got, ",") != "a|2" {
		t.Errorf("deep rows: %v", got)
	}
}
