package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strconv"
	"testing"
)

// decodeSnapshotCursor is the stateless part of snapshotPosition and
// legacyPosition: a list_snapshot cursor as the engine reads it, before it
// is checked against the log and the catalog. legacy reports an old
// cursor, which is not continued but started over.
func decodeSnapshotCursor(raw string) (cur *snapshotCursor, legacy, ok bool) {
	var version struct {
		V int `json:"v"`
	}
	if json.Unmarshal([]byte(raw), &version) != nil {
		return nil, false, false
	}
	if version.V != cursorVersion {
		var old legacyCursor
		err := json.Unmarshal([]byte(raw), &old)
		return nil, true, err == nil && old.Session != "" && old.Table >= 0 && (old.After == "" || validPosition(old.After))
	}
	cur = &snapshotCursor{}
	if json.Unmarshal([]byte(raw), cur) != nil || cur.Table == "" || (cur.After != "" && !validPosition(cur.After)) {
		return nil, false, false
	}
	if len(cur.Key) == 0 {
		cur.Key = nil // "key":[] is no key, as omitted
	}
	return cur, false, true
}

// decodeDeltasCursor is how documentDeltas reads its cursor.
func decodeDeltasCursor(raw string) (int64, bool) {
	c, err := strconv.ParseInt(raw, 10, 64)
	return c, err == nil && c >= 0
}

// FuzzCursors passes arbitrary cursors through parseExportArgs (query
// string and JSON body) and the cursor decoding of list_snapshot and
// document_deltas. Nothing may panic; a list_snapshot cursor that decodes,
// encoded as listSnapshot encodes it into a response and read back from
// it as a client would, decodes to an equal cursor; a document_deltas
// cursor re-encodes to one that decodes equal.
func FuzzCursors(f *testing.F) {
	for _, s := range []string{
		`{"v":2,"ts":1733000000000000000,"table":"public.items","oid":16384,"key":["41","x\"y"]}`,
		`{"v":2,"ts":5,"table":"t","oid":1,"all":true,"held":"00000003-00000002-1","after":"16390:(12,7)"}`,
		`{"v":2,"ts":5,"table":"t","after":"(4294967296,1)"}`,
		`{"v":2,"table":"` + "\xff" + `","key":[null,"\ud800"]}`,
		`{"snapshot":"00000003-00000002-1","table":0,"after":"(0,1)"}`,
		`{"v":1}`, `{"v":"2"}`, `[]`, `null`, `{"v":2,"v":3,"table":"t"}`,
		`1733000000000000000`, `0`, `-1`, `+5`, `007`, `9223372036854775808`, ``,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		// The query string.
		q := httptest.NewRequest(http.MethodGet, "/api/list_snapshot?"+url.Values{"cursor": {raw}}.Encode(), nil)
		args, ae := parseExportArgs(q)
		if ae != nil || (raw == "") != (args.Cursor == nil) || (args.Cursor != nil && *args.Cursor != raw) {
			t.Fatalf("%q from the query string: %+v, %v", raw, args, ae)
		}
		// A JSON body.
		body, _ := json.Marshal(map[string]string{"cursor": raw})
		p := httptest.NewRequest(http.MethodPost, "/api/list_snapshot", bytes.NewReader(body))
		p.Header.Set("Content-Type", "application/json")
		if _, ae := parseExportArgs(p); ae != nil {
			t.Fatalf("%q in a body: %v", raw, ae)
		}

		if cur, legacy, ok := decodeSnapshotCursor(raw); ok && !legacy {
			b, err := json.Marshal(cur)
			if err != nil {
				t.Fatalf("%+v: %v", cur, err)
			}
			resp := append(append([]byte(`{"cursor":`), appendString(nil, string(b))...), '}')
			var page struct {
				Cursor string `json:"cursor"`
			}
			if err := json.Unmarshal(resp, &page); err != nil || page.Cursor != string(b) {
				t.Fatalf("cursor %s in a response %s reads back as %q, %v", b, resp, page.Cursor, err)
			}
			again, legacy, ok := decodeSnapshotCursor(page.Cursor)
			if !ok || legacy || !reflect.DeepEqual(again, cur) {
				t.Fatalf("%q decodes to %+v, encodes to %s, which decodes to %+v (%v)", raw, cur, b, again, ok)
			}
		}

		if c, ok := decodeDeltasCursor(raw); ok {
			again, ok := decodeDeltasCursor(string(strconv.AppendInt(nil, c, 10)))
			if !ok || again != c {
				t.Fatalf("document_deltas cursor %q = %d re-encodes to %d (%v)", raw, c, again, ok)
			}
		}
	})
}
