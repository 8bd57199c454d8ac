package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/shapelog/shapelog/engine/snapshot"
)

// maxSnapshotRanges bounds list_snapshot_ranges' ranges argument.
const maxSnapshotRanges = 64

// listSnapshotRanges starts a snapshot of one table, as a first
// list_snapshot call does, and answers cursors that read it in disjoint
// key ranges, so that a client can read them concurrently: each is a
// list_snapshot cursor of the snapshot, and the ranges, in order, cover the
// table. A table without a primary key (or too small to split) gets one.
// This is an extension of the engine, not in Convex's API.
func (s *Server) listSnapshotRanges(w http.ResponseWriter, r *http.Request) {
	raw, ae := requestArgs(r)
	if ae != nil {
		s.writeFailure(w, ae)
		return
	}
	args, ae := exportArgsOf(r, raw)
	if ae != nil {
		s.writeFailure(w, ae)
		return
	}
	if args.TableName == "" {
		s.writeFailure(w, badRequest("BadQueryArgs", "Missing `tableName`: list_snapshot_ranges reads one table"))
		return
	}
	if args.Cursor != nil {
		s.writeFailure(w, badRequest("BadQueryArgs", "list_snapshot_ranges takes no `cursor`: it starts a snapshot"))
		return
	}
	n := 1
	if v, ok := raw["ranges"]; ok && v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 || n > maxSnapshotRanges {
			s.writeFailure(w, badRequest("BadQueryArgs", fmt.Sprintf("Invalid `ranges` %q: expected an integer from 1 to %d", v, maxSnapshotRanges)))
			return
		}
	}
	cur, tables, err := s.snapshotPosition(r, args, false)
	if err != nil {
		s.writeFailure(w, err)
		return
	}
	var splits [][]string
	if t := tables[0]; snapshot.Keyed(t) {
		if splits, err = s.snaps.SplitKeys(r.Context(), t, n); err != nil {
			s.writeFailure(w, fmt.Errorf("splitting table %s into %d ranges: %w", cur.Table, n, err))
			return
		}
	}
	cursors := make([]string, 0, len(splits)+1)
	for i := range len(splits) + 1 {
		c := *cur
		if i > 0 {
			c.Key = splits[i-1]
		}
		if i < len(splits) {
			c.Until = splits[i]
		}
		b, _ := json.Marshal(&c)
		cursors = append(cursors, string(b))
	}
	writeJSON(w, http.StatusOK, struct {
		Snapshot int64    `json:"snapshot"`
		Cursors  []string `json:"cursors"`
	}{cur.Ts, cursors})
}
