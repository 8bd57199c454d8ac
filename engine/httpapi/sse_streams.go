package httpapi

import (
	"context"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/shapelog/shapelog/engine/shapes"
)

// sseStreamer writes the open SSE responses whose connections it took from
// net/http, as the parking lot answers live long polls: one goroutine per
// shape wakes on the shape's changes (and each second, for keep-alives and
// ends), renders the events after each distinct offset once, and writes
// them to every stream at that offset. An open stream costs its connection
// and a few hundred bytes, not a goroutine and net/http's buffers. A
// response ends with the last chunk and its connection goes back to the
// HTTP server, for the client's next request.
type sseStreamer struct {
	s      *Server
	ctx    context.Context // ends when the streamer closes
	cancel context.CancelFunc
	mu     sync.Mutex
	shapes map[*shapes.Shape]map[*takenStream]struct{}
	// kicks wake a shape's goroutine for a stream added with a change
	// already pending.
	kicks  map[*shapes.Shape]chan struct{}
	closed bool
}

// takenStream is an SSE response on a connection taken from net/http.
type takenStream struct {
	*sseStream
	conn  net.Conn
	quiet time.Time // last written
}

func newSSEStreamer(s *Server) *sseStreamer {
	ctx, cancel := context.WithCancel(context.Background())
	return &sseStreamer{s: s, ctx: ctx, cancel: cancel, shapes: map[*shapes.Shape]map[*takenStream]struct{}{}, kicks: map[*shapes.Shape]chan struct{}{}}
}

// open counts the streams the streamer writes.
func (ss *sseStreamer) open() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return countAll(ss.shapes)
}

// take takes an SSE request's connection, sends the response's head and
// first events, and streams the rest from the shape's goroutine. It reports
// false when it cannot (not HTTP/1.1, a server without Server.Listener):
// the caller streams then.
func (ss *sseStreamer) take(w http.ResponseWriter, r *http.Request, st *sseStream, first []byte) bool {
	if r.Close || r.Method == http.MethodHead {
		return false
	}
	conn, ok := ss.s.parking.take(w, r)
	if !ok {
		return false
	}
	w.Header().Set("Transfer-Encoding", "chunked")
	head := &rawResponse{header: w.Header()}
	head.WriteHeader(http.StatusOK)
	out := head.render()
	if len(first) > 0 { // an empty chunk would end the body
		out = appendChunk(out, first)
	}
	_ = conn.SetWriteDeadline(time.Now().Add(time.Minute))
	if _, err := conn.Write(out); err != nil {
		_ = conn.Close()
		return true
	}
	_ = conn.SetWriteDeadline(time.Time{})
	ss.add(&takenStream{sseStream: st, conn: conn, quiet: time.Now()})
	return true
}

// add hands a stream to its shape's goroutine.
func (ss *sseStreamer) add(ts *takenStream) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closed {
		_ = ts.conn.Close()
		return
	}
	set := ss.shapes[ts.shape]
	if set == nil {
		set = map[*takenStream]struct{}{}
		ss.shapes[ts.shape] = set
		ss.kicks[ts.shape] = make(chan struct{}, 1)
		go ss.watch(ts.shape, ss.kicks[ts.shape])
	}
	set[ts] = struct{}{}
	if closed(ts.changed) || ts.behind {
		select {
		case ss.kicks[ts.shape] <- struct{}{}:
		default:
		}
	}
}

func (ss *sseStreamer) remove(ts *takenStream) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.shapes[ts.shape], ts)
}

// watch writes the streams of one shape until it has none.
func (ss *sseStreamer) watch(shape *shapes.Shape, kick <-chan struct{}) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	behind := false
	_, changed, err := shape.Head()
	for {
		if err == nil && !behind {
			select {
			case <-changed:
			case <-kick:
			case <-tick.C:
			case <-ss.ctx.Done():
				return
			}
		}
		// Taken before the wake: a change during it closes this one.
		_, next, nextErr := shape.Head()
		ss.mu.Lock()
		set := ss.shapes[shape]
		if len(set) == 0 {
			delete(ss.shapes, shape)
			delete(ss.kicks, shape)
			ss.mu.Unlock()
			return
		}
		streams := make([]*takenStream, 0, len(set))
		for ts := range set {
			streams = append(streams, ts)
		}
		ss.mu.Unlock()
		behind = ss.wake(streams)
		changed, err = next, nextErr
	}
}

// sseRender is what one wake sends the streams at one offset.
type sseRender struct {
	out     []byte
	st      sseStream // the state after it
	err     error
	pending chan struct{} // closed once out is ready
}

// wake brings every stream up to date on every core, rendering once per
// offset. It reports whether some stream is still behind.
func (ss *sseStreamer) wake(streams []*takenStream) (behind bool) {
	now := time.Now()
	_, keepAlive := ss.s.sseTimings()
	var mu sync.Mutex
	renders := map[shapes.Offset]*sseRender{}
	render := func(ts *takenStream) *sseRender {
		mu.Lock()
		r := renders[ts.offset]
		if r != nil {
			mu.Unlock()
			<-r.pending
			return r
		}
		r = &sseRender{pending: make(chan struct{})}
		renders[ts.offset] = r
		mu.Unlock()
		st := *ts.sseStream
		r.out, r.err = st.next(ss.ctx)
		r.st = st
		close(r.pending)
		return r
	}
	workers := min(runtime.GOMAXPROCS(0), (len(streams)+63)/64)
	var wg sync.WaitGroup
	var anyBehind sync.Once
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(streams); i += workers {
				ts := streams[i]
				switch {
				case ss.ctx.Err() != nil:
					ss.remove(ts)
					_ = ts.conn.Close()
				case !now.Before(ts.ends):
					ss.end(ts)
				case closed(ts.changed) || ts.behind:
					r := render(ts)
					if r.err != nil {
						ss.end(ts) // a gone shape: the next request gets the 409
						continue
					}
					ends := ts.ends
					*ts.sseStream = r.st
					ts.ends = ends
					if ts.behind {
						anyBehind.Do(func() { behind = true })
					}
					if len(r.out) > 0 {
						ss.write(ts, appendChunk(nil, r.out), now)
					}
				case now.Sub(ts.quiet) >= keepAlive:
					ss.write(ts, appendChunk(nil, []byte(": keep-alive\n\n")), now)
				}
			}
		}()
	}
	wg.Wait()
	return behind
}

// write sends b on a stream. What the socket does not take at once is
// written from a goroutine of its own, the stream out of the shape's
// goroutine meanwhile, so that a client that does not read holds up no
// other.
func (ss *sseStreamer) write(ts *takenStream, b []byte, now time.Time) {
	ts.quiet = now
	rest, ok := sendInline(ts.conn, b)
	if !ok || len(rest) > 0 {
		ss.remove(ts)
	}
	if ok && len(rest) > 0 {
		go finishSend(ts.conn, rest, func() { ss.add(ts) })
	}
}

// end sends a stream's last chunk and hands its connection back to the
// HTTP server.
func (ss *sseStreamer) end(ts *takenStream) {
	ss.remove(ts)
	rest, ok := sendInline(ts.conn, []byte("0\r\n\r\n"))
	handBack := func() { ss.s.parking.handBack(ts.conn) }
	switch {
	case ok && len(rest) > 0:
		go finishSend(ts.conn, rest, handBack)
	case ok:
		handBack()
	}
}

// close drops every stream's connection; clients reconnect.
func (ss *sseStreamer) close() {
	ss.mu.Lock()
	ss.closed = true
	all := ss.shapes
	ss.shapes = map[*shapes.Shape]map[*takenStream]struct{}{}
	ss.mu.Unlock()
	ss.cancel()
	for _, set := range all {
		for ts := range set {
			_ = ts.conn.Close()
		}
	}
}

// appendChunk appends b as one chunk of a chunked HTTP/1.1 body.
func appendChunk(dst, b []byte) []byte {
	dst = strconv.AppendInt(dst, int64(len(b)), 16)
	dst = append(dst, "\r\n"...)
	dst = append(dst, b...)
	return append(dst, "\r\n"...)
}
