package httpapi

import (
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"strings"
)

// jsonBody decodes a small JSON request body into v, Convex-style: the
// content type must be JSON and errors are 400 BadJsonBody.
func jsonBody(r *http.Request, v any) *apiError {
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" && !strings.HasSuffix(ct, "+json") {
		return badRequest("BadJsonBody", "Expected request with `Content-Type: application/json`")
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, 16<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("BadJsonBody", "Failed to deserialize the JSON body: "+err.Error())
	}
	return nil
}

// importRecords is import_airbyte_records: a JSON body, or with
// `Content-Type: application/x-protobuf` the same request in recordpb's
// frames (an ImportHeader, then ImportRecords; see importer.ImportProtobuf).
func (s *Server) importRecords(w http.ResponseWriter, r *http.Request) {
	importBody := s.importer.Import
	switch ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); {
	case ct == "application/x-protobuf" || ct == "application/protobuf":
		importBody = s.importer.ImportProtobuf
	case ct != "application/json" && !strings.HasSuffix(ct, "+json"):
		writeError(w, http.StatusBadRequest, "BadJsonBody", "Expected request with `Content-Type: application/json`")
		return
	}
	if r.ContentLength > s.cfg.MaxImportBytes {
		// Refused before reading anything: the client learns at once, not
		// after sending the limit's worth of body.
		s.writeFailure(w, &http.MaxBytesError{Limit: s.cfg.MaxImportBytes})
		return
	}
	key := r.Header.Get("Idempotency-Key")
	if len(key) > 255 {
		writeError(w, http.StatusBadRequest, "InvalidIdempotencyKey", "The Idempotency-Key header must be at most 255 characters")
		return
	}
	body := &countingReader{r: http.MaxBytesReader(w, r.Body, s.cfg.MaxImportBytes)}
	n, dup, err := importBody(r.Context(), body, key)
	rows := n
	if dup || err != nil {
		rows = 0 // imported before (an idempotent retry), or not at all
	}
	s.metrics.Imported(rows, body.n)
	if err != nil {
		s.writeImportFailure(w, err)
		return
	}
	s.log.Debug().Int("records", n).Bool("duplicate", dup).Str("client", r.Header.Get("Convex-Client")).Msg("import")
	w.WriteHeader(http.StatusOK)
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (s *Server) addPrimaryKeyIndexes(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Indexes map[string][][]string `json:"indexes"`
	}
	if e := jsonBody(r, &body); e != nil {
		s.writeFailure(w, e)
		return
	}
	if body.Indexes == nil {
		s.writeFailure(w, badRequest("BadJsonBody", "Failed to deserialize the JSON body: missing field `indexes`"))
		return
	}
	if err := s.importer.AddPrimaryKeyIndexes(r.Context(), body.Indexes); err != nil {
		s.writeImportFailure(w, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (s *Server) primaryKeyIndexesReady(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Tables []string `json:"tables"`
	}
	if e := jsonBody(r, &body); e != nil {
		s.writeFailure(w, e)
		return
	}
	ready, err := s.importer.IndexesReady(r.Context(), body.Tables)
	if err != nil {
		s.writeImportFailure(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"indexesReady": ready})
}

func (s *Server) clearTables(w http.ResponseWriter, r *http.Request) {
	var body struct {
		TableNames []string `json:"tableNames"`
	}
	if e := jsonBody(r, &body); e != nil {
		s.writeFailure(w, e)
		return
	}
	if err := s.importer.ClearTables(r.Context(), body.TableNames); err != nil {
		s.writeImportFailure(w, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// checkWrite proves imports can write into the given schemas, leaving
// nothing behind (a destination's check).
func (s *Server) checkWrite(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Schemas []string `json:"schemas"`
	}
	if e := jsonBody(r, &body); e != nil {
		s.writeFailure(w, e)
		return
	}
	if len(body.Schemas) == 0 {
		s.writeFailure(w, badRequest("BadJsonBody", "Failed to deserialize the JSON body: `schemas` must name at least one schema"))
		return
	}
	if err := s.importer.CheckWrite(r.Context(), body.Schemas); err != nil {
		s.writeImportFailure(w, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (s *Server) replaceTables(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	if e := jsonBody(r, &body); e != nil {
		s.writeFailure(w, e)
		return
	}
	s.writeFailure(w, badRequest("OverwriteNotSupported", "Overwrite sync mode is not supported by replace_tables. Please use clear_tables to empty the tables, then import into them."))
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return itoa(n>>20) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return itoa(n>>10) + " KiB"
	}
	return itoa(n) + " bytes"
}
