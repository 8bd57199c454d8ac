package httpapi

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/shapelog/shapelog/engine/shapes"
)

// ShapeConfig configures Electric's shape API (/v1/shape).
type ShapeConfig struct {
	// Secret, when set, must be sent as ?secret= (or the legacy ?api_secret=).
	Secret string
	// LongPoll is how long a live request waits for changes (default 20 s).
	LongPoll time.Duration
	// SSETimeout is how long a live_sse response streams before it ends
	// and the client reconnects (default 60 s, as Electric).
	SSETimeout time.Duration
	// AllowDelete enables DELETE /v1/shape (405 otherwise).
	AllowDelete bool
	// MaxAge and StaleAge are the cache lifetimes of catch-up responses
	// (default 60 and 300 seconds).
	MaxAge, StaleAge int
}

// exposedHeaders are the headers browsers may read (the TS client needs
// them or it fails with MissingHeadersError).
const exposedHeaders = "electric-cursor,electric-handle,electric-has-data,electric-offset,electric-schema,electric-up-to-date,electric-internal-known-error,retry-after"

// cursorEpoch is Electric's origin for live cursors.
var cursorEpoch = time.Date(2024, 10, 9, 0, 0, 0, 0, time.UTC)

// shapeRequest is a parsed /v1/shape request.
type shapeRequest struct {
	def    shapes.Request
	offset shapes.Offset
	now    bool // offset=now
	handle string
	live   bool
	sse    bool // live over Server-Sent Events
	cursor string
}

// shapeErrors collects Electric's per-field validation errors.
type shapeErrors map[string][]string

func (e shapeErrors) add(field, msg string) { e[field] = append(e[field], msg) }

func writeShapeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	if status >= 400 && status != http.StatusConflict {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Surrogate-Control", "no-store")
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func invalidRequest(w http.ResponseWriter, errs shapeErrors) {
	writeShapeJSON(w, http.StatusBadRequest, map[string]any{"message": "Invalid request", "errors": errs})
}

// parseShapeRequest reads the query parameters; unknown ones are ignored.
func parseShapeRequest(q url.Values, legacyTable string) (*shapeRequest, shapeErrors) {
	errs := shapeErrors{}
	req := &shapeRequest{def: shapes.Request{
		Table: q.Get("table"), Where: q.Get("where"), Columns: q.Get("columns"), Replica: q.Get("replica"),
		Log: q.Get("log"), Queryable: q.Get("queryable_columns"), Params: paramsOf(q),
	}, handle: q.Get("handle"), cursor: q.Get("cursor")}
	if legacyTable != "" {
		req.def.Table = legacyTable
		if req.handle == "" {
			req.handle = q.Get("shape_id")
		}
	}
	if req.def.Table == "" {
		errs.add("table", "can't be blank")
	}
	switch r := req.def.Replica; r {
	case "", "default", "full":
	default:
		errs.add("replica", "is invalid")
	}
	switch req.def.Log {
	case "", "full", "changes_only":
	default:
		errs.add("log", "is invalid: use full or changes_only")
	}
	offset, hasOffset := q["offset"]
	switch {
	case !hasOffset || offset[0] == "":
		errs.add("offset", "can't be blank")
	case offset[0] == "now":
		req.now = true
	default:
		o, err := shapes.ParseOffset(offset[0])
		if err != nil {
			errs.add("offset", "has invalid format")
		}
		req.offset = o
	}
	if v, ok := q["live"]; ok && v[0] != "false" {
		req.live = true
	}
	initial := req.now || req.offset.BeforeAll
	if initial {
		req.handle = "" // the TS client sends the new handle with offset=-1 after a 409
	} else if hasOffset && req.handle == "" && len(errs["offset"]) == 0 {
		errs.add("handle", "can't be blank when offset != -1")
	}
	if req.live && req.offset.BeforeAll && hasOffset {
		errs.add("live", "can't be true when offset == -1")
	}
	if req.live && req.now {
		errs.add("live", "can't be true when offset is 'now'")
	}
	// live_sse, or the deprecated experimental_live_sse when it is absent.
	sse, hasSSE := q["live_sse"]
	if !hasSSE {
		sse, hasSSE = q["experimental_live_sse"]
	}
	req.sse = hasSSE && sse[0] != "false"
	if req.sse && !req.live {
		errs.add("live_sse", "can't be true unless live is also true")
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return req, nil
}

// shapeCORS sets the CORS headers every shape response carries.
func (s *Server) shapeCORS(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	origin := r.Header.Get("Origin")
	if origin == "" {
		origin = "*"
	}
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Allow-Methods", "GET, POST, HEAD, DELETE, OPTIONS")
	h.Set("Access-Control-Expose-Headers", exposedHeaders)
	h.Set("Electric-Server", "shapelog/"+s.cfg.Version)
}

// shapeAuthorized checks the secret; false means a 401 was written.
func (s *Server) shapeAuthorized(w http.ResponseWriter, q url.Values) bool {
	secret := s.cfg.Shape.Secret
	if secret == "" || s.cfg.Insecure { // --insecure opens /v1/shape as it opens /api (ELECTRIC_INSECURE)
		return true
	}
	got := q.Get("secret")
	if got == "" {
		got = q.Get("api_secret")
	}
	if subtle.ConstantTimeCompare([]byte(got), []byte(secret)) == 1 {
		return true
	}
	writeShapeJSON(w, http.StatusUnauthorized, map[string]string{"message": "Unauthorized - Invalid API secret"})
	return false
}

func (s *Server) shapeOptions(w http.ResponseWriter, r *http.Request) {
	s.shapeCORS(w, r)
	h := w.Header()
	h.Set("Access-Control-Max-Age", "86400")
	var allowed []string
	for _, name := range strings.Split(r.Header.Get("Access-Control-Request-Headers"), ",") {
		switch n := strings.ToLower(strings.TrimSpace(name)); n {
		case "if-none-match", "traceparent", "content-type": // content-type: POST /v1/shape's JSON body
			allowed = append(allowed, n)
		}
	}
	if len(allowed) > 0 {
		h.Set("Access-Control-Allow-Headers", strings.Join(allowed, ", "))
	}
	w.WriteHeader(http.StatusNoContent)
}

// mustRefetch answers 409 with the handle to start over with.
func (s *Server) mustRefetch(ctx context.Context, w http.ResponseWriter, m *shapes.Manager, def *shapes.Definition, req shapes.Request) {
	h := w.Header()
	// The table may have changed since def was resolved (a parked request's
	// definition is up to a long poll old): the new handle is for today's.
	if d, err := m.Resolve(ctx, req); err == nil {
		def = d
	}
	var cur *shapes.Shape
	if def != nil {
		cur, _ = m.Get(ctx, def, req)
	}
	if cur != nil {
		h.Set("Electric-Handle", cur.Handle)
		h.Set("Cache-Control", "public, max-age=60, must-revalidate")
	} else {
		h.Set("Cache-Control", "public, max-age=1, must-revalidate")
	}
	h.Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusConflict)
	_, _ = w.Write([]byte(shapes.MustRefetch))
}

// shapeFailure answers an error while serving a shape.
func (s *Server) shapeFailure(ctx context.Context, w http.ResponseWriter, m *shapes.Manager, def *shapes.Definition, req shapes.Request, err error) {
	refusal := postgresRefusal(err)
	switch {
	case errors.Is(err, shapes.ErrGone):
		s.mustRefetch(ctx, w, m, def, req)
	case ctx.Err() != nil:
		// the client went away
	case refusal != nil && refusal.Status < 500:
		// Refused by PostgreSQL for what the request asks (a where clause
		// that divides by zero, a failing cast): the client's to fix.
		writeShapeJSON(w, refusal.Status, map[string]string{"message": refusal.Message})
	default:
		s.log.Error().Err(err).Str("table", req.Table).Msg("serving shape failed")
		w.Header().Set("Retry-After", "1")
		writeShapeJSON(w, http.StatusServiceUnavailable, map[string]string{"message": "Unable to serve the shape right now: " + err.Error()})
	}
}

func (s *Server) shapeGet(w http.ResponseWriter, r *http.Request) {
	s.shapeCORS(w, r)
	q := r.URL.Query()
	if !s.shapeAuthorized(w, q) {
		return
	}
	req, errs := parseShapeRequest(q, r.PathValue("root_table"))
	if errs != nil {
		invalidRequest(w, errs)
		return
	}
	sub, ok := subsetOf(w, r, q)
	if !ok {
		return
	}
	m := s.shapeDatabase(w, q)
	if m == nil {
		return
	}
	def, err := m.Resolve(r.Context(), req.def)
	var pe *shapes.ParamError
	if errors.As(err, &pe) {
		invalidRequest(w, shapeErrors{pe.Field: {pe.Msg}})
		return
	} else if err != nil {
		s.shapeFailure(r.Context(), w, m, nil, req.def, err)
		return
	}
	var shape *shapes.Shape
	if req.handle != "" {
		shape = m.Lookup(req.handle)
		if shape == nil || shape.Def.Identity() != def.Identity() {
			s.mustRefetch(r.Context(), w, m, def, req.def)
			return
		}
	} else if shape, err = m.Get(r.Context(), def, req.def); err != nil {
		s.shapeFailure(r.Context(), w, m, def, req.def, err)
		return
	}
	if sub != nil {
		s.serveSubset(w, r, m, shape, req, def, sub)
		return
	}
	if req.now {
		s.shapeNow(w, r, m, shape, req, def)
		return
	}
	if req.sse {
		s.serveSSE(w, r, m, shape, req, def)
		return
	}
	resp, changed, err := s.readShape(r.Context(), m, shape, req)
	if err == nil && req.live && waitsForChanges(resp) {
		p := &parkedRequest{m: m, def: def, shape: shape, req: req, reply: replyOf(r), changed: changed}
		if s.parking.park(w, r, p) {
			return // answered when the shape changes or the long poll ends
		}
		resp, err = s.waitLive(r.Context(), m, shape, req)
	}
	if err != nil {
		var oob outOfBounds
		if errors.As(err, &oob) {
			invalidRequest(w, shapeErrors{"offset": {"out of bounds for this shape"}})
			return
		}
		s.shapeFailure(r.Context(), w, m, def, req.def, err)
		return
	}
	s.answerShape(w, m, shape, req, resp, replyOf(r))
}

// shapeReply is what answering a shape request needs from the HTTP request.
type shapeReply struct {
	ifNoneMatch string
	head        bool // HEAD: headers only
	legacy      bool // /v1/shape/{root_table}: the old header names too
}

func replyOf(r *http.Request) shapeReply {
	return shapeReply{ifNoneMatch: r.Header.Get("If-None-Match"), head: r.Method == http.MethodHead, legacy: r.PathValue("root_table") != ""}
}

// waitsForChanges says whether a live request with this response waits.
func waitsForChanges(resp *shapes.Response) bool { return len(resp.Body) == 0 && resp.UpToDate }

// answerShape writes a shape response: the Electric headers, the cache
// headers and the messages.
func (s *Server) answerShape(w http.ResponseWriter, m *shapes.Manager, shape *shapes.Shape, req *shapeRequest, resp *shapes.Response, reply shapeReply) {
	legacy := reply.legacy
	upToDate := resp.UpToDate && !req.offset.BeforeAll
	h := w.Header()
	h.Set("Electric-Handle", shape.Handle)
	h.Set("Electric-Offset", resp.End.String())
	if legacy {
		h.Set("Electric-Shape-Id", shape.Handle)
		h.Set("Electric-Chunk-Last-Offset", resp.End.String())
	}
	if !req.live {
		h.Set("Electric-Schema", shape.Schema)
	}
	if req.live {
		c := nextCursor(s.longPoll(), req.cursor)
		h.Set("Electric-Cursor", c)
		if legacy {
			h.Set("Electric-Next-Cursor", c)
		}
	}
	if upToDate {
		h.Set("Electric-Up-To-Date", "")
		if legacy {
			h.Set("Electric-Chunk-Up-To-Date", "")
		}
	}
	h.Set("Electric-Has-Data", strconv.FormatBool(len(resp.Body) > 0))
	etag := `"` + shape.Handle + ":" + req.offset.String() + ":" + resp.End.String()
	if len(resp.Body) == 0 && req.live {
		// An empty live reply must never be revalidated by a cache.
		etag += ":" + strconv.FormatInt(time.Now().UnixNano(), 10)
	}
	etag += `"`
	h.Set("ETag", etag)
	switch {
	case req.offset.BeforeAll:
		h.Set("Cache-Control", "public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746")
	case req.live:
		h.Set("Cache-Control", "public, max-age=5, stale-while-revalidate=5")
	default:
		h.Set("Cache-Control", "public, max-age="+strconv.Itoa(s.cfg.Shape.MaxAge)+", stale-while-revalidate="+strconv.Itoa(s.cfg.Shape.StaleAge))
	}
	if inm := reply.ifNoneMatch; inm != "" && strings.Contains(inm, etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Type", "application/json")
	body := make([]byte, 0, len(resp.Body)+96)
	body = append(body, '[')
	body = append(body, resp.Body...)
	if upToDate {
		if len(resp.Body) > 0 {
			body = append(body, ',')
		}
		// Only as far as the shape had looked when the read began: a
		// client drops its subset snapshots once this passes their
		// database_lsn, so it must not run ahead of what it has.
		body = append(body, shapes.UpToDate(max(resp.SeenLSN, resp.End.Tx))...)
	}
	body = append(body, ']')
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if !reply.head {
		_, _ = w.Write(body)
	}
}

// outOfBounds is an offset past the shape's end that did not appear.
type outOfBounds struct{}

func (outOfBounds) Error() string { return "offset out of bounds for this shape" }

func (s *Server) longPoll() time.Duration {
	if s.cfg.Shape.LongPoll > 0 {
		return s.cfg.Shape.LongPoll
	}
	return 20 * time.Second
}

// readShape reads the messages after the request's offset, first waiting a
// little for an offset past the shape's head to appear. changed is the
// shape's change signal from before the read.
func (s *Server) readShape(ctx context.Context, m *shapes.Manager, shape *shapes.Shape, req *shapeRequest) (*shapes.Response, <-chan struct{}, error) {
	// An offset past the head may still be on its way (another engine
	// instance behind the same cache, a head not yet advanced): wait a bit.
	if req.offset.Tx > 0 {
		deadline := time.NewTimer(s.longPoll() / 2)
		defer deadline.Stop()
		for {
			head, changed, err := shape.Head()
			if err != nil {
				return nil, nil, err
			}
			if !head.BeforeAll && (!head.Less(req.offset) || m.Reached(req.offset)) {
				break
			}
			select {
			case <-changed:
			case <-deadline.C:
				return nil, nil, outOfBounds{}
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			}
		}
	}
	_, changed, err := shape.Head()
	if err != nil {
		return nil, nil, err
	}
	resp, err := shape.Read(ctx, req.offset)
	return resp, changed, err
}

// waitLive waits in the request's goroutine, up to the long-poll timeout,
// for changes to a live request's shape; for connections the parking lot
// cannot take.
func (s *Server) waitLive(ctx context.Context, m *shapes.Manager, shape *shapes.Shape, req *shapeRequest) (*shapes.Response, error) {
	timeout := time.NewTimer(s.longPoll())
	defer timeout.Stop()
	for {
		resp, changed, err := s.readShape(ctx, m, shape, req)
		if err != nil || !waitsForChanges(resp) {
			return resp, err
		}
		select {
		case <-changed:
		case <-timeout.C:
			return resp, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// shapeNow answers offset=now: no data, the shape's latest offset.
func (s *Server) shapeNow(w http.ResponseWriter, r *http.Request, m *shapes.Manager, shape *shapes.Shape, req *shapeRequest, def *shapes.Definition) {
	seen := shape.SeenLSN() // before the head, which covers it
	head, err := waitHead(r.Context(), shape)
	if err != nil {
		s.shapeFailure(r.Context(), w, m, def, req.def, err)
		return
	}
	h := w.Header()
	h.Set("Electric-Handle", shape.Handle)
	h.Set("Electric-Offset", head.String())
	h.Set("Electric-Schema", shape.Schema)
	h.Set("Electric-Up-To-Date", "")
	h.Set("Electric-Has-Data", "false")
	h.Set("Cache-Control", "public, max-age="+strconv.Itoa(s.cfg.Shape.MaxAge)+", stale-while-revalidate="+strconv.Itoa(s.cfg.Shape.StaleAge))
	h.Set("ETag", `"`+shape.Handle+":now:"+head.String()+":"+strconv.FormatInt(time.Now().UnixNano(), 10)+`"`)
	h.Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("[" + string(shapes.UpToDate(seen)) + "]"))
}

// waitHead waits for a shape's snapshot to end and returns its head.
func waitHead(ctx context.Context, shape *shapes.Shape) (shapes.Offset, error) {
	for {
		head, changed, err := shape.Head()
		if err != nil || !head.BeforeAll {
			return head, err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return head, ctx.Err()
		}
	}
}

// nextCursor is Electric's live cursor: the end of the current long-poll
// interval since cursorEpoch, strictly greater than the client's.
func nextCursor(interval time.Duration, prev string) string {
	t := int64(interval / time.Second)
	if t <= 0 {
		return "0"
	}
	since := time.Since(cursorEpoch).Seconds()
	next := int64(math.Ceil(since/float64(t))) * t
	if p, err := strconv.ParseInt(prev, 10, 64); err == nil && next <= p {
		next = p + 1 + rand.Int64N(3600)
	}
	return strconv.FormatInt(next, 10)
}

func (s *Server) shapeDelete(w http.ResponseWriter, r *http.Request) {
	s.shapeCORS(w, r)
	w.Header().Set("Cache-Control", "no-cache")
	q := r.URL.Query()
	if !s.shapeAuthorized(w, q) {
		return
	}
	if !s.cfg.Shape.AllowDelete {
		writeShapeJSON(w, http.StatusMethodNotAllowed, map[string]string{"message": "DELETE not allowed"})
		return
	}
	m := s.shapeDatabase(w, q)
	if m == nil {
		return
	}
	handle := q.Get("handle")
	var shape *shapes.Shape
	if q.Get("table") != "" {
		def, err := m.Resolve(r.Context(), shapes.Request{Table: q.Get("table"), Where: q.Get("where"), Columns: q.Get("columns"), Replica: q.Get("replica"), Log: q.Get("log"), Queryable: q.Get("queryable_columns"), Params: paramsOf(q)})
		var pe *shapes.ParamError
		if errors.As(err, &pe) {
			invalidRequest(w, shapeErrors{pe.Field: {pe.Msg}})
			return
		} else if err != nil {
			s.shapeFailure(r.Context(), w, m, nil, shapes.Request{}, err)
			return
		}
		shape = m.Current(def)
		if shape != nil && handle != "" && shape.Handle != handle {
			invalidRequest(w, shapeErrors{"handle": {"The specified shape definition and handle do not match. Please ensure the shape definition is correct or omit the shape handle from the request to obtain a new one."}})
			return
		}
	} else if handle != "" {
		shape = m.Lookup(handle)
	} else {
		invalidRequest(w, shapeErrors{"handle": {"can't be blank when table is not given"}})
		return
	}
	if shape == nil {
		writeShapeJSON(w, http.StatusNotFound, map[string]string{"message": "No existing shape found"})
		return
	}
	m.Delete(shape)
	w.WriteHeader(http.StatusAccepted)
}

// paramsOf collects params[n]=value (the deep-object form) into a map.
func paramsOf(q url.Values) map[string]string {
	var out map[string]string
	for k, v := range q {
		if n, ok := strings.CutPrefix(k, "params["); ok && strings.HasSuffix(n, "]") {
			if out == nil {
				out = map[string]string{}
			}
			out[strings.TrimSuffix(n, "]")] = v[0]
		}
	}
	return out
}
