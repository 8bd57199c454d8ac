package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/shapelog/shapelog/engine/shapes"
)

// Electric's SSE timings: a keep-alive comment after 21 s without an event,
// and the end of the response 60 s after it started.
const (
	sseKeepAlive      = 21 * time.Second
	sseDefaultTimeout = 60 * time.Second
	// sseBatchBytes bounds the events one wake sends a stream; a stream
	// further behind gets the rest at once, on the next turn.
	sseBatchBytes = 1 << 20
)

// sseTimings are the stream's length and its keep-alive interval: Electric's,
// or with a shorter configured length, keep-alives at least twice a stream.
func (s *Server) sseTimings() (timeout, keepAlive time.Duration) {
	timeout = sseDefaultTimeout
	if s.cfg.Shape.SSETimeout > 0 {
		timeout = s.cfg.Shape.SSETimeout
	}
	return timeout, min(sseKeepAlive, timeout/2)
}

// serveSSE answers a live request (live_sse=true) as Electric does: one
// text/event-stream response carrying the shape's changes after the offset
// as `data:` events, each batch closed by an up-to-date whose
// global_last_seen_lsn the client resumes from, keep-alive comments, and an
// end after the SSE timeout (the client reconnects). A shape that is gone
// ends the stream; the next request gets its 409. The connection is taken
// from net/http and written by the shape's streamer (see sseStreamer), so an
// open stream costs no goroutine; where it cannot be taken (HTTP/2), the
// request's goroutine streams.
func (s *Server) serveSSE(w http.ResponseWriter, r *http.Request, m *shapes.Manager, shape *shapes.Shape, req *shapeRequest, def *shapes.Definition) {
	ctx := r.Context()
	// The first read answers what a long poll would (bad offsets, a gone
	// shape) while the status can still say so.
	resp, changed, err := s.readShape(ctx, m, shape, req)
	if err != nil {
		var oob outOfBounds
		if errors.As(err, &oob) {
			invalidRequest(w, shapeErrors{"offset": {"out of bounds for this shape"}})
			return
		}
		s.shapeFailure(ctx, w, m, def, req.def, err)
		return
	}
	timeout, keepAlive := s.sseTimings()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "public, max-age="+strconv.Itoa(max(1, int(timeout/time.Second)-1)))
	h.Set("X-Accel-Buffering", "no") // nginx: stream, do not buffer
	h.Set("Electric-Handle", shape.Handle)
	h.Set("Electric-Offset", req.offset.String())
	h.Set("Electric-Cursor", nextCursor(s.longPoll(), req.cursor))
	h.Set("Electric-Up-To-Date", "")
	h.Set("Electric-Has-Data", "true")
	h.Set("ETag", `"`+shape.Handle+":"+req.offset.String()+":sse:"+strconv.FormatInt(time.Now().UnixNano(), 10)+`"`)
	st := &sseStream{shape: shape, offset: req.offset, ends: time.Now().Add(timeout), changed: changed}
	first, err := st.batch(ctx, resp)
	if err != nil {
		s.shapeFailure(ctx, w, m, def, req.def, err)
		return
	}
	if s.streams.take(w, r, st, first) {
		return
	}
	// The request's own goroutine streams.
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	end := time.NewTimer(time.Until(st.ends))
	defer end.Stop()
	quiet := time.NewTimer(keepAlive)
	defer quiet.Stop()
	out := first
	for {
		if len(out) > 0 {
			if _, err := w.Write(out); err != nil {
				return
			}
			quiet.Reset(keepAlive)
		}
		if rc.Flush() != nil {
			return
		}
		out = nil
		if st.behind && time.Now().Before(st.ends) {
			if out, err = st.next(ctx); err != nil {
				return
			}
			continue
		}
		select {
		case <-st.changed:
			if out, err = st.next(ctx); err != nil {
				return
			}
		case <-quiet.C:
			out = []byte(": keep-alive\n\n")
		case <-end.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// sseStream is one open live_sse response.
type sseStream struct {
	shape   *shapes.Shape
	offset  shapes.Offset   // what the client has
	ends    time.Time       // when the response ends
	changed <-chan struct{} // the shape's change signal from before the last read
	behind  bool            // the last batch stopped at sseBatchBytes
}

// next reads what the shape has after the stream's offset and renders it.
func (st *sseStream) next(ctx context.Context) ([]byte, error) {
	_, changed, err := st.shape.Head()
	if err != nil {
		return nil, err
	}
	st.changed = changed
	resp, err := st.shape.Read(ctx, st.offset)
	if err != nil {
		return nil, err
	}
	return st.batch(ctx, resp)
}

// batch renders resp, and what follows it up to the shape's head (at most
// about sseBatchBytes), as events: the messages, then an up-to-date once
// the stream has caught up. It moves the stream's offset past them.
func (st *sseStream) batch(ctx context.Context, resp *shapes.Response) ([]byte, error) {
	var out []byte
	for {
		moved := resp.End != st.offset
		out = appendEvents(out, resp.Body)
		st.offset = resp.End
		if resp.UpToDate && len(out) > 0 {
			// The client resumes from `<global_last_seen_lsn>_0`: one past
			// the last commit it has is an offset between log entries,
			// served from the next transaction on.
			out = appendEvent(out, shapes.UpToDate(st.offset.Tx+1))
		}
		// A read that did not move (nothing to render yet) waits for the
		// next change like an up-to-date one, rather than spinning.
		st.behind = !resp.UpToDate && moved
		if !st.behind || len(out) >= sseBatchBytes {
			return out, nil
		}
		var err error
		if resp, err = st.shape.Read(ctx, st.offset); err != nil {
			return nil, err
		}
	}
}

// appendEvents appends each message of body (JSON objects separated by
// commas, as shapes.Response holds them) as an SSE data event.
func appendEvents(dst, body []byte) []byte {
	start, depth, inString, escaped := 0, 0, false, false
	for i, c := range body {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			if depth == 0 {
				start = i
			}
			depth++
		case c == '}' || c == ']':
			depth--
			if depth == 0 {
				dst = appendEvent(dst, body[start:i+1])
			}
		}
	}
	return dst
}

func appendEvent(dst, msg []byte) []byte {
	dst = append(dst, "data: "...)
	dst = append(dst, msg...)
	return append(dst, "\n\n"...)
}
