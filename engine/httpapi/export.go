package httpapi

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/shapelog/shapelog/engine/catalog"
	"github.com/shapelog/shapelog/engine/shapelog"
	"github.com/shapelog/shapelog/engine/snapshot"
)

const (
	snapshotPageDefault = 1024
	deltasPageDefault   = 128
	deltasPageMax       = 100_000
)

// exportArgs are list_snapshot's and document_deltas' arguments, from the
// query string (GET) or a JSON body (POST).
type exportArgs struct {
	Snapshot  *int64
	Cursor    *string
	TableName string
	Format    catalog.Format
	Limit     int
}

func parseExportArgs(r *http.Request) (*exportArgs, *apiError) {
	raw := map[string]string{}
	if r.Method == http.MethodPost {
		if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
			return nil, badRequest("BadJsonBody", "Expected request with `Content-Type: application/json`")
		}
		var body map[string]json.RawMessage
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&body); err != nil {
			return nil, badRequest("BadJsonBody", "Failed to parse the JSON body: "+err.Error())
		}
		for k, v := range body {
			var s string
			if json.Unmarshal(v, &s) == nil {
				raw[k] = s
			} else if string(v) != "null" {
				raw[k] = string(v)
			}
		}
	} else {
		for k, v := range r.URL.Query() {
			if len(v) > 0 {
				raw[k] = v[0]
			}
		}
	}
	a := &exportArgs{TableName: raw["tableName"]}
	if a.TableName == "" {
		a.TableName = raw["table_name"]
	}
	var err error
	if a.Format, err = catalog.ParseFormat(raw["format"]); err != nil {
		return nil, badRequest("BadFormat", err.Error())
	}
	if v, ok := raw["snapshot"]; ok && v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return nil, badRequest("BadQueryArgs", fmt.Sprintf("Invalid `snapshot` %q: expected a timestamp (a non-negative integer) returned by list_snapshot", v))
		}
		a.Snapshot = &n
	}
	if v, ok := raw["cursor"]; ok && v != "" {
		a.Cursor = &v
	}
	if v, ok := raw["limit"]; ok && v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > deltasPageMax {
			return nil, badRequest("BadQueryArgs", fmt.Sprintf("Invalid `limit` %q: expected an integer from 1 to %d", v, deltasPageMax))
		}
		a.Limit = n
	}
	return a, nil
}

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
	default:
		s.log.Error().Err(err).Msg("request failed")
		writeError(w, http.StatusInternalServerError, "InternalServerError", "Your request couldn't be completed. Try again later.")
	}
}

// publishedTables resolves the tables a request covers: one by API name, or
// every published table.
func (s *Server) publishedTables(r *http.Request, name string) ([]*catalog.Table, error) {
	tables, err := s.repl.Reconcile(r.Context())
	if err != nil {
		return nil, err
	}
	if name == "" {
		return tables, nil
	}
	schema, table, err := catalog.ParseAPIName(name)
	if err != nil {
		return nil, badRequest("BadQueryArgs", fmt.Sprintf("Invalid `tableName` %q: %v", name, err))
	}
	for _, t := range tables {
		if t.Schema == schema && t.Name == table {
			return []*catalog.Table{t}, nil
		}
	}
	return nil, badRequest("TableNotFound", fmt.Sprintf("Table %q is not published by this engine: check the name (schema-qualified as schema.table outside public) and the engine's table selection", name))
}

func (s *Server) jsonSchemas(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	format, err := catalog.ParseFormat(q.Get("format"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "BadFormat", err.Error())
		return
	}
	delta := false
	if v := q.Get("deltaSchema"); v != "" {
		if delta, err = strconv.ParseBool(v); err != nil {
			writeError(w, http.StatusBadRequest, "BadQueryArgs", fmt.Sprintf("Invalid `deltaSchema` %q: expected true or false", v))
			return
		}
	}
	tables, err := s.publishedTables(r, "")
	if err != nil {
		s.writeFailure(w, err)
		return
	}
	estimates, err := s.rowEstimates(r.Context(), tables)
	if err != nil {
		s.writeFailure(w, err)
		return
	}
	out := map[string]any{}
	for _, t := range tables {
		schema := tableSchema(t, format, delta)
		schema["$rowEstimate"] = estimates[t.OID]
		out[catalog.APIName(t.Schema, t.Name)] = schema
	}
	writeJSON(w, http.StatusOK, out)
}

// rowEstimates returns the planner's row count estimate of each table (the
// sum over its leaf partitions; 0 for a table never analyzed).
func (s *Server) rowEstimates(ctx context.Context, tables []*catalog.Table) (map[uint32]int64, error) {
	oids := make([]uint32, len(tables))
	for i, t := range tables {
		oids[i] = t.OID
	}
	rows, err := s.pool.Query(ctx, `
		SELECT t.oid, coalesce(sum(greatest(c.reltuples, 0)), 0)::int8
		FROM unnest($1::oid[]) AS t(oid), pg_partition_tree(t.oid) AS p
		JOIN pg_class c ON c.oid = p.relid
		WHERE p.isleaf
		GROUP BY t.oid`, oids)
	if err != nil {
		return nil, err
	}
	out := map[uint32]int64{}
	for rows.Next() {
		var oid uint32
		var n int64
		if err := rows.Scan(&oid, &n); err != nil {
			return nil, err
		}
		out[oid] = n
	}
	return out, rows.Err()
}

// snapshotCursor is list_snapshot's opaque cursor.
type snapshotCursor struct {
	Session string `json:"snapshot"`
	Table   int    `json:"table"`
	After   string `json:"after"`
}

var positionPattern = regexp.MustCompile(`^(?:(\d{1,10}):)?\((\d{1,10}),(\d{1,5})\)$`)

// validPosition accepts a snapshot position PostgreSQL will take (a rejected
// one would abort the snapshot's transaction): a tuple id, block < 2^32 and
// offset < 2^16, prefixed by "<leaf OID>:" in a partitioned table.
func validPosition(s string) bool {
	m := positionPattern.FindStringSubmatch(s)
	if m == nil {
		return false
	}
	_, err1 := strconv.ParseUint(cmp.Or(m[1], "0"), 10, 32)
	_, err2 := strconv.ParseUint(m[2], 10, 32)
	_, err3 := strconv.ParseUint(m[3], 10, 16)
	return err1 == nil && err2 == nil && err3 == nil
}

func parseSnapshotCursor(s string) (*snapshotCursor, *apiError) {
	var c snapshotCursor
	bad := badRequest("InvalidListSnapshotCursor", "Invalid value for the `cursor` argument of list_snapshot. Use a `cursor` returned by a previous list_snapshot call, and treat it as an opaque value.")
	if err := json.Unmarshal([]byte(s), &c); err != nil || c.Session == "" || c.Table < 0 {
		return nil, bad
	}
	if c.After != "" && !validPosition(c.After) {
		return nil, bad
	}
	return &c, nil
}

func snapshotTooOld(ts int64, why string) *apiError {
	return badRequest("SnapshotTooOld", fmt.Sprintf("Snapshot value %d is too far in the past: %s. Start a new snapshot (call list_snapshot without `snapshot` and `cursor`).", ts, why))
}

func (s *Server) listSnapshot(w http.ResponseWriter, r *http.Request) {
	args, ae := parseExportArgs(r)
	if ae != nil {
		s.writeFailure(w, ae)
		return
	}
	sess, cur, err := s.snapshotSession(r, args)
	if err != nil {
		s.writeFailure(w, err)
		return
	}
	rend := newRenderer(sess.Tables[cur.Table], args.Format)
	// Pages are rendered by the snapshot session, the next one in the
	// background while this one travels.
	prepared, last, exhausted, err := sess.Read(r.Context(), cur.Table, cur.After, cmp.Or(args.Limit, snapshotPageDefault), args.Format.String(), func() (func([][]byte) error, func() (any, error)) {
		buf := (*pageBuffers.Get().(*[]byte))[:0]
		var key []byte
		add := func(values [][]byte) error {
			if len(buf) > 0 {
				buf = append(buf, ',')
			}
			key = rend.table.AppendKey(key[:0], values)
			var err error
			buf, err = rend.appendDoc(buf, docSnapshot, sess.Ts, key, values)
			return err
		}
		return add, func() (any, error) { return buf, nil }
	})
	if err != nil {
		if errors.Is(err, snapshot.ErrGone) {
			err = snapshotTooOld(sess.Ts, "the snapshot was lost ("+err.Error()+")")
		}
		s.writeFailure(w, err)
		return
	}
	p := newPageWriter(w)
	p.buf = append(p.buf, `{"values":[`...)
	p.buf = append(p.buf, prepared.([]byte)...)
	recycleBuffer(prepared.([]byte))
	p.buf = append(p.buf, `],"snapshot":`...)
	p.buf = strconv.AppendInt(p.buf, sess.Ts, 10)
	next := &snapshotCursor{Session: sess.ID, Table: cur.Table, After: last}
	if exhausted {
		next = &snapshotCursor{Session: sess.ID, Table: cur.Table + 1}
		if next.Table >= len(sess.Tables) {
			next = nil
			// Keep the snapshot a moment so a retried last page still works,
			// but not longer: an open snapshot holds back vacuum and makes
			// CREATE INDEX CONCURRENTLY wait.
			time.AfterFunc(5*time.Second, sess.Close)
		}
	}
	if next == nil {
		p.buf = append(p.buf, `,"cursor":null,"hasMore":false}`...)
	} else {
		b, _ := json.Marshal(next)
		p.buf = append(p.buf, `,"cursor":`...)
		p.buf = appendString(p.buf, string(b))
		p.buf = append(p.buf, `,"hasMore":true}`...)
	}
	p.finish()
}

// snapshotSession finds or starts the snapshot a list_snapshot call reads.
func (s *Server) snapshotSession(r *http.Request, args *exportArgs) (*snapshot.Session, *snapshotCursor, error) {
	if args.Cursor != nil {
		cur, ae := parseSnapshotCursor(*args.Cursor)
		if ae != nil {
			return nil, nil, ae
		}
		sess, err := s.snaps.Lookup(cur.Session)
		if err != nil {
			ts := int64(0)
			if args.Snapshot != nil {
				ts = *args.Snapshot
			}
			return nil, nil, snapshotTooOld(ts, "the engine no longer holds it (it was idle too long, or the engine restarted)")
		}
		if args.Snapshot != nil && *args.Snapshot != sess.Ts {
			return nil, nil, badRequest("InvalidListSnapshotCursor", fmt.Sprintf("The `cursor` belongs to snapshot %d, not %d.", sess.Ts, *args.Snapshot))
		}
		if cur.Table >= len(sess.Tables) {
			return nil, nil, badRequest("InvalidListSnapshotCursor", "Invalid value for the `cursor` argument of list_snapshot: it points past the snapshot's last table.")
		}
		if args.TableName != "" && catalog.APIName(sess.Tables[cur.Table].Schema, sess.Tables[cur.Table].Name) != args.TableName {
			return nil, nil, badRequest("InvalidListSnapshotCursor", fmt.Sprintf("The `cursor` is for another table than %q.", args.TableName))
		}
		return sess, cur, nil
	}
	if args.Snapshot != nil {
		if *args.Snapshot > s.store.Durable().Ts {
			return nil, nil, badRequest("SnapshotTooNew", fmt.Sprintf("Snapshot value %d is in the future.", *args.Snapshot))
		}
		return nil, nil, snapshotTooOld(*args.Snapshot, "only snapshots taken by list_snapshot can be continued, and only with their `cursor`")
	}
	tables, err := s.publishedTables(r, args.TableName)
	if err != nil {
		return nil, nil, err
	}
	if len(tables) == 0 {
		return nil, nil, badRequest("NoTables", "No table is published: create a table in the selected schemas or adjust the engine's table selection")
	}
	sess, err := s.snaps.Begin(r.Context(), tables)
	if err != nil {
		return nil, nil, err
	}
	return sess, &snapshotCursor{Session: sess.ID}, nil
}

func (s *Server) documentDeltas(w http.ResponseWriter, r *http.Request) {
	args, ae := parseExportArgs(r)
	if ae != nil {
		s.writeFailure(w, ae)
		return
	}
	if args.Cursor == nil {
		writeError(w, http.StatusBadRequest, "DocumentDeltasCursorRequired", "/api/document_deltas requires a cursor")
		return
	}
	cursor, err := strconv.ParseInt(*args.Cursor, 10, 64)
	if err != nil || cursor < 0 {
		writeError(w, http.StatusBadRequest, "BadQueryArgs", fmt.Sprintf("Invalid `cursor` %q: expected the integer `cursor` of a previous document_deltas call or the `snapshot` of list_snapshot", *args.Cursor))
		return
	}
	upTo := s.store.Durable().Ts
	if cursor > upTo {
		writeError(w, http.StatusBadRequest, "CursorTooNew", fmt.Sprintf("Cursor %d is ahead of the engine's log (at %d): it did not come from this engine.", cursor, upTo))
		return
	}
	var oid uint32
	if args.TableName != "" {
		tables, err := s.publishedTables(r, args.TableName)
		if err != nil {
			s.writeFailure(w, err)
			return
		}
		oid = tables[0].OID
	}
	limit := args.Limit
	if limit == 0 {
		limit = deltasPageDefault
	}
	it, err := s.store.Changes(cursor, upTo, oid)
	if errors.Is(err, shapelog.ErrExpired) {
		writeError(w, http.StatusBadRequest, "InvalidWindowToReadDocuments", fmt.Sprintf("Trying to synchronize from timestamp %d, which is older than the database’s retention window. This may happen if you paused your Fivetran or Airbyte connector for a long period of time. Please perform a full sync of the connector. See https://fivetran.com/docs/connectors/troubleshooting/trigger-historical-re-syncs or https://docs.airbyte.com/platform/operator-guides/refreshes", cursor+1))
		return
	}
	if err != nil {
		s.writeFailure(w, err)
		return
	}
	defer it.Close()
	renderers := &relationRenderers{s: s, format: args.Format}
	p := newPageWriter(w)
	p.buf = append(p.buf, `{"values":[`...)
	n, lastTs, hasMore := 0, cursor, false
	for it.Next() {
		e := it.Entry()
		// A page ends on a transaction boundary.
		if n >= limit && e.Ts != lastTs {
			hasMore = true
			break
		}
		rend, err := renderers.get(r.Context(), e.Relation, e.Version)
		if err != nil {
			p.fail(s, err)
			return
		}
		if n > 0 {
			p.buf = append(p.buf, ',')
		}
		switch e.Op {
		case shapelog.OpInsert, shapelog.OpUpdate:
			if len(e.OldKey) > 0 {
				// The key changed: the old document is gone.
				if p.buf, err = rend.appendDoc(p.buf, docTombstone, e.Ts, e.OldKey, e.Old); err != nil {
					p.fail(s, err)
					return
				}
				p.buf = append(p.buf, ',')
				n++
			}
			p.buf, err = rend.appendDoc(p.buf, docUpsert, e.Ts, e.Key, e.Values)
		case shapelog.OpDelete:
			p.buf, err = rend.appendDoc(p.buf, docTombstone, e.Ts, e.Key, e.Values)
		case shapelog.OpTruncate:
			p.buf = rend.appendTruncate(p.buf, e.Ts)
		}
		if err != nil {
			p.fail(s, err)
			return
		}
		n++
		lastTs = e.Ts
		if err := p.maybeFlush(); err != nil {
			return // client went away
		}
	}
	if err := it.Err(); err != nil {
		p.fail(s, err)
		return
	}
	next := upTo
	if hasMore {
		next = lastTs
	}
	p.buf = append(p.buf, `],"cursor":`...)
	p.buf = strconv.AppendInt(p.buf, next, 10)
	p.buf = append(p.buf, `,"hasMore":`...)
	p.buf = strconv.AppendBool(p.buf, hasMore)
	p.buf = append(p.buf, '}')
	p.finish()
}
