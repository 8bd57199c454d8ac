package httpapi

import (
	"errors"
	"net/http"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shapelog/shapelog/engine/importer"
	"github.com/shapelog/shapelog/engine/snapshot"
)

// writeFailure turns an error into a response: apiErrors as they are,
// anything else as a 500 that says nothing about internals.
func (s *Server) writeFailure(w http.ResponseWriter, err error) {
	var ae *apiError
	if ie := importError(err); ie != nil {
		ae = ie
	}
	switch {
	case ae != nil || errors.As(err, &ae):
		writeError(w, ae.Status, ae.Code, ae.Message)
	case errors.Is(err, snapshot.ErrTooMany):
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, "TooManySnapshots", err.Error())
	case errors.Is(err, snapshot.ErrBusy):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "SnapshotBusy", err.Error())
	case databaseUnavailable(err):
		s.log.Warn().Err(err).Msg("database unavailable")
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "DatabaseUnavailable", "PostgreSQL cannot be reached or is starting up; retry shortly.")
	default:
		s.log.Error().Err(err).Msg("request failed")
		writeError(w, http.StatusInternalServerError, "InternalServerError", "Your request couldn't be completed. Try again later.")
	}
}

// databaseUnavailable reports an error that comes from PostgreSQL being
// down, restarting or refusing connections for now: worth a retry.
func databaseUnavailable(err error) bool {
	var ce *pgconn.ConnectError
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &ce):
		return true
	case errors.As(err, &pe):
		// 57P01-57P03: shutting down, crashed, starting up; 08: connection.
		return strings.HasPrefix(pe.Code, "57P0") || strings.HasPrefix(pe.Code, "08")
	}
	return pgconn.SafeToRetry(err)
}

// importError maps importer errors and oversized bodies to responses.
func importError(err error) *apiError {
	var ie *importer.Error
	if errors.As(err, &ie) {
		return &apiError{Status: ie.Status, Code: ie.Code, Message: ie.Message}
	}
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return &apiError{Status: http.StatusRequestEntityTooLarge, Code: "RequestTooLarge", Message: "The request body is larger than the engine's limit of " + formatBytes(tooBig.Limit) + " (--max-import-bytes): send smaller batches"}
	}
	return nil
}
