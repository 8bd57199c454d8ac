package datachannel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Listener is the source's side: it listens on every path and accepts one
// connection on each, in the background.
type Listener struct {
	listeners []*net.UnixListener
	conns     []chan acceptResult
	taken     []atomic.Bool // Conn handed the connection out
	once      sync.Once
}

// Conn waits for the destination to connect to socket i; each socket's
// connection is handed out once.

type acceptResult struct {
	conn *net.UnixConn
	err  error
}

// Listen creates the sockets (replacing stale files at the paths) and
// starts accepting.
func Listen(paths []string) (*Listener, error) {
	l := &Listener{}
	for _, p := range paths {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			l.Close()
			return nil, fmt.Errorf("removing the stale socket %s: %w", p, err)
		}
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("listening on %s: %w", p, err)
		}
		ch := make(chan acceptResult, 1)
		l.listeners = append(l.listeners, ln)
		l.conns = append(l.conns, ch)
		go func() {
			c, err := ln.AcceptUnix()
			ch <- acceptResult{c, err}
		}()
	}
	l.taken = make([]atomic.Bool, len(l.conns))
	return l, nil
}

// Len is the number of sockets.
func (l *Listener) Len() int { return len(l.conns) }

func (l *Listener) Conn(ctx context.Context, i int) (*net.UnixConn, error) {
	select {
	case r := <-l.conns[i]:
		l.taken[i].Store(true)
		if r.err != nil {
			return nil, fmt.Errorf("accepting on %s: %w", l.listeners[i].Addr(), r.err)
		}
		return r.conn, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the destination to connect to %s: %w", l.listeners[i].Addr(), ctx.Err())
	}
}

// Close stops listening and removes the socket files. Connections that
// Conn handed out are the caller's to close; those accepted but not
// handed out are closed, so the destination sees their end.
func (l *Listener) Close() {
	l.once.Do(func() {
		for i, ln := range l.listeners {
			_ = ln.Close() // also unlinks the file
			if i < len(l.taken) && l.taken[i].Load() {
				continue
			}
			select {
			case r := <-l.conns[i]:
				if r.conn != nil {
					_ = r.conn.Close()
				}
			case <-time.After(time.Second): // a Conn call holds it
			}
		}
	})
}

// Dial is the destination's side: it connects to every path at once,
// waiting for the source to create them (the platform starts both at
// once) up to timeout.
func Dial(ctx context.Context, paths []string, timeout time.Duration) ([]*net.UnixConn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conns := make([]*net.UnixConn, len(paths))
	errs := make([]error, len(paths))
	var wg sync.WaitGroup
	for i, p := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conns[i], errs[i] = dialOne(ctx, p)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
		return nil, err
	}
	return conns, nil
}

// dialOne connects to one socket, retrying until it exists and accepts.
func dialOne(ctx context.Context, path string) (*net.UnixConn, error) {
	for wait := 10 * time.Millisecond; ; wait = min(wait*2, 500*time.Millisecond) {
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
		if err == nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connecting to the source's socket %s: %w (last error: %v)", path, ctx.Err(), err)
		case <-time.After(wait):
		}
	}
}
