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
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

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
	Protobuf  bool // answer in protobuf frames (export_proto.go)
	Limit     int
}

func parseExportArgs(r *http.Request) (*exportArgs, *apiError) {
	raw, ae := requestArgs(r)
	if ae != nil {
		return nil, ae
	}
	return exportArgsOf(r, raw)
}

// requestArgs reads a request's arguments, from the query string (GET) or
// a JSON body (POST; values that are not strings keep their JSON text).
func requestArgs(r *http.Request) (map[string]string, *apiError) {
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
	return raw, nil
}

// exportArgsOf parses the export arguments among raw.
func exportArgsOf(r *http.Request, raw map[string]string) (*exportArgs, *apiError) {
	a := &exportArgs{TableName: raw["tableName"]}
	if a.TableName == "" {
		a.TableName = raw["table_name"]
	}
	var err error
	if a.Format, a.Protobuf, err = parseExportFormat(r, raw["format"]); err != nil {
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

// publishedTables resolves the tables a request covers: one by API name, or
// every published table, after reconciling the publication. That takes the
// reconcile lock and may alter tables and the publication, so requests
// only come here for a table the cheaper lookups (knownTables,
// currentTables) do not find: one created since the last reconcile.
func (s *Server) publishedTables(r *http.Request, name string) ([]*catalog.Table, error) {
	tables, err := s.repl.Reconcile(r.Context())
	if err != nil {
		return nil, err
	}
	return namedTables(tables, name)
}

// knownTables is publishedTables from the last reconciliation, which runs
// periodically and whenever a request needs it, without touching the
// catalog: document_deltas pages and the pages after the first one of a
// snapshot need no more (deltas are described by the log's own relation
// versions). A table not found there is looked up afresh.
func (s *Server) knownTables(r *http.Request, name string) ([]*catalog.Table, error) {
	tables, err := namedTables(s.repl.Tables(), name)
	if err == nil && len(tables) > 0 {
		return tables, nil
	}
	if err != nil {
		// A name no published table can have needs no reconcile.
		if schema, _, perr := catalog.ParseAPIName(name); perr != nil || catalog.ReservedSchema(schema) != "" {
			return nil, err
		}
	}
	return s.publishedTables(r, name)
}

// currentTables is publishedTables as the catalog has them now, for
// json_schemas and the first page of a snapshot, which must show a table
// or column added just before: it reads the catalog without the reconcile
// lock and without writing, and reconciles only for a selected table that
// is not published yet (or a named one the last reconcile did not see, or
// that changed how it is published).
func (s *Server) currentTables(r *http.Request, name string) ([]*catalog.Table, error) {
	if name == "" {
		tables, err := s.repl.Current(r.Context())
		if err != nil {
			return nil, err
		}
		return namedTables(tables, "")
	}
	known, err := s.knownTables(r, name)
	if err != nil {
		return nil, err
	}
	t, err := s.repl.CurrentTable(r.Context(), known[0].OID)
	if err != nil {
		return nil, err
	}
	if t == nil {
		// Dropped, renamed or unpublished since the last reconcile.
		return s.publishedTables(r, name)
	}
	return []*catalog.Table{t}, nil
}

// namedTables picks the table with API name name out of tables, or all of
// them when name is empty. Tables in reserved schemas (the engine's own,
// PostgreSQL's system schemas) are never exported, even when the engine's
// table selection names them.
func namedTables(tables []*catalog.Table, name string) ([]*catalog.Table, error) {
	tables = slices.DeleteFunc(slices.Clone(tables), func(t *catalog.Table) bool { return catalog.ReservedSchema(t.Schema) != "" })
	if name == "" {
		return tables, nil
	}
	schema, table, err := catalog.ParseAPIName(name)
	if err != nil {
		return nil, badRequest("BadQueryArgs", fmt.Sprintf("Invalid `tableName` %q: %v", name, err))
	}
	if why := catalog.ReservedSchema(schema); why != "" {
		return nil, badRequest("TableNotFound", fmt.Sprintf("Table %q is not exported: schema %q is reserved: %s", name, schema, why))
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
	tables, err := s.currentTables(r, "")
	if err != nil {
		s.writeFailure(w, fmt.Errorf("listing the published tables: %w", err))
		return
	}
	estimates, err := s.rowEstimates(r.Context(), tables)
	if err != nil {
		s.writeFailure(w, fmt.Errorf("estimating the tables' row counts: %w", err))
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
	defer rows.Close()
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

// snapshotCursor is list_snapshot's opaque cursor: where the snapshot at
// Ts goes on. It holds no engine state except, for tables without a primary
// key, the held snapshot they are read from.
type snapshotCursor struct {
	V     int      `json:"v"`
	Ts    int64    `json:"ts"`
	Table string   `json:"table"`         // API name of the table being read
	OID   uint32   `json:"oid"`           // its OID, to notice a table dropped and created again
	Key   []string `json:"key,omitempty"` // the last key read; none: from the table's start
	// Until is the last key of the range the cursor reads (none: to the
	// table's end), in a snapshot read in ranges (list_snapshot_ranges).
	Until []string `json:"until,omitempty"`
	// All: the snapshot covers every published table, in API-name order.
	All bool `json:"all,omitempty"`
	// Held is the held snapshot of the tables without a primary key, and
	// After the position (ctid) in the one being read.
	Held  string `json:"held,omitempty"`
	After string `json:"after,omitempty"`
}

const cursorVersion = 2

// legacyCursor is the cursor before snapshots were durable: a held session
// and a position in it. The session did not survive the upgrade's restart;
// its table is read again from the start at the same ts.
type legacyCursor struct {
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

var errBadSnapshotCursor = badRequest("InvalidListSnapshotCursor", "Invalid value for the `cursor` argument of list_snapshot. Use a `cursor` returned by a previous list_snapshot call, and treat it as an opaque value.")

func snapshotTooOld(ts int64, why string) *apiError {
	return badRequest("SnapshotTooOld", fmt.Sprintf("Snapshot value %d is too far in the past: %s. Start a new snapshot (call list_snapshot without `snapshot` and `cursor`).", ts, why))
}

func (s *Server) listSnapshot(w http.ResponseWriter, r *http.Request) {
	args, ae := parseExportArgs(r)
	if ae != nil {
		s.writeFailure(w, ae)
		return
	}
	cur, tables, page, err := s.snapshotPage(r, args, false)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (pe.Code == "42P01" || pe.Code == "42703") && args.Cursor != nil {
		// The table changed since the engine last looked: look again.
		cur, tables, page, err = s.snapshotPage(r, args, true)
	}
	if err != nil {
		if cur != nil {
			err = s.snapshotFailure(cur.Ts, err)
		}
		s.writeFailure(w, err)
		return
	}
	prepared, next, exhausted := page.Prepared, *cur, page.Exhausted
	next.Key, next.After = page.Last, page.After
	more := true
	if exhausted {
		more = s.nextTable(&next, tables)
	}
	p := newPageWriter(w)
	if args.Protobuf {
		p.finishProtoSnapshot(prepared.([]byte), cur.Ts, &next, more)
		return
	}
	p.buf = append(p.buf, `{"values":[`...)
	p.buf = append(p.buf, prepared.([]byte)...)
	recycleBuffer(prepared.([]byte))
	p.buf = append(p.buf, `],"snapshot":`...)
	p.buf = strconv.AppendInt(p.buf, cur.Ts, 10)
	if !more {
		p.buf = append(p.buf, `,"cursor":null,"hasMore":false}`...)
	} else {
		b, _ := json.Marshal(&next)
		p.buf = append(p.buf, `,"cursor":`...)
		p.buf = appendString(p.buf, string(b))
		p.buf = append(p.buf, `,"hasMore":true}`...)
	}
	p.finish()
}

// snapshotPage reads the page a list_snapshot call asks for, and returns
// the position it read from and the tables the snapshot covers. fresh looks
// the tables up in the catalog even for a cursor.
func (s *Server) snapshotPage(r *http.Request, args *exportArgs, fresh bool) (*snapshotCursor, []*catalog.Table, *snapshot.Page, error) {
	cur, tables, err := s.snapshotPosition(r, args, fresh)
	if err != nil {
		return nil, nil, nil, err
	}
	t, err := s.cursorTable(cur, tables)
	if err != nil {
		return nil, nil, nil, err
	}
	rend := newExportRenderer(t, args.Format, args.Protobuf)
	// Pages are rendered as they are read, the next one in the background
	// while this one travels.
	prepare := func() (func([][]byte) error, func() (any, error)) {
		buf := (*pageBuffers.Get().(*[]byte))[:0]
		var key []byte
		add := func(values [][]byte) error {
			buf = rend.startDoc(buf)
			key = rend.table.AppendKey(key[:0], values)
			var err error
			buf, err = rend.appendDoc(buf, docSnapshot, cur.Ts, key, values)
			return err
		}
		return add, func() (any, error) { return buf, nil }
	}
	limit := cmp.Or(args.Limit, snapshotPageDefault)
	var page *snapshot.Page
	if snapshot.Keyed(t) {
		page, err = s.snaps.ReadKeyed(r.Context(), t, cur.Ts, snapshot.KeyRange{After: cur.Key, Until: cur.Until}, limit, nil, args.prepareKey(), prepare)
	} else {
		page, err = s.readHeld(r, cur, t, limit, args.prepareKey(), prepare)
	}
	if err != nil {
		err = fmt.Errorf("reading snapshot page of %s at ts %d: %w", cur.Table, cur.Ts, err)
	}
	return cur, tables, page, err
}

// snapshotFailure explains why a page of the snapshot at ts cannot be read.
func (s *Server) snapshotFailure(ts int64, err error) error {
	var pe *pgconn.PgError
	switch {
	case errors.Is(err, snapshot.ErrTooOld):
		return snapshotTooOld(ts, "the engine's log no longer holds the changes after it (it is older than the engine's --retention)")
	case errors.Is(err, snapshot.ErrGone):
		return snapshotTooOld(ts, "the snapshot of a table without a primary key is held open while it is read, and it was lost ("+err.Error()+")")
	case errors.Is(err, snapshot.ErrCannotRewind):
		return snapshotTooOld(ts, err.Error())
	case errors.As(err, &pe) && strings.HasPrefix(pe.Code, "22"):
		// A key in the cursor PostgreSQL would not take.
		return errBadSnapshotCursor
	}
	return err
}

// nextTable moves cur to the table after its own in a snapshot of every
// table (in the order tables are listed), and reports whether there is one.
// A cursor of one table, ranged or not, stays where it is.
func (s *Server) nextTable(cur *snapshotCursor, tables []*catalog.Table) bool {
	if !cur.All {
		return false
	}
	i := slices.IndexFunc(tables, func(t *catalog.Table) bool { return catalog.APIName(t.Schema, t.Name) == cur.Table })
	if i < 0 || i+1 >= len(tables) {
		return false
	}
	t := tables[i+1]
	cur.Table, cur.OID, cur.Key, cur.After = catalog.APIName(t.Schema, t.Name), t.OID, nil, ""
	return true
}

// cursorTable is the table a position reads, which must still be the one the
// snapshot began with.
func (s *Server) cursorTable(cur *snapshotCursor, tables []*catalog.Table) (*catalog.Table, error) {
	for _, t := range tables {
		if catalog.APIName(t.Schema, t.Name) == cur.Table {
			if cur.OID != 0 && t.OID != cur.OID {
				return nil, snapshotTooOld(cur.Ts, fmt.Sprintf("table %q was dropped and created again since the snapshot began", cur.Table))
			}
			if cur.Key != nil && len(cur.Key) != len(t.Key) {
				return nil, snapshotTooOld(cur.Ts, fmt.Sprintf("the primary key of table %q changed since the snapshot began", cur.Table))
			}
			if cur.Until != nil && !snapshot.Keyed(t) {
				return nil, snapshotTooOld(cur.Ts, fmt.Sprintf("table %q no longer has a primary key checked row by row, which reading it in ranges needs", cur.Table))
			}
			if cur.Until != nil && len(cur.Until) != len(t.Key) {
				return nil, errBadSnapshotCursor
			}
			return t, nil
		}
	}
	return nil, snapshotTooOld(cur.Ts, fmt.Sprintf("table %q is no longer published (dropped, renamed or deselected)", cur.Table))
}

// readHeld reads a page of a table without a primary key from the held
// snapshot in cur, which must still be there.
func (s *Server) readHeld(r *http.Request, cur *snapshotCursor, t *catalog.Table, limit int, key string, prepare snapshot.Prepare) (*snapshot.Page, error) {
	sess, err := s.snaps.Lookup(cur.Held)
	if err != nil {
		return nil, err
	}
	ti := slices.IndexFunc(sess.Tables, func(st *catalog.Table) bool { return st.OID == t.OID })
	if ti < 0 || sess.Ts != cur.Ts {
		return nil, errBadSnapshotCursor
	}
	prepared, last, exhausted, err := sess.Read(r.Context(), ti, cur.After, limit, key, prepare)
	if err != nil {
		return nil, err
	}
	if exhausted && ti == len(sess.Tables)-1 {
		// Keep the snapshot a moment so a retried last page still works,
		// but not longer: an open snapshot holds back vacuum and makes
		// CREATE INDEX CONCURRENTLY wait.
		time.AfterFunc(5*time.Second, sess.Close)
	}
	return &snapshot.Page{Prepared: prepared, After: last, Exhausted: exhausted}, nil
}

// snapshotPosition finds where a list_snapshot call reads: where its cursor
// points, or the start of a new snapshot (at `snapshot` when given), and the
// published tables it may cover.
func (s *Server) snapshotPosition(r *http.Request, args *exportArgs, fresh bool) (*snapshotCursor, []*catalog.Table, error) {
	find := s.currentTables
	if args.Cursor != nil && !fresh {
		find = s.knownTables
	}
	tables, err := find(r, args.TableName)
	if err != nil {
		return nil, nil, fmt.Errorf("listing the published tables: %w", err)
	}
	if len(tables) == 0 {
		return nil, nil, badRequest("NoTables", "No table is published: create a table in the selected schemas or adjust the engine's table selection")
	}
	if args.Snapshot != nil && *args.Snapshot > s.store.Durable().Ts {
		return nil, nil, badRequest("SnapshotTooNew", fmt.Sprintf("Snapshot value %d is in the future.", *args.Snapshot))
	}
	if args.Cursor == nil {
		return s.startSnapshot(r, args, tables)
	}
	var version struct {
		V int `json:"v"`
	}
	if err := json.Unmarshal([]byte(*args.Cursor), &version); err != nil {
		return nil, nil, errBadSnapshotCursor
	}
	if version.V != cursorVersion {
		return s.legacyPosition(args, tables)
	}
	var cur snapshotCursor
	if err := json.Unmarshal([]byte(*args.Cursor), &cur); err != nil {
		return nil, nil, errBadSnapshotCursor
	}
	if cur.Table == "" || (cur.After != "" && !validPosition(cur.After)) {
		return nil, nil, errBadSnapshotCursor
	}
	if cur.Until != nil && (cur.All || cur.Held != "" || cur.After != "") {
		// Only a table with a primary key is read in ranges, one at a time.
		return nil, nil, errBadSnapshotCursor
	}
	if cur.Ts > s.store.Durable().Ts {
		// Only a forged cursor, or one from an engine whose storage was
		// restored from an older backup: pages would show rows from before
		// ts under ts, and the changes in between would be lost.
		return nil, nil, badRequest("SnapshotTooNew", fmt.Sprintf("The `cursor` is of snapshot %d, which is ahead of the engine's log: it did not come from this engine's log.", cur.Ts))
	}
	if args.Snapshot != nil && *args.Snapshot != cur.Ts {
		return nil, nil, badRequest("InvalidListSnapshotCursor", fmt.Sprintf("The `cursor` belongs to snapshot %d, not %d.", cur.Ts, *args.Snapshot))
	}
	if args.TableName != "" && (cur.All || cur.Table != catalog.APIName(tables[0].Schema, tables[0].Name)) {
		return nil, nil, badRequest("InvalidListSnapshotCursor", fmt.Sprintf("The `cursor` is for another table than %q.", args.TableName))
	}
	return &cur, tables, nil
}

// startSnapshot positions a new snapshot at the start of its first table.
// With `snapshot` given it is taken at that ts, which works for tables with
// a primary key while the log still holds the changes after it.
func (s *Server) startSnapshot(r *http.Request, args *exportArgs, tables []*catalog.Table) (*snapshotCursor, []*catalog.Table, error) {
	cur := &snapshotCursor{V: cursorVersion, All: args.TableName == "", Table: catalog.APIName(tables[0].Schema, tables[0].Name), OID: tables[0].OID}
	var keyless []*catalog.Table
	for _, t := range tables {
		if !snapshot.Keyed(t) {
			keyless = append(keyless, t)
		}
	}
	switch {
	case len(keyless) > 0 && args.Snapshot != nil:
		return nil, nil, snapshotTooOld(*args.Snapshot, fmt.Sprintf("table %q has no primary key (or a DEFERRABLE one), so its snapshot is held while it is read and cannot be taken in the past", catalog.APIName(keyless[0].Schema, keyless[0].Name)))
	case len(keyless) > 0:
		// The held snapshot sets the ts for the whole snapshot; the keyed
		// tables are turned back to it like any other.
		sess, err := s.snaps.Begin(r.Context(), keyless)
		if err != nil {
			return nil, nil, fmt.Errorf("holding a snapshot of %d tables without a primary key: %w", len(keyless), err)
		}
		cur.Held, cur.Ts = sess.ID, sess.Ts
	case args.Snapshot != nil:
		if *args.Snapshot < s.store.Horizon() {
			return nil, nil, snapshotTooOld(*args.Snapshot, "the engine's log no longer holds the changes after it (it is older than the engine's --retention)")
		}
		cur.Ts = *args.Snapshot
	default:
		ts, _, err := s.snaps.Start(r.Context())
		if err != nil {
			return nil, nil, fmt.Errorf("starting a snapshot: %w", err)
		}
		cur.Ts = ts
	}
	return cur, tables, nil
}

// legacyPosition continues a cursor from before durable snapshots: the
// table it was reading (or, in a snapshot of every table, the first) is read
// again from its start at the same ts, so nothing is lost; rows already
// sent come again.
func (s *Server) legacyPosition(args *exportArgs, tables []*catalog.Table) (*snapshotCursor, []*catalog.Table, error) {
	var old legacyCursor
	if err := json.Unmarshal([]byte(*args.Cursor), &old); err != nil || old.Session == "" || old.Table < 0 || (old.After != "" && !validPosition(old.After)) {
		return nil, nil, errBadSnapshotCursor
	}
	if args.Snapshot == nil {
		return nil, nil, snapshotTooOld(0, "the engine no longer holds it (it was idle too long, or the engine restarted); pass `snapshot` with the cursor to continue it")
	}
	ts := *args.Snapshot
	if ts < s.store.Horizon() {
		return nil, nil, snapshotTooOld(ts, "the engine's log no longer holds the changes after it (it is older than the engine's --retention)")
	}
	t := tables[0]
	if !snapshot.Keyed(t) || (args.TableName == "" && slices.ContainsFunc(tables, func(t *catalog.Table) bool { return !snapshot.Keyed(t) })) {
		return nil, nil, snapshotTooOld(ts, "the engine no longer holds it (it was idle too long, or the engine restarted), and a table without a primary key (or with a DEFERRABLE one) can only be read from a held snapshot")
	}
	return &snapshotCursor{V: cursorVersion, Ts: ts, All: args.TableName == "", Table: catalog.APIName(t.Schema, t.Name), OID: t.OID}, tables, nil
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
		tables, err := s.knownTables(r, args.TableName)
		if err != nil {
			s.writeFailure(w, fmt.Errorf("listing the published tables: %w", err))
			return
		}
		oid = tables[0].OID
	}
	limit := args.Limit
	if limit == 0 {
		limit = deltasPageDefault
	}
	renderers := &relationRenderers{s: s, format: args.Format, proto: args.Protobuf}
	it, err := s.store.NetChanges(cursor, upTo, oid, renderers.identifiesRows(r.Context()))
	if errors.Is(err, shapelog.ErrExpired) {
		// oldestCursor (not in Convex's API) is the lowest cursor served
		// now: where a client that must start over can still read deletes.
		writeJSON(w, http.StatusBadRequest, struct {
			apiError
			OldestCursor int64 `json:"oldestCursor"`
		}{apiError{Code: "InvalidWindowToReadDocuments", Message: fmt.Sprintf("Trying to synchronize from timestamp %d, which is older than the database’s retention window. This may happen if you paused your Fivetran or Airbyte connector for a long period of time. Please perform a full sync of the connector. See https://fivetran.com/docs/connectors/troubleshooting/trigger-historical-re-syncs or https://docs.airbyte.com/platform/operator-guides/refreshes", cursor+1)}, s.store.Horizon()})
		return
	}
	if err != nil {
		s.writeFailure(w, fmt.Errorf("reading deltas after ts %d: %w", cursor, err))
		return
	}
	defer it.Close()
	p := newPageWriter(w)
	p.startValues(args.Protobuf)
	n, lastTs, hasMore := 0, cursor, false
	for {
		// A page ends on a transaction boundary: once it is full, only the
		// rest of the current transaction is read, not the next one.
		if n >= limit {
			if !it.NextInTransaction() {
				hasMore = it.More()
				break
			}
		} else if !it.Next() {
			break
		}
		e := it.Entry()
		lastTs = e.Ts
		rend, err := renderers.get(r.Context(), e.Relation, e.Version)
		if err != nil {
			p.fail(s, fmt.Errorf("reading deltas after ts %d, at ts %d: %w", cursor, e.Ts, err))
			return
		}
		if rend == nil {
			continue // a table in a reserved schema
		}
		p.startDoc(rend, n == 0)
		var docs int
		if p.buf, docs, err = rend.appendChange(p.buf, e); err != nil {
			p.fail(s, fmt.Errorf("rendering the change at ts %d of table %s: %w", e.Ts, catalog.APIName(rend.table.Schema, rend.table.Name), err))
			return
		}
		n += docs
		if err := p.maybeFlush(); err != nil {
			return // client went away
		}
	}
	if err := it.Err(); err != nil {
		p.fail(s, fmt.Errorf("reading deltas after ts %d: %w", cursor, err))
		return
	}
	next := upTo
	if hasMore {
		next = lastTs
	}
	if p.proto {
		p.finishProtoDeltas(next, hasMore)
		return
	}
	p.buf = append(p.buf, `],"cursor":`...)
	p.buf = strconv.AppendInt(p.buf, next, 10)
	p.buf = append(p.buf, `,"hasMore":`...)
	p.buf = strconv.AppendBool(p.buf, hasMore)
	p.buf = append(p.buf, '}')
	p.finish()
}
