package pgtest

import (
	"net"
	"sync"
	"testing"
)

// Proxy forwards TCP connections to a server, so that a test can make
// the network fail under a client: Freeze turns every open connection into
// a black hole (as across a half-open connection), Cut closes them (as a
// crashed server does). Connections made afterwards work normally; a
// connection either end closes is closed at the other end too.
type Proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []*proxied
	count  int
	wg     sync.WaitGroup
}

type proxied struct {
	client, server net.Conn
	frozen         chan struct{}
	once           sync.Once
}

// StartProxy forwards a new local address to target (host:port) until the
// test ends.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		p.Cut()
		p.wg.Wait()
	})
	return p
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		c := &proxied{client: client, server: server, frozen: make(chan struct{})}
		p.mu.Lock()
		p.conns = append(p.conns, c)
		p.count++
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { defer p.wg.Done(); c.pipe(server, client) }()
		go func() { defer p.wg.Done(); c.pipe(client, server) }()
	}
}

// pipe copies from src to dst until either closes, dropping what it reads
// once frozen.
func (c *proxied) pipe(dst, src net.Conn) {
	defer func() { _ = dst.Close(); _ = src.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			select {
			case <-c.frozen:
			default:
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// Freeze black-holes every open connection.
func (p *Proxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.once.Do(func() { close(c.frozen) })
	}
}

// Cut closes every open connection at both ends.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.client.Close()
		_ = c.server.Close()
	}
	p.conns = nil
}

// Connections is how many connections the proxy has accepted.
func (p *Proxy) Connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.count
}
