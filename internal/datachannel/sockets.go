package datachannel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// Listener is the source's side: it listens on every path and accepts one
// connection on each, in the background.
type Listener struct {
	listeners []*net.UnixListener
	conns     []chan acceptResult
	once      sync.Once
}

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
	return l, nil
}

// Len is the number of sockets.
func (l *Listener) Len() int { return len(l.conns) }

// Conn waits for the destination to connect to socket i.
func (l *Listener) Conn(ctx context.Context, i int) (*net.UnixConn, error) {
	select {
	case r := <-l.conns[i]:
		l.conns[i] <- r // later callers get it too
		if r.err != nil {
			return nil, fmt.Errorf("accepting on %s: %w", l.listeners[i].Addr(), r.err)
		}
		return r.conn, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the destination to connect to %s: %w", l.listeners[i].Addr(), ctx.Err())
	}
}

// Close stops listening and removes the socket files; accepted
// connections are the caller's to close.
func (l *Listener) Close() {
	l.once.Do(func() {
		for _, ln := range l.listeners {
			_ = ln.Close() // also unlinks the file
		}
	})
}

// Dial is the destination's side: it connects to every path, waiting for
// the source to create them (the platform starts both at once) up to
// timeout.
func Dial(ctx context.Context, paths []string, timeout time.Duration) ([]*net.UnixConn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conns := make([]*net.UnixConn, 0, len(paths))
	fail := func(err error) ([]*net.UnixConn, error) {
		for _, c := range conns {
			_ = c.Close()
		}
		return nil, err
	}
	for _, p := range paths {
		for wait := 10 * time.Millisecond; ; wait = min(wait*2, 500*time.Millisecond) {
			c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: p, Net: "unix"})
			if err == nil {
				conns = append(conns, c)
				break
			}
			select {
			case <-ctx.Done():
				return fail(fmt.Errorf("connecting to the source's socket %s: %w (last error: %v)", p, ctx.Err(), err))
			case <-time.After(wait):
			}
		}
	}
	return conns, nil
}
