package httpapi

import (
	"errors"
	"io"
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
	busy := postgresBusy(err)
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
	case busy != nil:
		s.log.Warn().Err(err).Str("code", busy.Code).Msg("PostgreSQL asks to retry later")
		w.Header().Set("Retry-After", "5")
		writeError(w, busy.Status, busy.Code, busy.Message)
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

// writeImportFailure is writeFailure for the import endpoints, where what
// PostgreSQL refuses is the request's data or names: its permanent refusals
// are the client's 4xx (see postgresRefusal).
func (s *Server) writeImportFailure(w http.ResponseWriter, err error) {
	if refusal := postgresRefusal(err); refusal != nil {
		writeError(w, refusal.Status, refusal.Code, refusal.Message)
		return
	}
	s.writeFailure(w, err)
}

// postgresRefusal maps PostgreSQL's permanent refusals of what a client
// sent (its data, names or where clause) to a 4xx that will fail the same
// way every time: bad data, constraints, names, limits, privileges,
// unsupported features, errors raised by triggers. Anything else is nil.
// Only where the request's content is what PostgreSQL judged (imports,
// shape and subset where clauses): the same classes from the engine's own
// queries stay 500s, which clients retry.
func postgresRefusal(err error) *apiError {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || len(pe.Code) != 5 {
		return nil
	}
	status, code := http.StatusBadRequest, ""
	switch class := pe.Code[:2]; {
	case pe.Code == "42501":
		status, code = http.StatusForbidden, "InsufficientPrivilege"
	case class == "22":
		code = "InvalidValue"
	case class == "23":
		code = "ConstraintViolation"
	case class == "21":
		code = "CardinalityViolation"
	case class == "42":
		code = "InvalidStatement"
	case class == "54":
		code = "LimitExceeded"
	case class == "0A":
		code = "FeatureNotSupported"
	case class == "P0" || class == "2F" || class == "38" || class == "39":
		code = "RejectedByDatabase"
	default:
		return nil
	}
	return &apiError{Status: status, Code: code, Message: describePgError(err, pe)}
}

// postgresBusy maps PostgreSQL's passing refusals, lack of resources and a
// lost serialisation race (classes 53, 40) or a statement timeout, to a
// 503 worth retrying; anything else is nil.
func postgresBusy(err error) *apiError {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || len(pe.Code) != 5 {
		return nil
	}
	switch class := pe.Code[:2]; {
	case class == "53" || class == "40":
		return &apiError{Status: http.StatusServiceUnavailable, Code: "DatabaseBusy", Message: describePgError(err, pe)}
	case pe.Code == "57014":
		return &apiError{Status: http.StatusServiceUnavailable, Code: "QueryTimeout", Message: describePgError(err, pe)}
	}
	return nil
}

// describePgError says what PostgreSQL refused in the words of the step
// that ran into it (err's wrapping), with the SQLSTATE and whatever
// PostgreSQL named: table, column, constraint, detail, hint.
func describePgError(err error, pe *pgconn.PgError) string {
	var b strings.Builder
	b.WriteString("PostgreSQL refused the request: ")
	b.WriteString(err.Error())
	for _, f := range [][2]string{{"table", qualified(pe.SchemaName, pe.TableName)}, {"column", pe.ColumnName}, {"constraint", pe.ConstraintName}, {"detail", pe.Detail}, {"hint", pe.Hint}} {
		if f[1] != "" && !strings.Contains(b.String(), f[1]) {
			b.WriteString("; " + f[0] + ": " + f[1])
		}
	}
	return b.String()
}

func qualified(schema, table string) string {
	if schema == "" || table == "" {
		return table
	}
	return schema + "." + table
}

// importError maps importer errors and oversized bodies to responses.
func importError(err error) *apiError {
	var ie *importer.Error
	if errors.As(err, &ie) {
		return &apiError{Status: ie.Status, Code: ie.Code, Message: ie.Message}
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return badRequest("BadJsonBody", "The request body ended before its JSON did (the client stopped sending); nothing was written")
	}
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return &apiError{Status: http.StatusRequestEntityTooLarge, Code: "RequestTooLarge", Message: "The request body is larger than the engine's limit of " + formatBytes(tooBig.Limit) + " (--max-import-bytes): send smaller batches"}
	}
	return nil
}
