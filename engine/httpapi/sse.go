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
// global_last_seen_lsn the client resumes from, keep-alive comments, and a
// silent end after the SSE timeout (the client reconnects). A shape that is
// gone ends the stream; the next request gets its 409.
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
	timeout, keepAliveEvery := s.sseTimings()
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
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if rc.Flush() != nil {
		return
	}
	end := time.NewTimer(timeout)
	defer end.Stop()
	keepAlive := time.NewTimer(keepAliveEvery)
	defer keepAlive.Stop()
	offset := req.offset
	var buf []byte
	for {
		if len(resp.Body) > 0 {
			buf = appendEvents(buf[:0], resp.Body)
			offset = resp.End
			if resp.UpToDate {
				// The client resumes from `<global_last_seen_lsn>_0`: one past
				// the last commit it has is an offset between log entries,
				// served from the next transaction on.
				buf = appendEvent(buf, shapes.UpToDate(offset.Tx+1))
			}
			if _, err := w.Write(buf); err != nil || rc.Flush() != nil {
				return
			}
			keepAlive.Reset(keepAliveEvery)
		}
		if !resp.UpToDate {
			resp, changed, err = s.readFrom(ctx, shape, offset)
			if err != nil {
				return
			}
			continue
		}
	wait:
		for {
			select {
			case <-changed:
				if resp, changed, err = s.readFrom(ctx, shape, offset); err != nil {
					return
				}
				break wait
			case <-keepAlive.C:
				if _, err := w.Write([]byte(": keep-alive\n\n")); err != nil || rc.Flush() != nil {
					return
				}
				keepAlive.Reset(keepAliveEvery)
			case <-end.C:
				return
			case <-ctx.Done():
				return
			}
		}
	}
}

// readFrom reads a shape's messages after offset, with the change signal
// from before the read.
func (s *Server) readFrom(ctx context.Context, shape *shapes.Shape, offset shapes.Offset) (*shapes.Response, <-chan struct{}, error) {
	_, changed, err := shape.Head()
	if err != nil {
		return nil, nil, err
	}
	resp, err := shape.Read(ctx, offset)
	return resp, changed, err
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
