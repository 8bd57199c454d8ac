package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// sseFollower follows a shape's live changes over Server-Sent Events, as
// Electric's client does with liveSse: one long response, reconnecting
// from the last up-to-date when it ends. Like shapeFollower it speaks
// HTTP/1.1 itself to keep the load generator cheap.
type sseFollower struct {
	addr, query            string
	handle, offset, cursor string
}

// follow reads events until ctx ends, calling got with each data event.
func (f *sseFollower) follow(ctx context.Context, ready func(), got func(event []byte), failed func()) {
	first := true
	for ctx.Err() == nil {
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", f.addr)
		if err != nil {
			failed()
			time.Sleep(100 * time.Millisecond)
			continue
		}
		stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
		target := "/v1/shape?" + f.query + "&live=true&live_sse=true&offset=" + url.QueryEscape(f.offset) +
			"&handle=" + url.QueryEscape(f.handle) + "&cursor=" + url.QueryEscape(f.cursor)
		err = f.stream(conn, target, func() {
			if first {
				first = false
				ready()
			}
		}, got)
		stop()
		_ = conn.Close()
		if err != nil && ctx.Err() == nil {
			failed()
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// stream sends one SSE request and reads its events until the response
// ends.
func (f *sseFollower) stream(conn net.Conn, target string, opened func(), got func(event []byte)) error {
	if _, err := io.WriteString(conn, "GET "+target+" HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n"); err != nil {
		return err
	}
	r := bufio.NewReader(conn)
	status, err := r.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(status, []byte("HTTP/1.1 200 ")) {
		return fmt.Errorf("SSE request: %s", bytes.TrimSpace(status))
	}
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		if strings.EqualFold(string(name), "electric-cursor") {
			f.cursor = string(bytes.TrimSpace(value))
		}
	}
	opened()
	// The body is chunked, one batch of whole events per chunk: its lines
	// are chunk sizes, events and blank lines, and a size of 0 ends it.
	upToDate := []byte(`"control":"up-to-date","global_last_seen_lsn":"`)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return err
		}
		if string(line) == "0\r\n" {
			return nil
		}
		data, ok := bytes.CutPrefix(line, []byte("data: "))
		if !ok {
			continue
		}
		if i := bytes.Index(data, upToDate); i >= 0 {
			lsn := data[i+len(upToDate):]
			f.offset = string(lsn[:bytes.IndexByte(lsn, '"')]) + "_0"
			continue
		}
		got(data)
	}
}

// sseBench is shapesBench's many-clients part over SSE: clients SSE
// streams on one shape, one write per second, write-to-client latency and
// the engine's peak RSS.
func (h *harness) sseBench(ctx context.Context, clients, writes int, add func(string, ...any)) error {
	// As in shapesBench: the clients' memory is not the engine's to pay for.
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(1 << 30))
	addr, query, lead, err := h.liveShape(ctx, "sse_items")
	if err != nil {
		return err
	}
	defer lead.close()
	d := newDeliveries(1_000_000, writes)
	var failures atomic.Int64
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	ready := make(chan struct{}, clients)
	for i := 0; i < clients; i++ {
		f := &sseFollower{addr: addr, query: query, handle: lead.handle, offset: lead.offset, cursor: lead.cursor}
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.follow(runCtx, func() { ready <- struct{}{} }, func(event []byte) { d.record(event, time.Now()) }, func() { failures.Add(1) })
		}()
	}
	for i := 0; i < clients; i++ {
		select {
		case <-ready:
		case <-time.After(2 * time.Minute):
			return fmt.Errorf("only %d of %d SSE streams opened (%d failures)", i, clients, failures.Load())
		}
	}
	time.Sleep(2 * time.Second)
	err = d.write(ctx, h, "sse_items")
	cancel()
	wg.Wait()
	if err != nil {
		return err
	}
	return d.report(add, "SSE streams", clients, failures.Load(), h.peakRSS())
}
