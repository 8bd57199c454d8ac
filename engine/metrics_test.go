package engine_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/shapelog/shapelog/engine"
	"github.com/shapelog/shapelog/engine/httpapi"
	"github.com/shapelog/shapelog/engine/metrics/metricstest"
	"github.com/shapelog/shapelog/internal/pgtest"
)

// scrapeMetrics reads GET /metrics (with auth, if set) in Prometheus's text
// format: series → value.
func scrapeMetrics(t *testing.T, base, auth string) (int, map[string]float64) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/metrics", nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, b := roundTrip(t, req)
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Fatalf("/metrics Content-Type %q", ct)
	}
	return resp.StatusCode, metricstest.Parse(t, string(b))
}

func mustHave(t *testing.T, m map[string]float64, series string) float64 {
	t.Helper()
	v, ok := m[series]
	if !ok {
		t.Fatalf("no series %s", series)
	}
	return v
}

// TestMetrics drives the engine through exports, errors, an import and a
// parked live shape request, and checks what /metrics and /v1/health say.
func TestMetrics(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, "CREATE TABLE items (id int PRIMARY KEY, body text)")
	mustExec(t, conn, "INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1, 3) g")
	e := startEngine(t, dbURL)
	base := e.URL()

	if docs, _ := readSnapshot(t, base, url.Values{"tableName": {"items"}}); len(docs) != 3 {
		t.Fatalf("snapshot: %d docs", len(docs))
	}
	if r := get(t, base, "/api/document_deltas", url.Values{}); r.Status != http.StatusBadRequest || r.errorCode(t) != "DocumentDeltasCursorRequired" {
		t.Fatalf("document_deltas without cursor: %d %s", r.Status, r.Body)
	}
	if r := getWith(t, base, "/api/json_schemas", nil, "Convex wrong-key"); r.Status != http.StatusUnauthorized {
		t.Fatalf("bad key: %d %s", r.Status, r.Body)
	}
	body := `{"tables":{"imported":{"primaryKey":null,"jsonSchema":null}},"messages":[{"tableName":"imported","data":{"a":1}},{"tableName":"imported","data":{"a":2}}]}`
	if status, b := sendJSON(t, http.MethodPost, base+"/api/streaming_import/import_airbyte_records", "Convex "+testKey, body); status != http.StatusOK {
		t.Fatalf("import: %d %s", status, b)
	}

	// A shape, followed to its end, then a live request that waits.
	c := newShapeClient(t, base, url.Values{"table": {"items"}})
	for i := 0; ; i++ {
		if _, upToDate := c.step(false); upToDate {
			break
		} else if i == 10 {
			t.Fatal("shape never up to date")
		}
	}
	q := url.Values{"table": {"items"}, "secret": {testKey}, "offset": {c.offset}, "handle": {c.handle}, "live": {"true"}, "cursor": {c.cursor}}
	live := make(chan int, 1)
	go func() {
		resp, err := http.Get(base + "/v1/shape?" + q.Encode())
		if err != nil {
			live <- 0
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		live <- resp.StatusCode
	}()
	var m map[string]float64
	deadline := time.Now().Add(10 * time.Second)
	for {
		var status int
		if status, m = scrapeMetrics(t, base, ""); status != http.StatusOK {
			t.Fatalf("/metrics without a key: %d", status)
		}
		if m["shapelog_live_requests_parked"] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the live request never parked: %v", m["shapelog_live_requests_parked"])
		}
		time.Sleep(20 * time.Millisecond)
	}

	for series, want := range map[string]float64{
		`shapelog_http_errors_total{code="DocumentDeltasCursorRequired"}`:                                         1,
		`shapelog_http_errors_total{code="BadAdminKey"}`:                                                          1,
		`shapelog_http_requests_total{endpoint="GET /api/document_deltas",status="400"}`:                          1,
		`shapelog_http_requests_total{endpoint="GET /api/json_schemas",status="401"}`:                             1,
		`shapelog_import_rows_total`:                                                                              2,
		`shapelog_import_bytes_total`:                                                                             float64(len(body)),
		`shapelog_replication_active{database="default"}`:                                                         1,
		`shapelog_shapes{database="default"}`:                                                                     1,
		`shapelog_snapshots_open{database="default",kind="held"}`:                                                 0,
		`shapelog_http_requests_total{endpoint="POST /api/streaming_import/import_airbyte_records",status="200"}`: 1,
	} {
		if got := mustHave(t, m, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if n := mustHave(t, m, `shapelog_http_requests_total{endpoint="GET /api/list_snapshot",status="200"}`); n < 1 {
		t.Errorf("list_snapshot requests: %v", n)
	}
	if n := mustHave(t, m, `shapelog_http_request_duration_seconds_count{endpoint="GET /api/list_snapshot"}`); n < 1 {
		t.Errorf("list_snapshot latency observations: %v", n)
	}
	if n := mustHave(t, m, `shapelog_http_requests_total{endpoint="GET /v1/shape",status="200"}`); n < 1 {
		t.Errorf("shape requests: %v", n)
	}
	if n := mustHave(t, m, `shapelog_snapshots_open{database="default",kind="keyed"}`); n < 1 {
		t.Errorf("keyed snapshots open after paging a keyed table: %v", n)
	}
	if n := mustHave(t, m, `shapelog_log_size_bytes{database="default"}`); n <= 0 {
		t.Errorf("log size %v", n)
	}
	horizon := mustHave(t, m, `shapelog_log_horizon_timestamp_seconds{database="default"}`)
	if now := float64(time.Now().UnixNano()) / 1e9; horizon > now || horizon < now-300 {
		t.Errorf("horizon %v, now %v: the log began with this test", horizon, now)
	}
	if age := mustHave(t, m, `shapelog_log_horizon_age_seconds{database="default"}`); age < 0 || age > 300 {
		t.Errorf("horizon age %v", age)
	}
	mustHave(t, m, `shapelog_replication_lag_bytes{database="default"}`)
	mustHave(t, m, `shapelog_replication_lag_seconds{database="default"}`)
	mustHave(t, m, "go_goroutines")
	mustHave(t, m, "process_resident_memory_bytes")

	// A change answers the parked request, which leaves the lot.
	mustExec(t, conn, "INSERT INTO items VALUES (4, 'row 4')")
	select {
	case status := <-live:
		if status != http.StatusOK {
			t.Fatalf("live request: %d", status)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("live request not answered after a change")
	}
	_, m = scrapeMetrics(t, base, "")
	if got := mustHave(t, m, "shapelog_live_requests_parked"); got != 0 {
		t.Errorf("parked after the answer: %v", got)
	}
	if got := mustHave(t, m, `shapelog_http_requests_total{endpoint="GET /v1/shape",status="parked"}`); got != 1 {
		t.Errorf("parked requests counted: %v", got)
	}

	// Caught up and idle: /v1/health reports no lag and where the log is.
	var health map[string]any
	deadline = time.Now().Add(30 * time.Second)
	for {
		r := getWith(t, base, "/v1/health", nil, "")
		if r.Status != http.StatusOK {
			t.Fatalf("health: %d %s", r.Status, r.Body)
		}
		health = nil
		r.decode(t, &health)
		if health["server_wal_end"] != nil && health["lag_bytes"] == 0.0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health never caught up: %v", health)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if health["status"] != "active" || health["lag_seconds"] != 0.0 || health["durable_lsn"] != health["server_wal_end"] {
		t.Errorf("health %v", health)
	}
	if _, ok := health["durable_lsn"].(string); !ok {
		t.Errorf("durable_lsn %v", health["durable_lsn"])
	}
}

// TestMetricsPerDatabase: an added database gets its own series, which go
// when it is removed.
func TestMetricsPerDatabase(t *testing.T) {
	e := startEngine(t, pgtest.NewDatabase(t))
	admin, auth := e.URL()+"/v1/admin/database", "Convex "+testKey
	spec := `{"database_id": "tenant-b", "database_url": "` + pgtest.NewDatabase(t) + `"}`
	if status, got := adminDatabase(t, http.MethodPost, admin, spec, auth); status != http.StatusOK {
		t.Fatalf("adding tenant-b: %d %s", status, got)
	}
	_, m := scrapeMetrics(t, e.URL(), "")
	for _, db := range []string{"default", "tenant-b"} {
		if got := mustHave(t, m, `shapelog_replication_active{database="`+db+`"}`); got != 1 {
			t.Errorf("%s active: %v", db, got)
		}
		if got := mustHave(t, m, `shapelog_log_size_bytes{database="`+db+`"}`); got <= 0 {
			t.Errorf("%s log size: %v", db, got)
		}
	}
	if status, got := adminDatabase(t, http.MethodDelete, admin+"/tenant-b", "", auth); status != http.StatusOK {
		t.Fatalf("removing tenant-b: %d %s", status, got)
	}
	_, m = scrapeMetrics(t, e.URL(), "")
	if _, ok := m[`shapelog_replication_active{database="tenant-b"}`]; ok {
		t.Error("a removed database still has series")
	}
	mustHave(t, m, `shapelog_replication_active{database="default"}`)
}

// TestMetricsAccess: --metrics key asks for the access key, --metrics off
// serves nothing.
func TestMetricsAccess(t *testing.T) {
	t.Run("key", func(t *testing.T) {
		e := startEngine(t, pgtest.NewDatabase(t), func(c *engine.Config) { c.MetricsAccess = httpapi.MetricsKey })
		if status, _ := scrapeMetrics(t, e.URL(), ""); status != http.StatusUnauthorized {
			t.Errorf("without a key: %d", status)
		}
		if status, _ := scrapeMetrics(t, e.URL(), "Bearer wrong"); status != http.StatusUnauthorized {
			t.Errorf("with a wrong key: %d", status)
		}
		for _, auth := range []string{"Bearer " + testKey, "Convex " + testKey} {
			if status, m := scrapeMetrics(t, e.URL(), auth); status != http.StatusOK || m[`shapelog_replication_active{database="default"}`] != 1 {
				t.Errorf("%s: %d", auth, status)
			}
		}
	})
	t.Run("off", func(t *testing.T) {
		e := startEngine(t, pgtest.NewDatabase(t), func(c *engine.Config) { c.MetricsAccess = httpapi.MetricsOff })
		if status, _ := scrapeMetrics(t, e.URL(), ""); status != http.StatusNotFound {
			t.Errorf("off: %d", status)
		}
	})
}

// TestImportTooLargeRefusedAtOnce: a body announced bigger than the limit is
// refused before the engine reads any of it, so a client that sends the
// headers and nothing more gets its 413 at once.
func TestImportTooLargeRefusedAtOnce(t *testing.T) {
	e := startEngine(t, pgtest.NewDatabase(t), func(c *engine.Config) { c.MaxImportBytes = 1 << 20 })
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.URL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	fmt.Fprintf(conn, "POST /api/streaming_import/import_airbyte_records HTTP/1.1\r\nHost: x\r\nAuthorization: Convex %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n{\"tables\":", testKey, 1<<30)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no response while the body stalls: %v", err)
	}
	defer resp.Body.Close()
	var e413 struct{ Code, Message string }
	if err := json.NewDecoder(resp.Body).Decode(&e413); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestEntityTooLarge || e413.Code != "RequestTooLarge" || !strings.Contains(e413.Message, "1 MiB") {
		t.Fatalf("got %d %+v", resp.StatusCode, e413)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("413 took %s", took)
	}
}
