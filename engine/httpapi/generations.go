package httpapi

import (
	"net/http"
)

// deleteOtherGenerations is PUT /api/streaming_import/delete_other_generations
// {"tables": {table: generation}}: the end of an overwrite sync, deleting
// the rows earlier syncs wrote, in one transaction. It answers
// {"deleted": {table: rows}}. This endpoint is ours, not Convex's.
func (s *Server) deleteOtherGenerations(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Tables map[string]int64 `json:"tables"`
	}
	if e := jsonBody(r, &body); e != nil {
		s.writeFailure(w, e)
		return
	}
	if len(body.Tables) == 0 {
		s.writeFailure(w, badRequest("BadJsonBody", "`tables` must map at least one table name to the generation to keep"))
		return
	}
	deleted, err := s.importer.DeleteOtherGenerations(r.Context(), body.Tables)
	if err != nil {
		s.writeImportFailure(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"deleted": deleted})
}
