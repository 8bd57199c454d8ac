package engine_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shapelog/shapelog/engine"
	"github.com/shapelog/shapelog/internal/pgtest"
)

// shapeMsg is one message of a shape response.
type shapeMsg struct {
	Key      string             `json:"key"`
	Value    map[string]*string `json:"value"`
	OldValue map[string]*string `json:"old_value"`
	Headers  map[string]any     `json:"headers"`
}

// shapeClient follows a shape the way Electric's TS client does.
type shapeClient struct {
	t      *testing.T
	base   string
	params url.Values
	handle string
	offset string
	cursor string
	rows   map[string]map[string]*string
	// refetched counts 409s.
	refetched int
	lastResp  *http.Response
}

func newShapeClient(t *testing.T, base string, params url.Values) *shapeClient {
	if params.Get("secret") == "" {
		params.Set("secret", testKey)
	}
	return &shapeClient{t: t, base: base, params: params, offset: "-1", rows: map[string]map[string]*string{}}
}

// shapeGet does one raw request.
func shapeGet(t *testing.T, base string, q url.Values, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/v1/shape?"+q.Encode(), nil)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// step makes one request (live or not) and applies what it returns. It
// reports whether the response ended with up-to-date.
func (c *shapeClient) step(live bool) ([]shapeMsg, bool) {
	c.t.Helper()
	q := url.Values{}
	for k, v := range c.params {
		q[k] = v
	}
	q.Set("offset", c.offset)
	if c.handle != "" {
		q.Set("handle", c.handle)
	}
	if live {
		q.Set("live", "true")
		q.Set("cursor", c.cursor)
	}
	resp, body := shapeGet(c.t, c.base, q, nil)
	c.lastResp = resp
	if resp.StatusCode == http.StatusConflict {
		c.refetched++
		c.handle, c.offset, c.rows = resp.Header.Get("electric-handle"), "-1", map[string]map[string]*string{}
		if c.handle == "" {
			c.t.Fatalf("409 without electric-handle: %s", body)
		}
		return nil, false
	}
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("GET %s: %d %s", q.Encode(), resp.StatusCode, body)
	}
	var msgs []shapeMsg
	if err := json.Unmarshal(body, &msgs); err != nil {
		c.t.Fatalf("decoding %s: %v", body, err)
	}
	for _, h := range []string{"electric-handle", "electric-offset"} {
		if resp.Header.Get(h) == "" {
			c.t.Fatalf("response without %s", h)
		}
	}
	if !live && resp.Header.Get("electric-schema") == "" {
		c.t.Fatal("non-live response without electric-schema")
	}
	if live && resp.Header.Get("electric-cursor") == "" {
		c.t.Fatal("live response without electric-cursor")
	}
	c.handle, c.offset, c.cursor = resp.Header.Get("electric-handle"), resp.Header.Get("electric-offset"), resp.Header.Get("electric-cursor")
	upToDate := false
	for _, m := range msgs {
		if m.Key == "" {
			if m.Headers["control"] == "up-to-date" {
				upToDate = true
			}
			continue
		}
		switch m.Headers["operation"] {
		case "insert":
			c.rows[m.Key] = m.Value
		case "update":
			row := c.rows[m.Key]
			if row == nil {
				c.t.Fatalf("update of unknown row %s", m.Key)
			}
			for k, v := range m.Value {
				row[k] = v
			}
		case "delete":
			delete(c.rows, m.Key)
		}
	}
	if _, ok := resp.Header["Electric-Up-To-Date"]; ok != upToDate {
		c.t.Fatalf("electric-up-to-date header %v but body up-to-date %v", ok, upToDate)
	}
	return msgs, upToDate
}

// sync requests until up-to-date.
func (c *shapeClient) sync() []shapeMsg {
	c.t.Helper()
	var all []shapeMsg
	for i := 0; i < 1000; i++ {
		msgs, done := c.step(false)
		all = append(all, msgs...)
		if done {
			return all
		}
	}
	c.t.Fatal("shape never got up to date")
	return nil
}

// liveUntil makes live requests until pred holds on the rows.
func (c *shapeClient) liveUntil(pred func(rows map[string]map[string]*string) bool) []shapeMsg {
	c.t.Helper()
	var all []shapeMsg
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c.offset == "-1" {
			all = append(all, c.sync()...)
		} else {
			msgs, _ := c.step(true)
			all = append(all, msgs...)
		}
		if pred(c.rows) {
			return all
		}
	}
	c.t.Fatalf("live shape never reached the expected state; rows: %v", c.describe())
	return nil
}

func (c *shapeClient) describe() string {
	b, _ := json.Marshal(c.rows)
	return string(b)
}

func str(s *string) string {
	if s == nil {
		return "<null>"
	}
	return *s
}

func startShapeEngine(t *testing.T, dbURL string, mods ...func(*engine.Config)) *engine.Engine {
	t.Helper()
	fast := func(c *engine.Config) { c.Shape.LongPoll = 2 * time.Second }
	return startEngine(t, dbURL, append([]func(*engine.Config){fast}, mods...)...)
}

func TestShapeSyncAndLiveChanges(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE items (id int PRIMARY KEY, title text, done bool, tags text[], meta jsonb, big text, n numeric(10,2), at timestamptz)`)
	mustExec(t, conn, `INSERT INTO items VALUES (1, 'a/b "q"', true, '{x,y}', '{"k": 1}', repeat('z', 10000), 1.5, '2024-01-02 03:04:05+00'), (2, NULL, false, NULL, NULL, NULL, NULL, NULL)`)
	e := startShapeEngine(t, dbURL)

	c := newShapeClient(t, e.URL(), url.Values{"table": {"items"}})
	q := url.Values{"table": {"items"}, "offset": {"-1"}, "secret": {testKey}}
	resp, body := shapeGet(t, e.URL(), q, nil)
	if resp.StatusCode != 200 || resp.Header.Get("electric-offset") != "0_0" {
		t.Fatalf("initial: %d offset %q %s", resp.StatusCode, resp.Header.Get("electric-offset"), body)
	}
	if got := resp.Header.Get("cache-control"); got != "public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746" {
		t.Errorf("initial cache-control %q", got)
	}
	if _, ok := resp.Header["Electric-Up-To-Date"]; ok {
		t.Error("the offset=-1 response must not be up-to-date")
	}
	if !strings.Contains(resp.Header.Get("access-control-expose-headers"), "electric-handle") {
		t.Errorf("CORS expose list missing: %v", resp.Header)
	}
	var schema map[string]map[string]any
	if err := json.Unmarshal([]byte(resp.Header.Get("electric-schema")), &schema); err != nil {
		t.Fatal(err)
	}
	if schema["id"]["type"] != "int4" || schema["id"]["pk_index"] != float64(0) || schema["id"]["not_null"] != true {
		t.Errorf("schema of id: %v", schema["id"])
	}
	if schema["tags"]["type"] != "text" || schema["tags"]["dims"] != float64(1) {
		t.Errorf("schema of tags: %v", schema["tags"])
	}
	if schema["n"]["precision"] != float64(10) || schema["n"]["scale"] != float64(2) {
		t.Errorf("schema of n: %v", schema["n"])
	}
	if !strings.Contains(string(body), `"control":"snapshot-end"`) {
		t.Errorf("snapshot without snapshot-end: %s", body)
	}

	c.sync()
	row := c.rows[`"public"."items"/"1"`]
	if row == nil || str(row["title"]) != `a/b "q"` || str(row["done"]) != "t" || str(row["tags"]) != "{x,y}" ||
		str(row["meta"]) != `{"k": 1}` || len(str(row["big"])) != 10000 || str(row["n"]) != "1.50" || str(row["at"]) != "2024-01-02 03:04:05+00" {
		t.Fatalf("row 1: %s", c.describe())
	}
	if r2 := c.rows[`"public"."items"/"2"`]; r2 == nil || r2["title"] != nil {
		t.Fatalf("row 2: %s", c.describe())
	}
	if c.offset != "0_inf" {
		t.Errorf("offset after an unchanged snapshot: %q, want 0_inf", c.offset)
	}

	// One live request waits, and wakes with the next transaction.
	var msgs []shapeMsg
	done := make(chan struct{})
	go func() {
		defer close(done)
		msgs, _ = c.step(true)
	}()
	time.Sleep(200 * time.Millisecond)
	mustExec(t, conn, `BEGIN; INSERT INTO items (id, title) VALUES (3, 'three'); UPDATE items SET title = 'uno' WHERE id = 1; COMMIT`)
	<-done
	var changes []shapeMsg
	for _, m := range msgs {
		if m.Key != "" {
			changes = append(changes, m)
		}
	}
	if len(changes) != 2 {
		t.Fatalf("live response: %+v", msgs)
	}
	ins, upd := changes[0], changes[1]
	if ins.Headers["operation"] != "insert" || upd.Headers["operation"] != "update" || ins.Headers["last"] != nil || upd.Headers["last"] != true {
		t.Errorf("headers: %v / %v", ins.Headers, upd.Headers)
	}
	if lsn, _ := ins.Headers["lsn"].(string); lsn == "" || ins.Headers["txids"] == nil || ins.Headers["op_position"] == nil {
		t.Errorf("insert headers: %v", ins.Headers)
	}
	// replica=default: an update carries the key and the changed columns.
	if len(upd.Value) != 2 || str(upd.Value["title"]) != "uno" || str(upd.Value["id"]) != "1" {
		t.Errorf("update value: %v", upd.Value)
	}
	if !strings.HasSuffix(c.offset, "_2") || strings.HasPrefix(c.offset, "0_") {
		t.Errorf("offset after the transaction: %q", c.offset)
	}

	// A key change is a delete and an insert; a delete carries the key.
	mustExec(t, conn, `UPDATE items SET id = 30 WHERE id = 3`)
	mustExec(t, conn, `DELETE FROM items WHERE id = 2`)
	all := c.liveUntil(func(rows map[string]map[string]*string) bool {
		return rows[`"public"."items"/"30"`] != nil && rows[`"public"."items"/"2"`] == nil
	})
	var sawTo, sawFrom bool
	for _, m := range all {
		if m.Headers["key_change_to"] == `"public"."items"/"30"` {
			sawTo = true
		}
		if m.Headers["key_change_from"] == `"public"."items"/"3"` {
			sawFrom = true
		}
		if m.Headers["operation"] == "delete" && m.Key == `"public"."items"/"2"` && len(m.Value) != 1 {
			t.Errorf("delete value: %v", m.Value)
		}
	}
	if !sawTo || !sawFrom || c.rows[`"public"."items"/"3"`] != nil {
		t.Errorf("key change: %+v", all)
	}
	if str(c.rows[`"public"."items"/"30"`]["title"]) != "three" {
		t.Errorf("row 30: %s", c.describe())
	}

	// A live request with nothing to say times out with up-to-date.
	start := time.Now()
	msgs, upToDate := c.step(true)
	if !upToDate || len(msgs) != 1 || time.Since(start) < time.Second {
		t.Errorf("idle live request: %v after %v", msgs, time.Since(start))
	}
	if c.lastResp.Header.Get("electric-has-data") != "false" || c.lastResp.Header.Get("cache-control") != "public, max-age=5, stale-while-revalidate=5" {
		t.Errorf("idle live headers: %v", c.lastResp.Header)
	}

	// A second client starting now sees the same rows.
	c2 := newShapeClient(t, e.URL(), url.Values{"table": {"items"}})
	c2.sync()
	if fmt.Sprint(len(c2.rows)) != fmt.Sprint(len(c.rows)) || c2.handle != c.handle {
		t.Errorf("second client: %s vs %s", c2.describe(), c.describe())
	}
}

func TestShapeReplicaFullAndColumns(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE "Mixed" ("Id" int PRIMARY KEY, "Status-Check" text, secret text, n int)`)
	mustExec(t, conn, `INSERT INTO "Mixed" VALUES (1, 'ok', 's', 1)`)
	e := startShapeEngine(t, dbURL)

	c := newShapeClient(t, e.URL(), url.Values{"table": {`"Mixed"`}, "columns": {`"Id","Status-Check",n`}, "replica": {"full"}})
	c.sync()
	row := c.rows[`"public"."Mixed"/"1"`]
	if row == nil || len(row) != 3 || str(row["Status-Check"]) != "ok" {
		t.Fatalf("rows: %s", c.describe())
	}
	mustExec(t, conn, `UPDATE "Mixed" SET secret = 'hidden'`) // no selected column changes: no message
	mustExec(t, conn, `UPDATE "Mixed" SET n = 2`)
	msgs := c.liveUntil(func(rows map[string]map[string]*string) bool { return str(rows[`"public"."Mixed"/"1"`]["n"]) == "2" })
	for _, m := range msgs {
		if m.Key == "" {
			continue
		}
		if len(m.Value) != 3 || str(m.OldValue["n"]) != "1" || len(m.OldValue) != 1 {
			t.Errorf("replica=full update: value %v old %v", m.Value, m.OldValue)
		}
	}

	for _, tc := range []struct {
		params      url.Values
		field, want string
	}{
		{url.Values{"table": {"Mixed"}}, "table", `Table "public"."mixed" does not exist`},
		{url.Values{"table": {`"Mixed"`}, "columns": {"n"}}, "columns", "missing: Id"},
		{url.Values{"table": {`"Mixed"`}, "columns": {`"Id",nope`}}, "columns", "not found on the table: nope"},
		{url.Values{"table": {`a.b.c`}}, "table", "Invalid table name"},
	} {
		tc.params.Set("offset", "-1")
		tc.params.Set("secret", testKey)
		resp, body := shapeGet(t, e.URL(), tc.params, nil)
		var e struct {
			Message string
			Errors  map[string][]string
		}
		_ = json.Unmarshal(body, &e)
		if resp.StatusCode != 400 || len(e.Errors[tc.field]) == 0 || !strings.Contains(e.Errors[tc.field][0], tc.want) {
			t.Errorf("%v: %d %s", tc.params, resp.StatusCode, body)
		}
	}
}

func TestShapeRequestRules(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	mustExec(t, conn, `INSERT INTO t VALUES (1, 'a')`)
	e := startShapeEngine(t, dbURL, func(c *engine.Config) { c.Shape.AllowDelete = true })
	base := e.URL()
	bad := func(q url.Values, field, want string) {
		t.Helper()
		if q.Get("secret") == "" {
			q.Set("secret", testKey)
		}
		resp, body := shapeGet(t, base, q, nil)
		if resp.StatusCode != 400 || !strings.Contains(string(body), want) || !strings.Contains(string(body), `"`+field+`"`) {
			t.Errorf("%v: %d %s", q, resp.StatusCode, body)
		}
		if resp.Header.Get("cache-control") != "no-store" {
			t.Errorf("400 cache-control %q", resp.Header.Get("cache-control"))
		}
	}
	bad(url.Values{"table": {"t"}}, "offset", "can't be blank")
	bad(url.Values{"table": {"t"}, "offset": {"abc"}}, "offset", "has invalid format")
	bad(url.Values{"table": {"t"}, "offset": {"0_0"}}, "handle", "can't be blank when offset != -1")
	bad(url.Values{"table": {"t"}, "offset": {"-1"}, "live": {"true"}}, "live", "can't be true when offset == -1")
	bad(url.Values{"table": {"t"}, "offset": {"now"}, "live": {""}}, "live", "offset is 'now'")
	bad(url.Values{"table": {"t"}, "offset": {"-1"}, "replica": {"half"}}, "replica", "invalid")
	bad(url.Values{"table": {"t"}, "offset": {"0_inf"}, "handle": {"h"}, "live_sse": {"true"}}, "live_sse", "can't be true unless live is also true")
	bad(url.Values{"table": {"t"}, "offset": {"0_inf"}, "handle": {"h"}, "experimental_live_sse": {""}}, "live_sse", "can't be true unless live is also true")
	bad(url.Values{"table": {"t"}, "offset": {"-1"}, "log": {"some"}}, "log", "is invalid")

	// Auth.
	resp, body := shapeGet(t, base, url.Values{"table": {"t"}, "offset": {"-1"}, "secret": {"wrong"}}, nil)
	if resp.StatusCode != 401 || !strings.Contains(string(body), "Unauthorized - Invalid API secret") {
		t.Errorf("wrong secret: %d %s", resp.StatusCode, body)
	}
	// Unknown parameters are ignored; the handle is dropped with offset=-1.
	resp, _ = shapeGet(t, base, url.Values{"table": {"t"}, "offset": {"-1"}, "secret": {testKey}, "log": {"full"}, "cache-buster": {"x"}, "handle": {"stale"}}, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("unknown params: %d", resp.StatusCode)
	}
	handle := resp.Header.Get("electric-handle")
	// A closed chunk is cacheable and revalidates with its etag.
	q := url.Values{"table": {"t"}, "offset": {"-1"}, "secret": {testKey}}
	resp, _ = shapeGet(t, base, q, nil)
	etag := resp.Header.Get("etag")
	resp, body = shapeGet(t, base, q, http.Header{"If-None-Match": {etag}})
	if resp.StatusCode != 304 || len(body) != 0 {
		t.Errorf("If-None-Match: %d %q (etag %s)", resp.StatusCode, body, etag)
	}
	// Unknown handle: 409 with the shape's handle.
	resp, body = shapeGet(t, base, url.Values{"table": {"t"}, "offset": {"0_0"}, "handle": {"123-456"}, "secret": {testKey}}, nil)
	if resp.StatusCode != 409 || resp.Header.Get("electric-handle") != handle || string(body) != `[{"headers":{"control":"must-refetch"}}]` {
		t.Errorf("unknown handle: %d %s %v", resp.StatusCode, body, resp.Header)
	}
	// offset=now: no data, the latest offset.
	resp, body = shapeGet(t, base, url.Values{"table": {"t"}, "offset": {"now"}, "secret": {testKey}}, nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), "up-to-date") || strings.Contains(string(body), `"key"`) || resp.Header.Get("electric-offset") == "" {
		t.Errorf("offset=now: %d %s", resp.StatusCode, body)
	}
	// Out of bounds.
	resp, body = shapeGet(t, base, url.Values{"table": {"t"}, "offset": {"99999999999_0"}, "handle": {handle}, "secret": {testKey}}, nil)
	if resp.StatusCode != 400 || !strings.Contains(string(body), "out of bounds") {
		t.Errorf("out of bounds: %d %s", resp.StatusCode, body)
	}
	// CORS preflight.
	req, _ := http.NewRequest(http.MethodOptions, base+"/v1/shape", nil)
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set("Access-Control-Request-Headers", "if-none-match, x-other")
	presp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	presp.Body.Close()
	if presp.StatusCode != 204 || presp.Header.Get("access-control-allow-origin") != "https://app.example" || presp.Header.Get("access-control-allow-headers") != "if-none-match" {
		t.Errorf("OPTIONS: %d %v", presp.StatusCode, presp.Header)
	}
	// A browser may POST a subset snapshot's JSON body.
	req, _ = http.NewRequest(http.MethodOptions, base+"/v1/shape?table=t", nil)
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "content-type")
	if presp, _ := roundTrip(t, req); presp.Header.Get("access-control-allow-headers") != "content-type" || !strings.Contains(presp.Header.Get("access-control-allow-methods"), "POST") {
		t.Errorf("OPTIONS for a POST with a JSON body: %v", presp.Header)
	}
	// DELETE names its database as source_id (Electric's spec) or database_id.
	req, _ = http.NewRequest(http.MethodDelete, base+"/v1/shape?secret="+testKey+"&handle="+handle+"&source_id=nope", nil)
	if dresp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else if dresp.Body.Close(); dresp.StatusCode != 404 {
		t.Fatalf("DELETE with an unknown source_id: %d", dresp.StatusCode)
	}
	// DELETE: the shape's clients start over with a new handle.
	req, _ = http.NewRequest(http.MethodDelete, base+"/v1/shape?secret="+testKey+"&handle="+handle+"&source_id=default", nil)
	dresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	dresp.Body.Close()
	if dresp.StatusCode != 202 {
		t.Fatalf("DELETE: %d", dresp.StatusCode)
	}
	resp, _ = shapeGet(t, base, url.Values{"table": {"t"}, "offset": {"0_inf"}, "handle": {handle}, "secret": {testKey}}, nil)
	if resp.StatusCode != 409 || resp.Header.Get("electric-handle") == handle || resp.Header.Get("electric-handle") == "" {
		t.Errorf("after DELETE: %d %v", resp.StatusCode, resp.Header)
	}
}

func TestShapeDeleteDisabled(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	e := startShapeEngine(t, dbURL)
	req, _ := http.NewRequest(http.MethodDelete, e.URL()+"/v1/shape?secret="+testKey+"&handle=1-2", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("DELETE when disabled: %d", resp.StatusCode)
	}
}

func TestShapeTruncateAndSchemaChangeForceRefetch(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	mustExec(t, conn, `INSERT INTO t VALUES (1, 'a'), (2, 'b')`)
	e := startShapeEngine(t, dbURL)
	c := newShapeClient(t, e.URL(), url.Values{"table": {"t"}})
	c.sync()
	first := c.handle
	mustExec(t, conn, `TRUNCATE t`)
	mustExec(t, conn, `INSERT INTO t VALUES (3, 'c')`)
	c.liveUntil(func(rows map[string]map[string]*string) bool {
		return len(rows) == 1 && rows[`"public"."t"/"3"`] != nil
	})
	if c.refetched == 0 || c.handle == first {
		t.Errorf("TRUNCATE did not rotate the handle (%d refetches)", c.refetched)
	}
	second := c.handle
	mustExec(t, conn, `ALTER TABLE t ADD COLUMN w int DEFAULT 7`)
	mustExec(t, conn, `INSERT INTO t VALUES (4, 'd', 8)`)
	c.liveUntil(func(rows map[string]map[string]*string) bool { return str(rows[`"public"."t"/"4"`]["w"]) == "8" })
	if c.handle == second || str(c.rows[`"public"."t"/"3"`]["w"]) != "7" {
		t.Errorf("schema change: handle %s (was %s), rows %s", c.handle, second, c.describe())
	}
}

func TestShapeChunksAndManyWaiters(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	mustExec(t, conn, `INSERT INTO t SELECT g, repeat('v', 50) FROM generate_series(1, 300) g`)
	e := startShapeEngine(t, dbURL, func(c *engine.Config) { c.ShapeChunkBytes = 2000 })
	c := newShapeClient(t, e.URL(), url.Values{"table": {"t"}})
	offsets := map[string]bool{}
	for i := 0; i < 1000; i++ {
		_, done := c.step(false)
		offsets[c.offset] = true
		if done {
			break
		}
	}
	if len(c.rows) != 300 || !offsets["0_5"] {
		t.Fatalf("chunked snapshot: %d rows, offsets %v", len(c.rows), offsets)
	}
	// A big transaction is served in chunks too, and the result is exact.
	mustExec(t, conn, `UPDATE t SET v = repeat('w', 50) || id WHERE id % 2 = 0`)
	mustExec(t, conn, `DELETE FROM t WHERE id > 250`)
	c.liveUntil(func(rows map[string]map[string]*string) bool {
		return len(rows) == 250 && str(rows[`"public"."t"/"250"`]["v"]) == strings.Repeat("w", 50)+"250"
	})

	// Many live clients on one shape all wake on one write.
	const waiters = 200
	var wg sync.WaitGroup
	got := make(chan int, waiters)
	for i := 0; i < waiters; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := url.Values{"table": {"t"}, "offset": {c.offset}, "handle": {c.handle}, "live": {"true"}, "secret": {testKey}}
			resp, body := shapeGet(t, e.URL(), q, nil)
			if resp.StatusCode == 200 && strings.Contains(string(body), `/\"999\"`) {
				got <- 1
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	mustExec(t, conn, `INSERT INTO t VALUES (999, 'x')`)
	wg.Wait()
	close(got)
	n := 0
	for range got {
		n++
	}
	if n != waiters {
		t.Errorf("%d of %d waiters saw the insert", n, waiters)
	}
}

func TestShapeOnTableOutsideTheSelection(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	e := startShapeEngine(t, dbURL)
	mustExec(t, conn, `CREATE SCHEMA other`)
	mustExec(t, conn, `CREATE TABLE other.later (id int PRIMARY KEY, v text)`)
	mustExec(t, conn, `INSERT INTO other.later VALUES (1, 'a')`)
	c := newShapeClient(t, e.URL(), url.Values{"table": {"other.later"}})
	c.sync()
	if len(c.rows) != 1 {
		t.Fatalf("rows: %s", c.describe())
	}
	mustExec(t, conn, `INSERT INTO other.later VALUES (2, 'b')`)
	c.liveUntil(func(rows map[string]map[string]*string) bool { return len(rows) == 2 })
	var ident string
	if err := conn.QueryRow(t.Context(), `SELECT relreplident::text FROM pg_class WHERE oid = 'other.later'::regclass`).Scan(&ident); err != nil || ident != "f" {
		t.Errorf("replica identity %q %v", ident, err)
	}
	// The Convex export still lists only the selected tables.
	r := get(t, e.URL(), "/api/json_schemas", nil)
	if strings.Contains(string(r.Body), "later") {
		t.Errorf("json_schemas lists a shape-only table: %s", r.Body)
	}
}

func TestShapeSurvivesRestart(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	mustExec(t, conn, `INSERT INTO t VALUES (1, 'a')`)
	dir := t.TempDir()
	storage := func(c *engine.Config) { c.StorageDir = dir }
	e := startShapeEngine(t, dbURL, storage)
	c := newShapeClient(t, e.URL(), url.Values{"table": {"t"}})
	c.sync()
	mustExec(t, conn, `INSERT INTO t VALUES (2, 'b')`)
	c.liveUntil(func(rows map[string]map[string]*string) bool { return len(rows) == 2 })
	e.Close(5 * time.Second)
	mustExec(t, conn, `INSERT INTO t VALUES (3, 'c')`)
	e = startShapeEngine(t, dbURL, storage)
	c.base = e.URL()
	handle := c.handle
	c.liveUntil(func(rows map[string]map[string]*string) bool { return len(rows) == 3 })
	if c.handle != handle || c.refetched != 0 {
		t.Errorf("restart rotated the shape: %s → %s (%d refetches)", handle, c.handle, c.refetched)
	}
}

func TestShapeWhereMovesRowsInAndOut(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE issues (id int PRIMARY KEY, title text, priority int)`)
	mustExec(t, conn, `INSERT INTO issues VALUES (1, 'low', 1), (2, 'high', 5), (3, 'mid', 3)`)
	e := startShapeEngine(t, dbURL)
	params := url.Values{"table": {"issues"}, "where": {"priority > $1"}, "params[1]": {"2"}}
	c := newShapeClient(t, e.URL(), params)
	c.sync()
	if len(c.rows) != 2 || c.rows[`"public"."issues"/"1"`] != nil {
		t.Fatalf("filtered snapshot: %s", c.describe())
	}
	mustExec(t, conn, `UPDATE issues SET priority = 9 WHERE id = 1`) // moves in: an insert
	mustExec(t, conn, `UPDATE issues SET priority = 0 WHERE id = 2`) // moves out: a delete
	mustExec(t, conn, `UPDATE issues SET title = 'still out' WHERE id = 2`)
	mustExec(t, conn, `INSERT INTO issues VALUES (4, 'never in', 0)`)
	msgs := c.liveUntil(func(rows map[string]map[string]*string) bool {
		return rows[`"public"."issues"/"1"`] != nil && rows[`"public"."issues"/"2"`] == nil
	})
	ops := map[string]string{}
	for _, m := range msgs {
		if m.Key != "" {
			ops[m.Key] += fmt.Sprint(m.Headers["operation"]) + " "
		}
	}
	if ops[`"public"."issues"/"1"`] != "insert " || ops[`"public"."issues"/"2"`] != "delete " || ops[`"public"."issues"/"4"`] != "" {
		t.Errorf("moves: %v", ops)
	}
	if got := str(c.rows[`"public"."issues"/"1"`]["title"]); got != "low" {
		t.Errorf("moved-in row carries the whole row: title %q", got)
	}
	// The same definition shares the handle; SQL in where is rejected.
	c2 := newShapeClient(t, e.URL(), url.Values{"table": {"issues"}, "where": {"priority > $1"}, "params[1]": {"2"}})
	c2.sync()
	if c2.handle != c.handle {
		t.Errorf("identical shapes got handles %s and %s", c.handle, c2.handle)
	}
	for _, w := range []string{"1=1; DROP TABLE issues", "nope > 1", "now() > '2020-01-01'"} {
		resp, body := shapeGet(t, e.URL(), url.Values{"table": {"issues"}, "offset": {"-1"}, "where": {w}, "secret": {testKey}}, nil)
		if resp.StatusCode != 400 || !strings.Contains(string(body), `"where"`) {
			t.Errorf("where %q: %d %s", w, resp.StatusCode, body)
		}
	}
}

// TestShapeParkedRequestsHoldNoGoroutine parks live requests from raw
// connections (no client goroutines), checks that they cost the engine no
// goroutine each, then that one insert answers them all and that the
// connections serve another request afterwards (keep-alive).
func TestShapeParkedRequestsHoldNoGoroutine(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	e := startShapeEngine(t, dbURL, func(c *engine.Config) { c.Shape.LongPoll = 30 * time.Second })
	c := newShapeClient(t, e.URL(), url.Values{"table": {"t"}})
	c.sync()
	const n = 300
	q := url.Values{"table": {"t"}, "offset": {c.offset}, "handle": {c.handle}, "live": {"true"}, "secret": {testKey}}
	request := "GET /v1/shape?" + q.Encode() + " HTTP/1.1\r\nHost: engine\r\n\r\n"
	before := runtime.NumGoroutine()
	conns := make([]net.Conn, n)
	for i := range conns {
		var err error
		if conns[i], err = net.Dial("tcp", e.Addr()); err != nil {
			t.Fatal(err)
		}
		defer conns[i].Close()
		if _, err := conns[i].Write([]byte(request)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second) // let every request reach its long poll
	if grew := runtime.NumGoroutine() - before; grew > n/10 {
		t.Errorf("%d parked live requests hold %d goroutines", n, grew)
	}
	// A big answer (written off the wake's goroutines) for every client.
	mustExec(t, conn, `INSERT INTO t VALUES (1, repeat('x', 100000))`)
	for i, c := range conns {
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		r := bufio.NewReader(c)
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"insert"`) || len(body) < 100000 || resp.Header.Get("Electric-Cursor") == "" ||
			resp.Header.Get("Access-Control-Expose-Headers") == "" || resp.Header.Get("Date") == "" {
			t.Fatalf("connection %d: %d %v %s", i, resp.StatusCode, resp.Header, body)
		}
		if i%50 != 0 {
			continue
		}
		// The connection is back with the HTTP server.
		if _, err := c.Write([]byte("GET /v1/health HTTP/1.1\r\nHost: engine\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		if resp, err = http.ReadResponse(r, nil); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("connection %d after its live answer: %v %v", i, resp, err)
		}
	}
}

// rawRequest sends a request line on a raw connection.
func rawRequest(t *testing.T, c net.Conn, method, target string) {
	t.Helper()
	if _, err := c.Write([]byte(method + " " + target + " HTTP/1.1\r\nHost: engine\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
}

// A parked HEAD request gets headers only, whatever the answer (here a 409),
// and its connection stays usable; a client that stops reading does not hold
// up the answers of the others on its shape.
func TestShapeParkedHeadAndSlowReader(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	mustExec(t, conn, `INSERT INTO t SELECT g, repeat('y', 1000) FROM generate_series(1000, 10000) g`)
	e := startShapeEngine(t, dbURL, func(c *engine.Config) { c.Shape.LongPoll = 30 * time.Second; c.Shape.AllowDelete = true })
	c := newShapeClient(t, e.URL(), url.Values{"table": {"t"}})
	c.sync()
	live := "/v1/shape?" + url.Values{"table": {"t"}, "offset": {c.offset}, "handle": {c.handle}, "live": {"true"}, "secret": {testKey}}.Encode()

	// A asks for the whole snapshot and a live update, and stops reading.
	a, err := net.Dial("tcp", e.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	_ = a.(*net.TCPConn).SetReadBuffer(64 << 10)
	rawRequest(t, a, "GET", "/v1/shape?"+url.Values{"table": {"t"}, "offset": {"-1"}, "secret": {testKey}}.Encode())
	rawRequest(t, a, "GET", live)
	// B waits for the same update.
	b, err := net.Dial("tcp", e.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	rawRequest(t, b, "GET", live)
	time.Sleep(500 * time.Millisecond)
	mustExec(t, conn, `INSERT INTO t VALUES (1, repeat('x', 20000))`)
	_ = b.SetReadDeadline(time.Now().Add(10 * time.Second)) // A would hold it for the whole long poll
	rb := bufio.NewReader(b)
	resp, err := http.ReadResponse(rb, nil)
	if err != nil {
		t.Fatalf("B's live answer while A does not read: %v", err)
	}
	if body, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"insert"`) {
		t.Fatalf("B: %d %s", resp.StatusCode, body)
	}

	// A parked HEAD answered with a 409.
	live = "/v1/shape?" + url.Values{"table": {"t"}, "offset": {resp.Header.Get("Electric-Offset")}, "handle": {c.handle}, "live": {"true"}, "secret": {testKey}}.Encode()
	rawRequest(t, b, "HEAD", live)
	time.Sleep(500 * time.Millisecond)
	req, _ := http.NewRequest(http.MethodDelete, e.URL()+"/v1/shape?handle="+c.handle+"&secret="+testKey, nil)
	del, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	del.Body.Close()
	if resp, err = http.ReadResponse(rb, &http.Request{Method: http.MethodHead}); err != nil || resp.StatusCode != http.StatusConflict {
		t.Fatalf("parked HEAD after DELETE: %v %v", resp, err)
	}
	rawRequest(t, b, "GET", "/v1/health")
	if resp, err = http.ReadResponse(rb, nil); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the connection after a HEAD answer (a body would have corrupted it): %v %v", resp, err)
	}
}
