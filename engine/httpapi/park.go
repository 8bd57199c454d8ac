package httpapi

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shapelog/shapelog/engine/shapes"
)

// parkedRequest is a live shape request waiting for its shape to change,
// held as its bare connection.
type parkedRequest struct {
	m       *shapes.Manager
	def     *shapes.Definition
	shape   *shapes.Shape
	req     *shapeRequest
	reply   shapeReply
	header  http.Header     // the response headers set before parking (CORS)
	changed <-chan struct{} // the shape's change signal from before the last read
	conn    net.Conn
	timer   *time.Timer
	expired atomic.Bool // the long poll is over
}

// parkingLot holds live requests that wait for changes. net/http would keep
// a goroutine (two, with its background read), their stacks and about 10 KiB
// of buffers per waiting request; the lot takes the connection from net/http
// and keeps a few hundred bytes and a timer instead, so one engine holds tens
// of thousands of live clients. One goroutine per shape watches for changes
// and answers the requests they concern; an answered connection goes back to
// the HTTP server for its next request.
type parkingLot struct {
	s      *Server
	ctx    context.Context // ends when the lot closes
	cancel context.CancelFunc
	mu     sync.Mutex
	shapes map[*shapes.Shape]map[*parkedRequest]struct{}
	closed bool
	// resume hands a connection back to the HTTP server; nil until the
	// server's listener is wrapped by Server.Listener.
	resume func(net.Conn) bool
}

func newParkingLot(s *Server) *parkingLot {
	ctx, cancel := context.WithCancel(context.Background())
	return &parkingLot{s: s, ctx: ctx, cancel: cancel, shapes: map[*shapes.Shape]map[*parkedRequest]struct{}{}}
}

// park takes the request's connection and answers it later. It reports
// false when it cannot (HTTP/1.0, Connection: close, HTTP/2, a server
// without Server.Listener): the caller then waits in its own goroutine.
func (l *parkingLot) park(w http.ResponseWriter, r *http.Request, p *parkedRequest) bool {
	if r.Close {
		return false
	}
	conn, ok := l.take(w, r)
	if !ok {
		return false
	}
	p.conn, p.header = conn, w.Header()
	p.timer = time.AfterFunc(l.s.longPoll(), func() { l.expire(p) })
	l.add(p)
	return true
}

// take takes an HTTP/1.1 request's connection from net/http, for an answer
// written later and the connection handed back after it; false when it
// cannot (another protocol, a server without Server.Listener).
func (l *parkingLot) take(w http.ResponseWriter, r *http.Request) (net.Conn, bool) {
	if l.resume == nil || r.ProtoMajor != 1 || r.ProtoMinor < 1 {
		return nil, false
	}
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, false
	}
	if n := rw.Reader.Buffered(); n > 0 { // the client already sent its next request
		b, _ := rw.Reader.Peek(n)
		conn = &prefixedConn{Conn: conn, prefix: bytes.Clone(b)}
	}
	return conn, true
}

// add parks p until its shape changes, or answers it at once when the shape
// changed since p's last read or its long poll is over.
func (l *parkingLot) add(p *parkedRequest) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		p.timer.Stop()
		_ = p.conn.Close()
		return
	}
	if p.expired.Load() {
		l.mu.Unlock()
		l.recheck(p)
		return
	}
	waiting := l.shapes[p.shape]
	if waiting == nil {
		waiting = map[*parkedRequest]struct{}{}
		l.shapes[p.shape] = waiting
		go l.watch(p.shape)
	}
	waiting[p] = struct{}{}
	changed := p.changed // p may belong to the watcher once unlocked
	l.mu.Unlock()
	if closed(changed) && l.remove(p) {
		l.recheck(p)
	}
}

// recheck checks one request outside a wake.
func (l *parkingLot) recheck(p *parkedRequest) {
	if conn := l.check(p, nil); conn != nil {
		l.handBack(conn)
	}
}

// remove takes p out of the lot; false means someone else already did.
func (l *parkingLot) remove(p *parkedRequest) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	waiting := l.shapes[p.shape]
	if _, ok := waiting[p]; !ok {
		return false
	}
	delete(waiting, p)
	return true
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// expire ends p's long poll.
func (l *parkingLot) expire(p *parkedRequest) {
	p.expired.Store(true)
	if l.remove(p) {
		l.recheck(p)
	}
}

// watch answers the requests parked on shape each time it changes, until
// no request waits on it (it looks at least once per long poll, when every
// request it had has expired).
func (l *parkingLot) watch(shape *shapes.Shape) {
	idle := time.NewTimer(l.s.longPoll())
	defer idle.Stop()
	for {
		_, changed, err := shape.Head()
		if err == nil {
			idle.Reset(l.s.longPoll())
			select {
			case <-changed:
			case <-idle.C:
			case <-l.ctx.Done():
				return
			}
		}
		l.mu.Lock()
		waiting := l.shapes[shape]
		var ready []*parkedRequest
		for p := range waiting {
			if err != nil || closed(p.changed) {
				ready = append(ready, p)
				delete(waiting, p)
			}
		}
		if len(waiting) == 0 && len(ready) == 0 {
			delete(l.shapes, shape)
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
		l.checkAll(ready)
	}
}

// checkAll checks requests on every core: a change wakes them all at once.
// Requests with the same shape, offset, cursor and request headers get the
// same answer, rendered once. Connections go back to the HTTP server only
// after every answer is out, so that the clients' next requests do not delay
// the answers still to send.
func (l *parkingLot) checkAll(ready []*parkedRequest) {
	workers := min(runtime.GOMAXPROCS(0), (len(ready)+63)/64)
	answered := make([][]net.Conn, workers)
	memo := &answerMemo{rendered: map[string][]byte{}}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(ready); i += workers {
				if conn := l.check(ready[i], memo); conn != nil {
					answered[w] = append(answered[w], conn)
				}
			}
		}()
	}
	wg.Wait()
	for _, conns := range answered {
		for _, conn := range conns {
			l.handBack(conn)
		}
	}
}

// answerMemo holds the answers rendered during one wake, by answerKey.
type answerMemo struct {
	mu       sync.Mutex
	rendered map[string][]byte
}

// answerKey is everything a response with data depends on.
func answerKey(p *parkedRequest) string {
	return strings.Join([]string{p.shape.Handle, p.req.offset.String(), p.req.cursor, p.reply.ifNoneMatch,
		strconv.FormatBool(p.reply.head), strconv.FormatBool(p.reply.legacy), p.header.Get("Access-Control-Allow-Origin")}, "\x00")
}

// check reads p's shape again: p is answered when there is something to
// send or its long poll is over, and parked again otherwise. It returns the
// connection of an answered request, for handBack. The caller has taken p
// out of the lot; memo, when given, shares rendered answers.
func (l *parkingLot) check(p *parkedRequest, memo *answerMemo) net.Conn {
	if l.ctx.Err() != nil { // closing: the client retries
		p.timer.Stop()
		_ = p.conn.Close()
		return nil
	}
	_, changed, err := p.shape.Head()
	var resp *shapes.Response
	if err == nil {
		resp, err = p.shape.Read(l.ctx, p.req.offset)
	}
	if err == nil && waitsForChanges(resp) && !p.expired.Load() {
		p.changed = changed
		l.add(p)
		return nil
	}
	p.timer.Stop()
	var answer []byte
	var key string
	if memo != nil && err == nil && len(resp.Body) > 0 {
		key = answerKey(p)
		memo.mu.Lock()
		answer = memo.rendered[key]
		memo.mu.Unlock()
	}
	if answer == nil {
		out := &rawResponse{header: p.header, head: p.reply.head}
		if err != nil {
			l.s.shapeFailure(l.ctx, out, p.m, p.def, p.req.def, err)
		} else {
			l.s.answerShape(out, p.m, p.shape, p.req, resp, p.reply)
		}
		if out.status == 0 { // nothing to say: the engine is closing
			_ = p.conn.Close()
			return nil
		}
		answer = out.render()
		if key != "" {
			memo.mu.Lock()
			memo.rendered[key] = answer
			memo.mu.Unlock()
		}
	}
	// Most answers go straight into the socket's send buffer. A client that
	// does not read (or a big answer) must not hold up the wake: what the
	// buffer does not take at once is written from a goroutine of its own.
	rest := answer
	if len(answer) <= inlineAnswerBytes {
		var ok bool
		if rest, ok = sendInline(p.conn, answer); !ok {
			return nil
		}
		if len(rest) == 0 {
			return p.conn
		}
	}
	go finishSend(p.conn, rest, func() { l.handBack(p.conn) })
	return nil
}

// sendInline writes b on conn, waiting at most inlineWriteWait for the
// socket to take it, and returns what it did not take. A failed write
// closes conn (ok false).
func sendInline(conn net.Conn, b []byte) (rest []byte, ok bool) {
	_ = conn.SetWriteDeadline(time.Now().Add(inlineWriteWait))
	n, err := conn.Write(b)
	if err == nil {
		_ = conn.SetWriteDeadline(time.Time{})
		return nil, true
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		_ = conn.Close()
		return nil, false
	}
	return b[n:], true
}

// finishSend writes what sendInline left, waiting up to a minute, then
// calls then; a failed write closes conn instead.
func finishSend(conn net.Conn, rest []byte, then func()) {
	_ = conn.SetWriteDeadline(time.Now().Add(time.Minute))
	_, err := conn.Write(rest)
	_ = conn.SetWriteDeadline(time.Time{})
	if err != nil {
		_ = conn.Close()
		return
	}
	then()
}

// inlineAnswerBytes is the largest answer written on a wake's goroutines,
// which wait at most inlineWriteWait for the socket to take it.
const (
	inlineAnswerBytes = 32 << 10
	inlineWriteWait   = 5 * time.Millisecond
)

// handBack returns an answered request's connection to the HTTP server.
func (l *parkingLot) handBack(conn net.Conn) {
	if !l.resume(conn) {
		_ = conn.Close()
	}
}

// close drops every parked request's connection; clients retry.
func (l *parkingLot) close() {
	l.mu.Lock()
	l.closed = true
	all := l.shapes
	l.shapes = map[*shapes.Shape]map[*parkedRequest]struct{}{}
	l.mu.Unlock()
	l.cancel()
	for _, waiting := range all {
		for p := range waiting {
			p.timer.Stop()
			_ = p.conn.Close()
		}
	}
}

// rawResponse is an http.ResponseWriter that renders an HTTP/1.1 response
// for a connection taken from net/http.
type rawResponse struct {
	header http.Header
	head   bool // a HEAD request: no body, whatever the handler writes
	status int
	body   bytes.Buffer
}

func (w *rawResponse) Header() http.Header { return w.header }

func (w *rawResponse) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *rawResponse) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(b)
}

// render is the response as sent: status line, headers (with Date and
// Content-Length, as net/http adds them) and body.
func (w *rawResponse) render() []byte {
	w.WriteHeader(http.StatusOK)
	h := w.header
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	if h.Get("Content-Length") == "" && h.Get("Transfer-Encoding") == "" && w.status != http.StatusNotModified {
		h.Set("Content-Length", strconv.Itoa(w.body.Len()))
	}
	var out bytes.Buffer
	out.Grow(512 + w.body.Len())
	out.WriteString("HTTP/1.1 " + strconv.Itoa(w.status) + " " + http.StatusText(w.status) + "\r\n")
	for name, values := range h {
		for _, v := range values {
			out.WriteString(name)
			out.WriteString(": ")
			out.WriteString(headerValueReplacer.Replace(v))
			out.WriteString("\r\n")
		}
	}
	out.WriteString("\r\n")
	if !w.head {
		out.Write(w.body.Bytes())
	}
	return out.Bytes()
}

// headerValueReplacer keeps a header value on its line, as net/http does.
var headerValueReplacer = strings.NewReplacer("\r\n", " ", "\r", " ", "\n", " ")

// prefixedConn replays bytes net/http had read ahead before the connection
// was taken.
type prefixedConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixedConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// resumeListener is the HTTP server's listener. Besides new connections it
// returns the connections of answered parked requests, so that net/http
// serves their next request as it would have on keep-alive.
type resumeListener struct {
	net.Listener
	resumed  chan net.Conn
	accepted chan accepted
	done     chan struct{}
	once     sync.Once
	sending  sync.RWMutex
	closed   bool
}

type accepted struct {
	conn net.Conn
	err  error
}

// Listener wraps the listener the HTTP server serves, letting live requests
// park without a goroutine each. Serve the returned listener.
func (s *Server) Listener(ln net.Listener) net.Listener {
	l := &resumeListener{Listener: ln, resumed: make(chan net.Conn, 1024), accepted: make(chan accepted), done: make(chan struct{})}
	go l.acceptLoop()
	s.parking.resume = l.resume
	return l
}

func (l *resumeListener) acceptLoop() {
	for {
		c, err := l.Listener.Accept()
		select {
		case l.accepted <- accepted{c, err}:
		case <-l.done:
			if c != nil {
				_ = c.Close()
			}
			return
		}
		if err != nil && !isTemporary(err) {
			return
		}
	}
}

func isTemporary(err error) bool {
	ne, ok := err.(interface{ Temporary() bool })
	return ok && ne.Temporary()
}

func (l *resumeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.resumed:
		return c, nil
	case a := <-l.accepted:
		return a.conn, a.err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *resumeListener) resume(c net.Conn) bool {
	// Held while sending, so that Close, which takes it after closing done,
	// drains every connection sent before it.
	l.sending.RLock()
	defer l.sending.RUnlock()
	if l.closed {
		return false
	}
	select {
	case l.resumed <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *resumeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	l.sending.Lock()
	l.closed = true
	l.sending.Unlock()
	// Connections handed back but not yet accepted are closed.
	for {
		select {
		case c := <-l.resumed:
			_ = c.Close()
		default:
			return l.Listener.Close()
		}
	}
}
