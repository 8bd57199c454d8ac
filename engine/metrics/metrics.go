// Package metrics holds the engine's Prometheus metrics: a registry of its
// own (not the global default) with the Go runtime and process collectors,
// request and import counters the HTTP API updates, and per-database gauges
// read when Prometheus scrapes. Every series the engine defines starts with
// shapelog_; label values come from small fixed sets (route patterns,
// status codes, error codes, database ids), never from request data.
package metrics

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is the engine's metrics registry.
type Metrics struct {
	reg         *prometheus.Registry
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	errors      *prometheus.CounterVec
	importRows  prometheus.Counter
	importBytes prometheus.Counter

	mu        sync.Mutex
	databases func() []Database
}

// Database is one database's state at scrape time.
type Database struct {
	ID string
	// Active is true while replication streams.
	Active bool
	// LagBytes and LagSeconds are replication.Lag's.
	LagBytes   uint64
	LagSeconds float64
	// LogBytes is the log's size on disk.
	LogBytes uint64
	// Horizon is the log's retention horizon (ns since the epoch): changes
	// at or before it are gone.
	Horizon int64
	// HeldSnapshots are open snapshots that hold a PostgreSQL transaction
	// (tables without a primary key); KeyedSnapshots are snapshots of
	// keyed tables being paged through (rewind indexes in memory).
	HeldSnapshots, KeyedSnapshots int
	// Shapes are the shapes the database serves.
	Shapes int
}

// latencyBuckets reach past the long-poll timeout (20 s by default).
var latencyBuckets = []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// New creates the registry and its metrics.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shapelog_http_requests_total",
			Help: "HTTP requests answered, by route pattern and status code (status \"parked\": a live shape request handed to the parking lot, answered later).",
		}, []string{"endpoint", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shapelog_http_request_duration_seconds",
			Help:    "Time to answer HTTP requests, by route pattern (parked live requests are not observed).",
			Buckets: latencyBuckets,
		}, []string{"endpoint"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shapelog_http_errors_total",
			Help: "Error responses by their Convex error code.",
		}, []string{"code"}),
		importRows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shapelog_import_rows_total",
			Help: "Records imported with import_airbyte_records (requests answered with success).",
		}),
		importBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shapelog_import_bytes_total",
			Help: "Request body bytes read by import_airbyte_records, successful or not.",
		}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.duration, m.errors, m.importRows, m.importBytes,
		databaseCollector{m},
	)
	return m
}

// Handler serves the metrics in Prometheus's text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, ErrorHandling: promhttp.ContinueOnError})
}

// Request counts an answered request: endpoint is its route pattern.
// status 0 means the connection was taken over (a parked live request);
// its latency is not observed.
func (m *Metrics) Request(endpoint string, status int, took time.Duration) {
	if status == 0 {
		m.requests.WithLabelValues(endpoint, "parked").Inc()
		return
	}
	m.requests.WithLabelValues(endpoint, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(endpoint).Observe(took.Seconds())
}

// Error counts an error response with its code.
func (m *Metrics) Error(code string) { m.errors.WithLabelValues(code).Inc() }

// Imported counts records imported and body bytes read.
func (m *Metrics) Imported(rows int, bytes int64) {
	m.importRows.Add(float64(rows))
	m.importBytes.Add(float64(bytes))
}

// Gauge registers a gauge read from fn at scrape time.
func (m *Metrics) Gauge(name, help string, fn func() float64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, fn))
}

// SetDatabases sets where the per-database gauges come from.
func (m *Metrics) SetDatabases(fn func() []Database) {
	m.mu.Lock()
	m.databases = fn
	m.mu.Unlock()
}

var (
	descActive = prometheus.NewDesc("shapelog_replication_active",
		"1 while replication streams from the database, 0 while it starts or waits to reconnect.", []string{"database"}, nil)
	descLagBytes = prometheus.NewDesc("shapelog_replication_lag_bytes",
		"PostgreSQL's WAL end, as its last keepalive reported it, minus the position the log has made durable and confirmed.", []string{"database"}, nil)
	descLagSeconds = prometheus.NewDesc("shapelog_replication_lag_seconds",
		"How long ago PostgreSQL reported the oldest WAL position the log has not made durable yet (0 when caught up).", []string{"database"}, nil)
	descLogBytes = prometheus.NewDesc("shapelog_log_size_bytes",
		"Size of the change log on disk.", []string{"database"}, nil)
	descHorizon = prometheus.NewDesc("shapelog_log_horizon_timestamp_seconds",
		"Retention horizon: changes committed at or before this time (Unix seconds) are no longer in the log.", []string{"database"}, nil)
	descHorizonAge = prometheus.NewDesc("shapelog_log_horizon_age_seconds",
		"Age of the retention horizon: how far back document_deltas cursors reach.", []string{"database"}, nil)
	descSnapshots = prometheus.NewDesc("shapelog_snapshots_open",
		"Open snapshots: kind=held hold a PostgreSQL transaction (tables without a primary key), kind=keyed are keyed tables being paged through.", []string{"database", "kind"}, nil)
	descShapes = prometheus.NewDesc("shapelog_shapes",
		"Shapes served.", []string{"database"}, nil)
)

// databaseCollector reads the per-database gauges at scrape time.
type databaseCollector struct{ m *Metrics }

func (c databaseCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descActive, descLagBytes, descLagSeconds, descLogBytes, descHorizon, descHorizonAge, descSnapshots, descShapes} {
		ch <- d
	}
}

func (c databaseCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	fn := c.m.databases
	c.m.mu.Unlock()
	if fn == nil {
		return
	}
	now := time.Now()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, db := range fn() {
		active := 0.0
		if db.Active {
			active = 1
		}
		gauge(descActive, active, db.ID)
		gauge(descLagBytes, float64(db.LagBytes), db.ID)
		gauge(descLagSeconds, db.LagSeconds, db.ID)
		gauge(descLogBytes, float64(db.LogBytes), db.ID)
		if db.Horizon > 0 {
			gauge(descHorizon, float64(db.Horizon)/1e9, db.ID)
			gauge(descHorizonAge, max(now.Sub(time.Unix(0, db.Horizon)).Seconds(), 0), db.ID)
		}
		gauge(descSnapshots, float64(db.HeldSnapshots), db.ID, "held")
		gauge(descSnapshots, float64(db.KeyedSnapshots), db.ID, "keyed")
		gauge(descShapes, float64(db.Shapes), db.ID)
	}
}
