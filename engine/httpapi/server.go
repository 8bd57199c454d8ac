// Package httpapi serves the engine's HTTP APIs: Convex's streaming export
// API under /api and the health endpoint. Errors on /api are Convex-shaped
// JSON: {"code": "...", "message": "..."}.
package httpapi

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/shapelog/shapelog/engine/catalog"
	"github.com/shapelog/shapelog/engine/functions"
	"github.com/shapelog/shapelog/engine/importer"
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
}

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
	s := &Server{cfg: cfg, store: store, repl: repl, snaps: snaps, importer: imp, pool: pool, types: types, log: log.With().Str("component", "http").Logger()}
	s.parking = newParkingLot(s)
	return s
}

// Close drops the connections of parked live requests (their clients
// retry); call it after the HTTP server's Shutdown.
func (s *Server) Close() { s.parking.close() }

// Handler routes every endpoint.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", s.health)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {})
	if s.cfg.Databases != nil {
		mux.HandleFunc("GET /v1/shape", s.shapeGet)
		mux.HandleFunc("GET /v1/shape/{root_table}", s.shapeGet)
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
	mux.Handle("GET /api/document_deltas", s.admin(s.documentDeltas))
	mux.Handle("POST /api/document_deltas", s.admin(s.documentDeltas))
	mux.Handle("GET /api/test_streaming_export_connection", s.admin(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, nil)
	}))
	mux.Handle("POST /api/streaming_import/import_airbyte_records", s.admin(s.importRecords))
	mux.Handle("PUT /api/streaming_import/add_primary_key_indexes", s.admin(s.addPrimaryKeyIndexes))
	mux.Handle("GET /api/streaming_import/primary_key_indexes_ready", s.admin(s.primaryKeyIndexesReady))
	mux.Handle("PUT /api/streaming_import/clear_tables", s.admin(s.clearTables))
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

type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64
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

func (s *Server) logRequests(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		ev := s.log.Debug()
		if rec.status >= 500 {
			ev = s.log.Error()
		} else if rec.status >= 400 {
			ev = s.log.Info()
		}
		ev.Str("method", r.Method).Str("path", r.URL.Path).Int("status", rec.status).Int64("bytes", rec.bytes).
			Dur("took", time.Since(start)).Str("client", r.Header.Get("Convex-Client")).Msg("request")
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
	writeJSON(w, status, body)
}
