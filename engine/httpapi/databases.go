package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/shapelog/shapelog/engine/replication"
	"github.com/shapelog/shapelog/engine/shapes"
)

// DatabaseSpec is a database added with POST /v1/admin/database. JSON keys
// match case-insensitively, so Electric's DATABASE_URL form works too.
type DatabaseSpec struct {
	ID      string `json:"database_id"`
	URL     string `json:"database_url"`
	UseIPv6 bool   `json:"database_use_ipv6"`
}

// Databases are the databases the engine serves shapes from: its own
// (DATABASE_URL) and those added through the admin API.
type Databases interface {
	// Shapes returns the shapes of database id; "" means the only one.
	Shapes(id string) (*shapes.Manager, error)
	// Status is database id's replication health; "" means the engine's own.
	Status(id string) (replication.Status, error)
	// Add starts serving a database and returns its id.
	Add(ctx context.Context, spec DatabaseSpec) (string, error)
	// Remove stops serving a database and drops its slot and storage.
	Remove(ctx context.Context, id string) error
}

// DatabaseError refuses a database request with an HTTP status and a message.
type DatabaseError struct {
	Status  int
	Message string
}

func (e *DatabaseError) Error() string { return e.Message }

// writeDatabaseError answers err in Electric's {"message": …} form.
func (s *Server) writeDatabaseError(w http.ResponseWriter, err error) {
	var de *DatabaseError
	if errors.As(err, &de) {
		writeShapeJSON(w, de.Status, map[string]string{"message": de.Message})
		return
	}
	s.log.Error().Err(err).Msg("database request failed")
	writeShapeJSON(w, http.StatusInternalServerError, map[string]string{"message": err.Error()})
}

// shapeDatabase finds the shapes of the request's database_id; nil means an
// error was written.
func (s *Server) shapeDatabase(w http.ResponseWriter, q url.Values) *shapes.Manager {
	id := q.Get("database_id")
	if id == "" {
		id = q.Get("source_id") // what Electric's spec calls it on DELETE
	}
	m, err := s.cfg.Databases.Shapes(id)
	if err != nil {
		s.writeDatabaseError(w, err)
		return nil
	}
	return m
}

// addDatabase is POST /v1/admin/database.
func (s *Server) addDatabase(w http.ResponseWriter, r *http.Request) {
	var spec DatabaseSpec
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		msg := err.Error()
		if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
			msg = "unknown field " + f + "; expected database_id, database_url and database_use_ipv6"
		} else {
			msg = "request body is not a database definition: " + msg
		}
		writeShapeJSON(w, http.StatusBadRequest, map[string]string{"message": msg})
		return
	}
	id, err := s.cfg.Databases.Add(r.Context(), spec)
	if err != nil {
		s.writeDatabaseError(w, err)
		return
	}
	writeShapeJSON(w, http.StatusOK, id)
}

// removeDatabase is DELETE /v1/admin/database/{database_id}.
func (s *Server) removeDatabase(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("database_id")
	if err := s.cfg.Databases.Remove(r.Context(), id); err != nil {
		s.writeDatabaseError(w, err)
		return
	}
	writeShapeJSON(w, http.StatusOK, id)
}
