package httpapi

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/shapelog/shapelog/engine/metrics/metricstest"
)

// lockedBuffer collects log lines written from handler goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// lines decodes the JSON log lines.
func (l *lockedBuffer) lines(t *testing.T) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for line := range strings.Lines(l.b.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// scrape reads the metrics in Prometheus's text format: series → value.
func scrape(t *testing.T, h http.Handler) map[string]float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", rec.Code, rec.Body)
	}
	return metricstest.Parse(t, rec.Body.String())
}

// TestRequestLogAndMetrics checks that 5xx are logged with their route and
// table, and that requests, errors and parked requests are counted by
// route pattern, status and error code.
func TestRequestLogAndMetrics(t *testing.T) {
	logs := &lockedBuffer{}
	s := New(Config{Insecure: true}, nil, nil, nil, nil, nil, nil, zerolog.New(logs).Level(zerolog.InfoLevel))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/list_snapshot", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("tableName") == "" {
			writeError(w, http.StatusBadRequest, "BadQueryArgs", "no table")
			return
		}
		s.writeFailure(w, errors.New("disk on fire"))
	})
	mux.HandleFunc("GET /v1/shape/{root_table}", func(w http.ResponseWriter, r *http.Request) {
		writeShapeJSON(w, http.StatusInternalServerError, map[string]string{"message": "boom"})
	})
	mux.HandleFunc("GET /v1/live", func(w http.ResponseWriter, r *http.Request) {
		// Taken over and answered on the bare connection, as parked live
		// requests are.
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
		_ = conn.Close()
	})
	srv := httptest.NewServer(s.logRequests(mux))
	defer srv.Close()

	get := func(path string, want int) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, bufio.NewReader(resp.Body))
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	get("/api/list_snapshot?tableName=items", 500)
	get("/api/list_snapshot?tableName=items", 500)
	get("/api/list_snapshot", 400)
	get("/v1/shape/things?database_id=db2&offset=-1", 500)
	get("/v1/live", 200)
	get("/nowhere/"+strings.Repeat("x", 10), 404)

	var errorsLogged []map[string]any
	for _, l := range logs.lines(t) {
		if l["level"] == "error" && l["message"] == "request" {
			errorsLogged = append(errorsLogged, l)
		}
	}
	if len(errorsLogged) != 3 {
		t.Fatalf("%d 5xx logged, want 3: %v", len(errorsLogged), errorsLogged)
	}
	for i, want := range []map[string]any{
		{"route": "GET /api/list_snapshot", "table": "items", "code": "InternalServerError", "status": 500.0},
		{"route": "GET /v1/shape/{root_table}", "table": "things", "database_id": "db2", "status": 500.0},
	} {
		got := errorsLogged[2*i]
		for k, v := range want {
			if got[k] != v {
				t.Errorf("5xx log %v: %s = %v, want %v", got, k, got[k], v)
			}
		}
	}

	m := scrape(t, s.metrics.Handler())
	for series, want := range map[string]float64{
		`shapelog_http_requests_total{endpoint="GET /api/list_snapshot",status="500"}`:               2,
		`shapelog_http_requests_total{endpoint="GET /api/list_snapshot",status="400"}`:               1,
		`shapelog_http_requests_total{endpoint="GET /v1/shape/{root_table}",status="500"}`:           1,
		`shapelog_http_requests_total{endpoint="GET /v1/live",status="parked"}`:                      1,
		`shapelog_http_requests_total{endpoint="unmatched",status="404"}`:                            1,
		`shapelog_http_request_duration_seconds_count{endpoint="GET /api/list_snapshot"}`:            3,
		`shapelog_http_request_duration_seconds_bucket{endpoint="GET /api/list_snapshot",le="+Inf"}`: 3,
		`shapelog_http_errors_total{code="InternalServerError"}`:                                     2,
		`shapelog_http_errors_total{code="BadQueryArgs"}`:                                            1,
		`shapelog_live_requests_parked`:                                                              0,
	} {
		if got, ok := m[series]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
		}
	}
	if _, ok := m[`shapelog_http_request_duration_seconds_count{endpoint="GET /v1/live"}`]; ok {
		t.Error("the latency of a parked request was observed")
	}
	for _, series := range []string{"go_goroutines", "process_open_fds"} {
		if _, ok := m[series]; !ok {
			t.Errorf("%s missing", series)
		}
	}
}
