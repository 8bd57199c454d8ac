package engine_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/shapelog/shapelog/internal/pgtest"
)

// TestShapeChangesOnly: log=changes_only skips the initial rows, as
// Electric does: the first response is only the snapshot-end, at offset
// 0_0; then the changes after the shape was created arrive.
func TestShapeChangesOnly(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE items (id int PRIMARY KEY, title text)`)
	mustExec(t, conn, `INSERT INTO items VALUES (1, 'one'), (2, 'two')`)
	e := startShapeEngine(t, dbURL)

	resp, body := shapeGet(t, e.URL(), url.Values{"table": {"items"}, "offset": {"-1"}, "log": {"changes_only"}, "secret": {testKey}}, nil)
	var msgs []shapeMsg
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &msgs) != nil || len(msgs) != 1 || msgs[0].Headers["control"] != "snapshot-end" ||
		msgs[0].Headers["xmin"] == nil || resp.Header.Get("Electric-Offset") != "0_0" || resp.Header.Get("Electric-Up-To-Date") != "" {
		t.Fatalf("first changes_only response: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	full, _ := shapeGet(t, e.URL(), url.Values{"table": {"items"}, "offset": {"-1"}, "secret": {testKey}}, nil)
	if full.Header.Get("Electric-Handle") == resp.Header.Get("Electric-Handle") {
		t.Fatal("log=changes_only and log=full share a shape")
	}

	c := newShapeClient(t, e.URL(), url.Values{"table": {"items"}, "log": {"changes_only"}})
	c.sync()
	if len(c.rows) != 0 {
		t.Fatalf("changes_only shape has initial rows: %s", c.describe())
	}
	mustExec(t, conn, `INSERT INTO items VALUES (3, 'three')`)
	c.liveUntil(func(rows map[string]map[string]*string) bool { return len(rows) == 1 })
	if row := c.rows[`"public"."items"/"3"`]; row == nil || *row["title"] != "three" {
		t.Fatalf("rows after changes: %s", c.describe())
	}
}

type subsetBody struct {
	Metadata struct {
		Xmin, Xmax  string
		XipList     []string `json:"xip_list"`
		Mark        *int64   `json:"snapshot_mark"`
		DatabaseLSN string   `json:"database_lsn"`
	}
	Data []shapeMsg
}

func subsetIDs(t *testing.T, b subsetBody) []string {
	t.Helper()
	var ids []string
	for _, m := range b.Data {
		if m.Headers["operation"] != "insert" || m.Headers["snapshot_mark"] == nil || int64(m.Headers["snapshot_mark"].(float64)) != *b.Metadata.Mark {
			t.Fatalf("subset row without its snapshot_mark: %v", m)
		}
		ids = append(ids, *m.Value["id"])
	}
	return ids
}

// TestShapeSubsetSnapshots: subset__* parameters (GET) and the POST body
// answer {metadata, data} with the rows of the shape that match, ordered
// and paged, and the MVCC snapshot they were read at; bad subsets are 400s
// under errors.subset.
func TestShapeSubsetSnapshots(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE items (id int PRIMARY KEY, title text, priority int)`)
	mustExec(t, conn, `INSERT INTO items SELECT g, 'item ' || g, g % 4 FROM generate_series(1, 20) g`)
	e := startShapeEngine(t, dbURL)
	c := newShapeClient(t, e.URL(), url.Values{"table": {"items"}, "log": {"changes_only"}, "where": {"id > 2"}})
	c.sync()

	get := func(params url.Values) (*http.Response, []byte) {
		q := url.Values{"table": {"items"}, "log": {"changes_only"}, "where": {"id > 2"}, "offset": {c.offset}, "handle": {c.handle}, "secret": {testKey}}
		for k, v := range params {
			q[k] = v
		}
		return shapeGet(t, e.URL(), q, nil)
	}
	post := func(body string) (*http.Response, []byte) {
		q := url.Values{"table": {"items"}, "log": {"changes_only"}, "where": {"id > 2"}, "offset": {c.offset}, "handle": {c.handle}, "secret": {testKey}}
		req, _ := http.NewRequest(http.MethodPost, e.URL()+"/v1/shape?"+q.Encode(), strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		return roundTrip(t, req)
	}
	decode := func(resp *http.Response, body []byte) subsetBody {
		t.Helper()
		var b subsetBody
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &b) != nil || b.Metadata.Mark == nil || b.Metadata.Xmin == "" || b.Metadata.Xmax == "" || b.Metadata.XipList == nil {
			t.Fatalf("subset: %d %s", resp.StatusCode, body)
		}
		if _, err := strconv.ParseUint(b.Metadata.DatabaseLSN, 10, 64); err != nil {
			t.Fatalf("database_lsn %q is not a decimal LSN", b.Metadata.DatabaseLSN)
		}
		h := resp.Header
		if h.Get("Electric-Snapshot") != "true" || h.Get("Electric-Handle") != c.handle || h.Get("Electric-Offset") != c.offset || h.Get("Electric-Schema") == "" {
			t.Fatalf("subset headers %v", h)
		}
		return b
	}

	b := decode(get(url.Values{"subset__where": {"priority = $1"}, "subset__params": {`{"1":"3"}`}, "subset__order_by": {"id DESC"}, "subset__limit": {"2"}}))
	if ids := subsetIDs(t, b); !slices.Equal(ids, []string{"19", "15"}) {
		t.Errorf("GET subset ids %v", ids)
	}
	b = decode(get(url.Values{"subset__where": {"id < $1"}, "subset__params[1]": {"5"}}))
	if ids := subsetIDs(t, b); len(ids) != 2 { // the shape's own where keeps 1 and 2 out
		t.Errorf("GET subset with deep-object params: ids %v", ids)
	}
	b = decode(post(`{"where": "priority = $1", "params": {"1": "3"}, "order_by": "id DESC", "limit": 2, "offset": 1}`))
	if ids := subsetIDs(t, b); !slices.Equal(ids, []string{"15", "11"}) {
		t.Errorf("POST subset ids %v", ids)
	}
	b = decode(post(`{"subset": {"order_by": "priority DESC NULLS LAST, id", "limit": 3}}`))
	if ids := subsetIDs(t, b); !slices.Equal(ids, []string{"3", "7", "11"}) {
		t.Errorf("POST nested subset ids %v", ids)
	}

	for _, tc := range []struct {
		name   string
		resp   func() (*http.Response, []byte)
		status int
		want   string
	}{
		{"limit without order_by", func() (*http.Response, []byte) { return get(url.Values{"subset__limit": {"2"}}) }, 400, `"subset":{"order_by":["order_by is required`},
		{"limit zero", func() (*http.Response, []byte) {
			return get(url.Values{"subset__limit": {"0"}, "subset__order_by": {"id"}})
		}, 400, `"limit"`},
		{"bad where", func() (*http.Response, []byte) { return get(url.Values{"subset__where": {"id >"}}) }, 400, `"subset":{"where"`},
		{"unknown order_by column", func() (*http.Response, []byte) { return post(`{"order_by": "nope", "limit": 1}`) }, 400, "unknown reference nope"},
		{"order_by expression", func() (*http.Response, []byte) { return post(`{"order_by": "id + 1"}`) }, 400, "only column names"},
		{"runtime error", func() (*http.Response, []byte) { return post(`{"where": "id / (priority - priority) = 1"}`) }, 400, "division by zero"},
		{"not JSON", func() (*http.Response, []byte) { return post(`{"where": `) }, 400, "Invalid JSON in request body"},
		{"not an object", func() (*http.Response, []byte) { return post(`[1]`) }, 400, "Request body must be a JSON object"},
		{"params not an object", func() (*http.Response, []byte) { return post(`{"where": "id = $1", "params": [1]}`) }, 400, `"params"`},
		{"params twice", func() (*http.Response, []byte) {
			return get(url.Values{"subset__where": {"id = $1"}, "subset__params": {`{"1":"3"}`}, "subset__params[1]": {"4"}})
		}, 400, `"params"`},
	} {
		resp, body := tc.resp()
		if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.want) {
			t.Errorf("%s: %d %s, want %d with %q", tc.name, resp.StatusCode, body, tc.status, tc.want)
		}
	}

	// queryable_columns: subsets may only filter and order by them, and
	// they are the synced columns when columns is not given. They bind the
	// request, not the shape: a client without them that created the same
	// shape (same columns) first does not lift them for one with them.
	open := url.Values{"table": {"items"}, "offset": {"-1"}, "log": {"changes_only"}, "columns": {"id,title"}, "secret": {testKey}, "subset__where": {"priority = 1"}}
	if resp, body := shapeGet(t, e.URL(), open, nil); resp.StatusCode != 200 {
		t.Errorf("subset on a column outside columns, without queryable_columns: %d %s", resp.StatusCode, body)
	}
	q := url.Values{"table": {"items"}, "offset": {"-1"}, "log": {"changes_only"}, "queryable_columns": {"id,title"}, "secret": {testKey}, "subset__where": {"priority = 1"}}
	resp, body := shapeGet(t, e.URL(), q, nil)
	if resp.StatusCode != 400 || !strings.Contains(string(body), "unknown reference priority") {
		t.Errorf("subset on a column outside queryable_columns: %d %s", resp.StatusCode, body)
	}
	q.Set("subset__where", "title = 'item 4'")
	resp, body = shapeGet(t, e.URL(), q, nil)
	var qb subsetBody
	if resp.StatusCode != 200 || json.Unmarshal(body, &qb) != nil || len(qb.Data) != 1 || qb.Data[0].Value["priority"] != nil {
		t.Errorf("subset within queryable_columns: %d %s", resp.StatusCode, body)
	}
}

// TestSubsetSnapshotMetadata: a transaction in flight while a subset is
// read is invisible by the subset's metadata, and its change, when it
// reaches the log, carries that transaction id and an lsn at or past the
// subset's database_lsn: the client applies it rather than dropping it.
func TestSubsetSnapshotMetadata(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE items (id int PRIMARY KEY, title text)`)
	mustExec(t, conn, `INSERT INTO items VALUES (1, 'one'), (2, 'two')`)
	e := startShapeEngine(t, dbURL)
	c := newShapeClient(t, e.URL(), url.Values{"table": {"items"}, "log": {"changes_only"}})
	c.sync()

	writer := connect(t, dbURL)
	mustExec(t, writer, `BEGIN`)
	mustExec(t, writer, `UPDATE items SET title = 'uno' WHERE id = 1`)
	var xid string
	if err := writer.QueryRow(context.Background(), `SELECT pg_current_xact_id()::text`).Scan(&xid); err != nil {
		t.Fatal(err)
	}
	resp, body := shapeGet(t, e.URL(), url.Values{"table": {"items"}, "log": {"changes_only"}, "offset": {c.offset}, "handle": {c.handle},
		"secret": {testKey}, "subset__order_by": {"id"}, "subset__limit": {"10"}}, nil)
	var b subsetBody
	if resp.StatusCode != 200 || json.Unmarshal(body, &b) != nil {
		t.Fatalf("subset: %d %s", resp.StatusCode, body)
	}
	// Electric's client: visible if xid < xmin || (xid < xmax && xid not in xip_list).
	n := func(s string) uint64 { v, _ := strconv.ParseUint(s, 10, 64); return v }
	visible := n(xid) < n(b.Metadata.Xmin) || (n(xid) < n(b.Metadata.Xmax) && !slices.Contains(b.Metadata.XipList, xid))
	if visible || len(b.Data) != 2 || *b.Data[0].Value["title"] != "one" {
		t.Fatalf("subset during transaction %s: %s", xid, body)
	}
	for _, m := range b.Data { // as the client merges a subset into its rows
		c.rows[m.Key] = m.Value
	}
	mustExec(t, writer, `COMMIT`)
	msgs := c.liveUntil(func(rows map[string]map[string]*string) bool { return *rows[`"public"."items"/"1"`]["title"] == "uno" })
	var txid string
	for _, m := range msgs {
		if m.Key != "" {
			txid = strconv.FormatFloat(m.Headers["txids"].([]any)[0].(float64), 'f', -1, 64)
		}
	}
	if txid != xid {
		t.Fatalf("the change's txids %s, want the transaction in xip_list %s", txid, xid)
	}
	lsn, _ := strconv.ParseUint(b.Metadata.DatabaseLSN, 10, 64)
	for _, m := range msgs {
		if m.Key != "" {
			if l, _ := strconv.ParseUint(m.Headers["lsn"].(string), 10, 64); l < lsn {
				t.Fatalf("a change committed after the subset has lsn %d below its database_lsn %d", l, lsn)
			}
		}
	}
}
