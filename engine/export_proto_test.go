package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shapelog/shapelog/engine/client"
	"github.com/shapelog/shapelog/engine/recordpb"
	"github.com/shapelog/shapelog/engine/recordpb/recordpbtest"
	"github.com/shapelog/shapelog/internal/pgtest"
)

// protoDoc is one document of a protobuf answer, with the fields in force.
type protoDoc struct {
	table  string
	fields []string
	doc    *recordpb.Document
}

// protoPage is one protobuf answer.
type protoPage struct {
	docs []protoDoc
	end  *recordpb.PageEnd
}

// readProtoPage reads one page with ExportFrames.
func readProtoPage(t *testing.T, c *client.Client, endpoint string, q client.ExportQuery) protoPage {
	t.Helper()
	var page protoPage
	var fields *recordpb.Fields
	end, err := c.ExportFrames(context.Background(), endpoint, q, func(f *recordpb.Fields) error {
		fields = f
		return nil
	}, func(b []byte) error {
		var d recordpb.Document
		if err := proto.Unmarshal(b, &d); err != nil {
			return err
		}
		if len(d.Data) != len(fields.Names) {
			return fmt.Errorf("a document of %d values under %d fields", len(d.Data), len(fields.Names))
		}
		if v, err := recordpb.ScanDocument(b); err != nil || v.Values != len(d.Data) {
			return fmt.Errorf("ScanDocument: %+v, %v", v, err)
		}
		page.docs = append(page.docs, protoDoc{table: fields.Table, fields: fields.Names, doc: &d})
		return nil
	})
	if err != nil {
		t.Fatalf("%s %+v: %v", endpoint, q, err)
	}
	page.end = end
	return page
}

// decodeDocs decodes JSON documents keeping numbers' text.
func decodeDocs(t *testing.T, raw []json.RawMessage) []map[string]any {
	t.Helper()
	out := make([]map[string]any, len(raw))
	for i, r := range raw {
		d := json.NewDecoder(bytes.NewReader(r))
		d.UseNumber()
		if err := d.Decode(&out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// The PostgreSQL types of the test's columns, by exported field name, as
// the comparison needs them.
var protoTestTypes = map[string]string{
	"id": "int", "_id_": "text", "ｚ": "int", "😀": "text", "😁": "text", "f8": "float", "f4": "float", "num": "numeric",
	"b": "bool", "j": "json", "ai8": "array:int8", "af8": "array:float", "anum": "array:numeric", "a2": "array:int",
	"atxt": "array:text", "by": "text", "ts": "timestamp", "tstz": "timestamptz", "tz": "timetz", "d": "date", "iv": "text",
	"u": "text", "t": "text", "extra": "text", "k": "text", "v": "int",
}

// checkValue compares a protobuf value with the JSON export's value of the
// same field, and reports whether the value was nulled.
func checkProtoValue(t *testing.T, where, field string, v *recordpb.Value, j any) bool {
	t.Helper()
	fail := func() { t.Errorf("%s: field %s: protobuf %v, JSON %#v", where, field, v, j) }
	typ := protoTestTypes[field]
	if j == nil {
		// JSON writes a jsonb 'null' as null, like NULL; protobuf can tell.
		if x, ok := v.Kind.(*recordpb.Value_Json); ok && typ == "json" && string(x.Json) == "null" {
			return false
		}
		if !v.IsNull || v.Kind != nil {
			fail()
		}
		return false
	}
	switch {
	case typ == "":
		t.Fatalf("%s: no type for field %q", where, field)
	case typ == "int":
		n, err := strconv.ParseInt(fmt.Sprint(j), 10, 64)
		if x, ok := v.Kind.(*recordpb.Value_Integer); !ok || err != nil || x.Integer != n {
			fail()
		}
	case typ == "float":
		f, err := strconv.ParseFloat(fmt.Sprint(j), 64)
		x, ok := v.Kind.(*recordpb.Value_Number)
		if !ok || err != nil || !(math.Float64bits(x.Number) == math.Float64bits(f) || math.IsNaN(f) && math.IsNaN(x.Number)) {
			fail()
		}
	case typ == "numeric":
		if x, ok := v.Kind.(*recordpb.Value_BigDecimal); !ok || x.BigDecimal != j {
			fail()
		}
	case typ == "bool":
		if x, ok := v.Kind.(*recordpb.Value_Boolean); !ok || x.Boolean != j {
			fail()
		}
	case typ == "json" || strings.HasPrefix(typ, "array:"):
		x, ok := v.Kind.(*recordpb.Value_Json)
		if !ok {
			fail()
			return false
		}
		d := json.NewDecoder(bytes.NewReader(x.Json))
		d.UseNumber()
		var got any
		if err := d.Decode(&got); err != nil {
			fail()
		}
		want, nulled := j, false
		if elem, ok := strings.CutPrefix(typ, "array:"); ok {
			want, nulled = recordpbtest.SourceArray(j, elem)
		}
		if !reflect.DeepEqual(got, want) {
			fail()
		}
		return nulled
	case typ == "date" || typ == "timetz" || typ == "timestamp" || typ == "timestamptz":
		s := j.(string)
		if strings.HasSuffix(s, "infinity") {
			// No typed form: null, and the record's meta says so.
			if !v.IsNull || v.Kind != nil {
				fail()
			}
			return true
		}
		want, err := recordpbtest.Temporal(typ, s)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(v, want) {
			fail()
		}
	default:
		if x, ok := v.Kind.(*recordpb.Value_String_); !ok || x.String_ != j {
			fail()
		}
	}
	return false
}

// columnOf is the column of an exported field name.
func columnOf(field string) string {
	if base := strings.TrimRight(field, "_"); base != field && slices.Contains([]string{"_id", "_ts", "_table", "_deleted", "_truncated", "_component"}, base) {
		return field[:len(field)-1]
	}
	return field
}

// compareDocs checks that protobuf documents say what the JSON documents
// of the same answer say, value by value.
func compareDocs(t *testing.T, where string, pdocs []protoDoc, jdocs []map[string]any) {
	t.Helper()
	if len(pdocs) != len(jdocs) {
		t.Fatalf("%s: %d protobuf documents, %d JSON", where, len(pdocs), len(jdocs))
	}
	for i, p := range pdocs {
		j := jdocs[i]
		at := fmt.Sprintf("%s, document %d (%v)", where, i, j["_id"])
		ts, _ := strconv.ParseInt(fmt.Sprint(j["_ts"]), 10, 64)
		if p.table != j["_table"] || p.doc.Ts != ts || p.doc.Deleted != (j["_deleted"] == true) || p.doc.Truncated != (j["_truncated"] == true) {
			t.Errorf("%s: table %s ts %d deleted %v truncated %v; JSON %v", at, p.table, p.doc.Ts, p.doc.Deleted, p.doc.Truncated, j)
		}
		// The fields: sorted as Airbyte sorts names, the JSON document's
		// columns (a tombstone's key columns among them).
		cols := map[string]bool{}
		for k := range j {
			if !slices.Contains([]string{"_table", "_ts", "_id", "_deleted", "_truncated"}, k) {
				cols[k] = true
			}
		}
		if !slices.IsSortedFunc(p.fields, func(a, b string) int {
			return recordpb.CompareFieldNames(columnOf(a), columnOf(b))
		}) {
			t.Errorf("%s: fields out of order: %q", at, p.fields)
		}
		for k := range cols {
			if !slices.Contains(p.fields, k) {
				t.Errorf("%s: JSON field %s not among the protobuf fields %q", at, k, p.fields)
			}
		}
		if !p.doc.Deleted && len(cols) != len(p.fields) {
			t.Errorf("%s: fields %q, JSON %v", at, p.fields, j)
		}
		var nulled []string
		for k, name := range p.fields {
			if checkProtoValue(t, at, name, p.doc.Data[k], j[name]) {
				nulled = append(nulled, columnOf(name))
			}
		}
		var changes []string
		for _, c := range p.doc.GetMeta().GetChanges() {
			if c.Change != recordpb.ChangeType_NULLED || c.Reason != recordpb.ChangeReason_SOURCE_SERIALIZATION_ERROR {
				t.Errorf("%s: change %v", at, c)
			}
			changes = append(changes, c.Field)
		}
		if !slices.Equal(changes, nulled) || (len(nulled) == 0) != (p.doc.Meta == nil) {
			t.Errorf("%s: meta %v, want changes for %q", at, p.doc.Meta, nulled)
		}
	}
}

func TestExportProtobuf(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE pt (id int8 PRIMARY KEY, "_id" text, "ｚ" int4, "😀" text, "😁" text, f8 float8, f4 real, num numeric,
		b bool, j jsonb, ai8 int8[], af8 float8[], anum numeric[], a2 int4[], atxt text[], by bytea, ts timestamp, tstz timestamptz,
		tz timetz, d date, iv interval, u uuid, t text)`)
	mustExec(t, conn, `CREATE TABLE other (k text PRIMARY KEY, v int)`)
	mustExec(t, conn, `INSERT INTO pt VALUES
		(1, 'id one', 7, '😀 ok', 'x', 1.5, 0.1, 12.50, true, '{"a": [1, "é"]}', '{1,-9223372036854775808}', '{1.5,-0}', '{1.5,-2}',
		 '{{1,2},{3,NULL}}', '{"a b",NULL,"é\"x"}', '\x00ff10', '2024-01-02 03:04:05.5', '2024-01-02 03:04:05+02', '12:00:00+02',
		 '2024-01-02', '1 day 02:00:00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', E'h\u00e9llo\n"q"'),
		(2, NULL, NULL, NULL, NULL, 'NaN', 'Infinity', 'NaN', NULL, NULL, '{}', '{NaN,Infinity}', '{1,NaN}', '{}', '{}', '\x', 'infinity',
		 '-infinity', '12:00:00+05:30', 'infinity', 'P-1D', NULL, ''),
		(3, NULL, NULL, NULL, NULL, '-Infinity', '-0', 'Infinity', false, 'null', NULL, '{{-Infinity},{2}}', NULL, NULL, NULL, NULL, NULL,
		 NULL, NULL, NULL, NULL, NULL, NULL),
		(4, NULL, NULL, NULL, NULL, NULL, NULL, '-Infinity', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
		(5, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)`)
	mustExec(t, conn, `INSERT INTO other SELECT 'k' || i, i FROM generate_series(1, 3) i`)
	e := startEngine(t, dbURL)
	c, err := client.New(e.URL(), testKey, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// The snapshot in pages of two, of one table and of every table: the
	// protobuf pages of a snapshot, then the JSON pages of the same
	// snapshot, page by page.
	var snap int64
	for _, table := range []string{"pt", ""} {
		var q client.ExportQuery
		q.TableName, q.Limit = table, 2
		var pages []protoPage
		for {
			p := readProtoPage(t, c, "list_snapshot", q)
			pages = append(pages, p)
			if p.end.Snapshot == nil || (p.end.Cursor == nil) == p.end.HasMore {
				t.Fatalf("PageEnd %v", p.end)
			}
			if !p.end.HasMore {
				break
			}
			q.Snapshot, q.Cursor = p.end.Snapshot, p.end.Cursor
		}
		snap = *pages[0].end.Snapshot
		req := client.SnapshotRequest{TableName: table, Snapshot: &snap, Limit: 2}
		var total int
		for i := 0; ; i++ {
			jp, err := c.ListSnapshot(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if i >= len(pages) {
				t.Fatalf("table %q: more JSON pages than protobuf pages", table)
			}
			compareDocs(t, fmt.Sprintf("snapshot of %q, page %d", table, i), pages[i].docs, decodeDocs(t, jp.Values))
			if jp.HasMore != pages[i].end.HasMore || jp.Snapshot != *pages[i].end.Snapshot {
				t.Fatalf("page %d: JSON %+v, protobuf %v", i, jp, pages[i].end)
			}
			total += len(jp.Values)
			if !jp.HasMore {
				if i != len(pages)-1 {
					t.Fatalf("table %q: fewer JSON pages than protobuf pages", table)
				}
				break
			}
			req.Cursor = jp.Cursor
		}
		if want := map[string]int{"pt": 5, "": 8}[table]; total != want || len(pages) < 3 {
			t.Fatalf("table %q: %d documents in %d pages", table, total, len(pages))
		}
	}

	// The fields: the JSON names, in UTF-16 order of the column names (😀
	// before ｚ, unlike Go's order), "_id" as "_id_".
	p := readProtoPage(t, c, "list_snapshot", client.ExportQuery{TableName: "pt", Limit: 1})
	want := []string{"_id_", "a2", "af8", "ai8", "anum", "atxt", "b", "by", "d", "f4", "f8", "id", "iv", "j", "num", "t", "ts", "tstz", "tz", "u", "😀", "😁", "ｚ"}
	if !slices.Equal(p.docs[0].fields, want) || p.docs[0].table != "pt" {
		t.Fatalf("fields %q of %s, want %q", p.docs[0].fields, p.docs[0].table, want)
	}

	// Changes: inserts, updates, a key change, deletes, a TRUNCATE and a
	// column added in the middle, in two tables.
	mustExec(t, conn, `BEGIN; INSERT INTO pt (id, af8, t) VALUES (10, '{NaN}', 'ten'), (11, NULL, 'eleven'); UPDATE pt SET t = 'uno', anum = '{Infinity}' WHERE id = 1; COMMIT`)
	mustExec(t, conn, `UPDATE pt SET id = 20 WHERE id = 2`)
	mustExec(t, conn, `DELETE FROM pt WHERE id IN (3, 4)`)
	mustExec(t, conn, `INSERT INTO other VALUES ('k9', 9)`)
	mustExec(t, conn, `TRUNCATE other`)
	mustExec(t, conn, `ALTER TABLE pt ADD COLUMN extra text`)
	mustExec(t, conn, `INSERT INTO pt (id, extra) VALUES (30, 'added')`)
	mustExec(t, conn, `INSERT INTO other VALUES ('k10', 10)`)
	mustExec(t, conn, `UPDATE pt SET extra = 'later', tz = '23:59:59-11' WHERE id = 30`)
	mustExec(t, conn, `DELETE FROM pt WHERE id = 30`)
	waitDeltas(t, e.URL(), snap, nil, func(d []doc) bool { return len(d) >= 13 })

	for _, table := range []string{"", "pt"} {
		cursor := strconv.FormatInt(snap, 10)
		jcursor := snap
		var tables, fieldSets []string
		for i := 0; ; i++ {
			p := readProtoPage(t, c, "document_deltas", client.ExportQuery{TableName: table, Cursor: &cursor, Limit: 2})
			jp, err := c.DocumentDeltas(ctx, client.DeltasRequest{Cursor: jcursor, TableName: table, Limit: 2})
			if err != nil {
				t.Fatal(err)
			}
			compareDocs(t, fmt.Sprintf("deltas of %q, page %d", table, i), p.docs, decodeDocs(t, jp.Values))
			for _, d := range p.docs {
				if len(tables) == 0 || tables[len(tables)-1] != d.table {
					tables = append(tables, d.table)
				}
				if f := strings.Join(d.fields, ","); !slices.Contains(fieldSets, f) {
					fieldSets = append(fieldSets, f)
				}
			}
			if p.end.Snapshot != nil || p.end.Cursor == nil || p.end.HasMore != jp.HasMore || (jp.HasMore && *p.end.Cursor != strconv.FormatInt(jp.Cursor, 10)) {
				t.Fatalf("page %d: PageEnd %v, JSON cursor %d hasMore %v", i, p.end, jp.Cursor, jp.HasMore)
			}
			if !jp.HasMore {
				if i < 3 {
					t.Fatalf("only %d pages", i+1)
				}
				break
			}
			cursor, jcursor = *p.end.Cursor, jp.Cursor
		}
		// pt's layout before and after the ALTER (and other's).
		if n := map[string]int{"": 3, "pt": 2}[table]; len(fieldSets) != n || !strings.Contains(fieldSets[len(fieldSets)-1], ",extra,f4,") {
			t.Errorf("table %q: layouts %q", table, fieldSets)
		}
		if table == "" && len(tables) < 4 {
			t.Errorf("deltas of every table switched tables only %d times: %q", len(tables), tables)
		}
	}

	// A table without a primary key is read from a held snapshot: the
	// pages read ahead for protobuf are protobuf's.
	mustExec(t, conn, `CREATE TABLE nk (k text, v int)`)
	mustExec(t, conn, `INSERT INTO nk SELECT 'k' || i, i FROM generate_series(1, 5) i`)
	var pdocs []protoDoc
	for q := (client.ExportQuery{TableName: "nk", Limit: 2}); ; {
		p := readProtoPage(t, c, "list_snapshot", q)
		pdocs = append(pdocs, p.docs...)
		if !p.end.HasMore {
			break
		}
		q.Snapshot, q.Cursor = p.end.Snapshot, p.end.Cursor
	}
	var jdocs []map[string]any
	for req := (client.SnapshotRequest{TableName: "nk", Limit: 2}); ; {
		jp, err := c.ListSnapshot(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		jdocs = append(jdocs, decodeDocs(t, jp.Values)...)
		if !jp.HasMore {
			break
		}
		req.Snapshot, req.Cursor = &jp.Snapshot, jp.Cursor
	}
	for i := range min(len(jdocs), len(pdocs)) {
		jdocs[i]["_ts"] = json.Number(strconv.FormatInt(pdocs[i].doc.Ts, 10)) // two snapshots
	}
	compareDocs(t, "snapshot of a table without a key", pdocs, jdocs)

	// Negotiation, and errors before the first byte stay JSON errors.
	for _, c := range []struct {
		params       url.Values
		accept, want string
		status       int
	}{
		{url.Values{"tableName": {"pt"}}, "application/x-protobuf", "application/x-protobuf", 200},
		{url.Values{"tableName": {"pt"}}, "application/json;q=0.5, application/x-protobuf", "application/x-protobuf", 200},
		{url.Values{"tableName": {"pt"}}, "application/json, application/x-protobuf;q=0.5", "application/json", 200},
		{url.Values{"tableName": {"pt"}, "format": {"json"}}, "application/x-protobuf", "application/json", 200},
		{url.Values{"tableName": {"pt"}, "format": {"protobuf"}}, "", "application/x-protobuf", 200},
		{url.Values{"tableName": {"pt"}, "format": {"protobuf"}, "cursor": {"nonsense"}}, "", "application/json", 400},
		{url.Values{"tableName": {"nope"}}, "application/x-protobuf", "application/json", 400},
		{url.Values{"format": {"xml"}}, "", "application/json", 400},
	} {
		req, _ := http.NewRequest(http.MethodGet, e.URL()+"/api/list_snapshot?"+c.params.Encode(), nil)
		req.Header.Set("Authorization", "Convex "+testKey)
		if c.accept != "" {
			req.Header.Set("Accept", c.accept)
		}
		resp, body := roundTrip(t, req)
		if resp.StatusCode != c.status || resp.Header.Get("Content-Type") != c.want {
			t.Errorf("%v Accept %q: %d %s %.200s", c.params, c.accept, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	}
	status, body := sendJSON(t, http.MethodPost, e.URL()+"/api/document_deltas", "Convex "+testKey, fmt.Sprintf(`{"cursor": "%d", "format": "protobuf"}`, snap))
	if status != 200 || len(body) == 0 || body[0] == '{' {
		t.Errorf("POST with format protobuf: %d %.200q", status, body)
	}
}
