package metrics

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestDatabaseGauges reads the per-database gauges the way Prometheus
// does, from the text the handler serves.
func TestDatabaseGauges(t *testing.T) {
	m := New()
	horizon := time.Now().Add(-time.Hour)
	m.SetDatabases(func() []Database {
		return []Database{
			{ID: "default", Active: true, LagBytes: 4096, LagSeconds: 1.5, LogBytes: 1 << 20, Horizon: horizon.UnixNano(), HeldSnapshots: 2, KeyedSnapshots: 3, Shapes: 4},
			{ID: "other"}, // not started: no horizon yet
		}
	})
	m.Request("GET /v1/shape", 0, time.Second)
	m.Request("GET /v1/shape", 200, 30*time.Millisecond)
	m.Error("BadQueryArgs")
	m.Imported(3, 120)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	text := rec.Body.String()
	for _, line := range []string{
		`shapelog_replication_active{database="default"} 1`,
		`shapelog_replication_active{database="other"} 0`,
		`shapelog_replication_lag_bytes{database="default"} 4096`,
		`shapelog_replication_lag_seconds{database="default"} 1.5`,
		`shapelog_log_size_bytes{database="default"} 1.048576e+06`,
		`shapelog_snapshots_open{database="default",kind="held"} 2`,
		`shapelog_snapshots_open{database="default",kind="keyed"} 3`,
		`shapelog_shapes{database="default"} 4`,
		`shapelog_http_requests_total{endpoint="GET /v1/shape",status="parked"} 1`,
		`shapelog_http_requests_total{endpoint="GET /v1/shape",status="200"} 1`,
		`shapelog_http_request_duration_seconds_count{endpoint="GET /v1/shape"} 1`,
		`shapelog_http_request_duration_seconds_bucket{endpoint="GET /v1/shape",le="0.05"} 1`,
		`shapelog_http_request_duration_seconds_bucket{endpoint="GET /v1/shape",le="0.025"} 0`,
		`shapelog_http_errors_total{code="BadQueryArgs"} 1`,
		`shapelog_import_rows_total 3`,
		`shapelog_import_bytes_total 120`,
	} {
		if !strings.Contains(text, line+"\n") {
			t.Errorf("missing %s", line)
		}
	}
	if strings.Contains(text, `shapelog_log_horizon_timestamp_seconds{database="other"}`) {
		t.Error("a horizon for a database without a log")
	}
	for _, prefix := range []string{`shapelog_log_horizon_timestamp_seconds{database="default"} 1.`, `shapelog_log_horizon_age_seconds{database="default"} 3600`} {
		if !strings.Contains(text, prefix) {
			t.Errorf("missing %s…", prefix)
		}
	}
}
