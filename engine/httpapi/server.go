// Package httpapi serves the engine's HTTP APIs: Convex's streaming export
// API under /api and the health endpoint. Errors on /api are Convex-shaped
// JSON: {"code": "...", "message": "..."}.
package httpapi

import (
	"bufio"
	"crypto/subtle"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/shapelog/shapelog/engine/catalog"
	"github.com/shapelog/shapelog/engine/functions"
	"github.com/shapelog/shapelog/engine/importer"
	"github.com/shapelog/shapelog/engine/metrics"
	"github.com/shapelog/shapelog/engine/replication"
	"github.com/shapelog/shapelog/engine/shapelog"
	"github.com/shapelog/shapelog/engine/snapshot"
)

// Config configures the API.
type Config struct {
	// AccessKey guards /api; empty only when Insecure.
	AccessKey string
	Insecure  bool
	// Version is reported by GET /version.
	Version string
	// MaxImportBytes bounds an import request's body (413 beyond).
	MaxImportBytes int64
	// Functions serves /api/query, /api/mutation, /api/action and
	// /api/run; nil leaves them unserved.
	Functions *functions.Service
	// Databases serve Electric's /v1/shape and /v1/admin/database; nil
	// leaves them unserved.
	Databases Databases
	Shape     ShapeConfig
	// Metrics is the registry GET /metrics serves and requests are counted
	// in; nil creates one.
	Metrics *metrics.Metrics
	// MetricsAccess says who may read GET /metrics (default MetricsOpen).
	MetricsAccess MetricsAccess
}

// MetricsAccess says who may read GET /metrics.
type MetricsAccess string

// The ways to serve GET /metrics. Prometheus scrapers are usually set up
// without credentials, and Electric and PeerDB serve their metrics without
// any, so the default is open: the metrics hold counts and timings labelled
// by route, status, error code and database id, no data.
const (
	MetricsOpen MetricsAccess = "open" // no key needed
	MetricsKey  MetricsAccess = "key"  // the access key, as `Authorization: Convex <key>` or `Bearer <key>`
	MetricsOff  MetricsAccess = "off"  // not served
)

// Server holds what the handlers need.
type Server struct {
	cfg      Config
	store    *shapelog.Store
	repl     *replication.Replicator
	snaps    *snapshot.Manager
	importer *importer.Importer
	pool     *pgxpool.Pool
	types    *catalog.Types
	parking  *parkingLot
	streams  *sseStreamer
	metrics  *metrics.Metrics
	log      zerolog.Logger
}

// New creates the API server.
func New(cfg Config, store *shapelog.Store, repl *replication.Replicator, snaps *snapshot.Manager, imp *importer.Importer, pool *pgxpool.Pool, types *catalog.Types, log zerolog.Logger) *Server {
	if cfg.MaxImportBytes == 0 {
		cfg.MaxImportBytes = 64 << 20
	}
	if cfg.Shape.MaxAge == 0 {
		cfg.Shape.MaxAge = 60
	}
	if cfg.Shape.StaleAge == 0 {
		cfg.Shape.StaleAge = 300
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New()
	}
	if cfg.MetricsAccess == "" {
		cfg.MetricsAccess = MetricsOpen
	}
	s := &Server{cfg: cfg, store: store, repl: repl, snaps: snaps, importer: imp, pool: pool, types: types, metrics: cfg.Metrics,
		log: log.With().Str("component", "http").Logger()}
	s.parking = newParkingLot(s)
	s.streams = newSSEStreamer(s)
	s.metrics.Gauge("shapelog_live_sse_streams", "Live shape responses streaming Server-Sent Events.",
		func() float64 { return float64(s.streams.open()) })
	s.metrics.Gauge("shapelog_live_requests_parked", "Live shape requests waiting for changes in the parking lot.",
		func() float64 { return float64(s.parking.parked()) })
	return s
}

// Close drops the connections of parked live requests (their clients
// retry); call it after the HTTP server's Shutdown.
func (s *Server) Close() {
	s.parking.close()
	s.streams.close()
}

// Handler routes every endpoint.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", s.health)
	switch s.cfg.MetricsAccess {
	case MetricsOpen:
		mux.Handle("GET /metrics", s.metrics.Handler())
	case MetricsKey:
		mux.Handle("GET /metrics", s.metricsKey(s.metrics.Handler()))
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {})
	if s.cfg.Databases != nil {
		mux.HandleFunc("GET /v1/shape", s.shapeGet)
		mux.HandleFunc("GET /v1/shape/{root_table}", s.shapeGet)
		mux.HandleFunc("POST /v1/shape", s.shapeGet)
		mux.HandleFunc("POST /v1/shape/{root_table}", s.shapeGet)
		mux.HandleFunc("DELETE /v1/shape", s.shapeDelete)
		mux.HandleFunc("OPTIONS /v1/shape", s.shapeOptions)
		mux.HandleFunc("OPTIONS /v1/shape/{root_table}", s.shapeOptions)
		mux.Handle("POST /v1/admin/database", s.admin(s.addDatabase))
		mux.Handle("DELETE /v1/admin/database/{database_id}", s.admin(s.removeDatabase))
	}
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte(s.cfg.Version))
	})
	mux.Handle("GET /api/json_schemas", s.admin(s.jsonSchemas))
	mux.Handle("GET /api/list_snapshot", s.admin(s.listSnapshot))
	mux.Handle("POST /api/list_snapshot", s.admin(s.listSnapshot))
	mux.Handle("GET /api/list_snapshot_ranges", s.admin(s.listSnapshotRanges))
	mux.Handle("POST /api/list_snapshot_ranges", s.admin(s.listSnapshotRanges))
	mux.Handle("GET /api/document_deltas", s.admin(s.documentDeltas))
	mux.Handle("POST /api/document_deltas", s.admin(s.documentDeltas))
	mux.Handle("GET /api/test_streaming_export_connection", s.admin(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, nil)
	}))
	mux.Handle("POST /api/streaming_import/import_airbyte_records", s.admin(s.importRecords))
	mux.Handle("PUT /api/streaming_import/add_primary_key_indexes", s.admin(s.addPrimaryKeyIndexes))
	mux.Handle("GET /api/streaming_import/primary_key_indexes_ready", s.admin(s.primaryKeyIndexesReady))
	mux.Handle("PUT /api/streaming_import/clear_tables", s.admin(s.clearTables))
	mux.Handle("PUT /api/streaming_import/check_write", s.admin(s.checkWrite))
	mux.Handle("POST /api/streaming_import/replace_tables", s.admin(s.replaceTables))
	mux.Handle("PUT /api/streaming_import/delete_other_generations", s.admin(s.deleteOtherGenerations))
	if s.cfg.Functions != nil {
		mux.HandleFunc("POST /api/query", s.callFunction(functions.Query))
		mux.HandleFunc("POST /api/mutation", s.callFunction(functions.Mutation))
		mux.HandleFunc("POST /api/action", s.callFunction(functions.Action))
		mux.HandleFunc("POST /api/run/{path...}", s.callFunction(functions.Run))
	}
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		// A known path with another method: the routes above are by method.
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut} {
			if _, pattern := mux.Handler(&http.Request{Method: m, URL: r.URL, Host: r.Host}); pattern != "/api/" {
				writeError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", r.Method+" is not allowed on "+r.URL.Path)
				return
			}
		}
		writeError(w, http.StatusNotFound, "NotFound", "No such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return s.logRequests(mux)
}

// apiError is an error response.
type apiError struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func badRequest(code, msg string) *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: code, Message: msg}
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	if rec := recorderOf(w); rec != nil {
		rec.code = code
	}
	writeJSON(w, status, apiError{Code: code, Message: msg})
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// admin wraps an /api handler with Convex's client-version and admin-key
// checks.
func (s *Server) admin(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e := checkClientVersion(r); e != nil {
			writeError(w, e.Status, e.Code, e.Message)
			return
		}
		if !s.cfg.Insecure {
			if e := s.authenticate(r); e != nil {
				writeError(w, e.Status, e.Code, e.Message)
				return
			}
		}
		h(w, r)
	})
}

// checkClientVersion enforces Convex's `Convex-Client: <name>-<semver>`
// form when the header is present.
func checkClientVersion(r *http.Request) *apiError {
	v := r.Header.Get("Convex-Client")
	if v == "" || strings.Contains(v, "-") {
		return nil
	}
	return badRequest("InvalidClientVersion", "Failed to parse client version string: '"+v+"'. Expected format is {client_name}-{semver}, e.g. my-esolang-client-0.0.1")
}

// authenticate checks `Authorization: Convex <key>` (or ?adminKey=).
func (s *Server) authenticate(r *http.Request) *apiError {
	header := r.Header.Get("Authorization")
	var key string
	switch {
	case header == "":
		key = r.URL.Query().Get("adminKey")
		if key == "" {
			return &apiError{Status: http.StatusForbidden, Code: "BadDeployKey", Message: "The provided deploy key was invalid for this deployment. Send `Authorization: Convex <access key>`."}
		}
	case len(header) < 7:
		return badRequest("InvalidAdminKey", "Invalid admin key")
	case strings.EqualFold(header[:7], "convex "):
		key = strings.TrimSpace(header[7:])
		// Convex deploy keys may carry a "<type>:<name>|" prefix.
		if i := strings.LastIndexByte(key, '|'); i >= 0 && strings.Contains(key[:i], ":") {
			key = key[i+1:]
		}
	case strings.EqualFold(header[:7], "bearer "):
		return &apiError{Status: http.StatusForbidden, Code: "BadDeployKey", Message: "The provided deploy key was invalid for this deployment. This API needs the access key (`Authorization: Convex <access key>`), not a user token."}
	default:
		return badRequest("InvalidAdminKey", "Invalid admin key")
	}
	if subtle.ConstantTimeCompare([]byte(key), []byte(s.cfg.AccessKey)) != 1 {
		return &apiError{Status: http.StatusUnauthorized, Code: "BadAdminKey", Message: "The provided admin key was invalid for this instance"}
	}
	return nil
}

// metricsKey guards /metrics with the access key, which Prometheus sends
// as `authorization: {type: Bearer, credentials: <key>}` (or type Convex).
func (s *Server) metricsKey(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, key, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if s.cfg.Insecure || (strings.EqualFold(scheme, "bearer") || strings.EqualFold(scheme, "convex")) &&
			subtle.ConstantTimeCompare([]byte(strings.TrimSpace(key)), []byte(s.cfg.AccessKey)) == 1 {
			h.ServeHTTP(w, r)
			return
		}
		writeError(w, http.StatusUnauthorized, "BadAdminKey", "GET /metrics needs the access key: `Authorization: Bearer <access key>`")
	})
}

// statusRecorder notes what logRequests logs and counts about a response.
type statusRecorder struct {
	http.ResponseWriter
	status   int
	bytes    int64
	code     string // the error code written, if any
	hijacked bool   // the connection was taken over (a parked live request)
}

// recorderOf finds the statusRecorder under w, or nil.
func recorderOf(w http.ResponseWriter) *statusRecorder {
	for {
		switch t := w.(type) {
		case *statusRecorder:
			return t
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		default:
			return nil
		}
	}
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Hijack notes that the connection was taken over.
func (r *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(r.ResponseWriter).Hijack()
	if err == nil {
		r.hijacked = true
	}
	return conn, rw, err
}

// logRequests logs every request (4xx at info, 5xx at error with the route
// and, when the request names one, the table) and counts it in the
// metrics by route pattern, status and error code.
func (s *Server) logRequests(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		took := time.Since(start)
		status := rec.status
		if status == 0 && !rec.hijacked {
			status = http.StatusOK // nothing written: net/http sends 200
		}
		route := r.Pattern // set by the mux on this request
		if route == "" {
			route = "unmatched"
		}
		s.metrics.Request(route, status, took)
		if rec.code != "" {
			s.metrics.Error(rec.code)
		}
		ev := s.log.Debug()
		if status >= 500 {
			ev = s.log.Error()
			q := r.URL.Query()
			table := r.PathValue("root_table")
			for _, name := range []string{"table", "tableName", "table_name"} {
				if table == "" {
					table = q.Get(name)
				}
			}
			if table != "" {
				ev = ev.Str("table", table)
			}
			if id := q.Get("database_id"); id != "" {
				ev = ev.Str("database_id", id)
			}
		} else if status >= 400 {
			ev = s.log.Info()
		}
		if rec.code != "" {
			ev = ev.Str("code", rec.code)
		}
		if rec.hijacked {
			ev = ev.Bool("parked", true)
		}
		ev.Str("method", r.Method).Str("path", r.URL.Path).Str("route", route).Int("status", status).
			Int64("bytes", rec.bytes).Dur("took", took).Str("client", r.Header.Get("Convex-Client")).Msg("request")
	})
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-cache, no-store, must-revalidate")
	st := s.repl.Status()
	if id := r.URL.Query().Get("database_id"); id != "" && s.cfg.Databases != nil {
		var err error
		if st, err = s.cfg.Databases.Status(id); err != nil {
			s.writeDatabaseError(w, err)
			return
		}
	}
	body := map[string]any{}
	status := http.StatusAccepted
	switch st.State {
	case replication.StateActive:
		body["status"], status = "active", http.StatusOK
	case replication.StateStarting:
		body["status"] = "starting"
	default:
		body["status"] = "waiting"
		body["reason"] = string(st.State)
	}
	if st.Err != "" {
		body["error"] = st.Err
	}
	body["lag_bytes"] = st.Lag.Bytes
	body["lag_seconds"] = st.Lag.Seconds
	body["durable_lsn"] = pglogrepl.LSN(st.Lag.DurableLSN).String()
	if st.Lag.ServerWALEnd != 0 {
		body["server_wal_end"] = pglogrepl.LSN(st.Lag.ServerWALEnd).String()
	}
	writeJSON(w, status, body)
}
