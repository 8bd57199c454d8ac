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
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// shapeFollower follows one shape over /v1/shape like Electric's client,
// on its own keep-alive connection. It speaks HTTP/1.1 over the connection
// itself, reading just the headers it needs, rather than through net/http's
// Transport: the load generator shares the engine's two cores, and
// net/http's client (two goroutines per connection, a header map per
// response) would cost more CPU than the engine it measures.
type shapeFollower struct {
	addr   string
	query  string // the shape's parameters, URL-encoded
	conn   net.Conn
	r      *bufio.Reader
	body   []byte
	handle string
	offset string
	cursor string
}

// step makes one request and reports whether it brought changes and
// whether the shape is now up to date.
func (f *shapeFollower) step(ctx context.Context, live bool) (data, upToDate bool, err error) {
	if f.conn == nil {
		if f.conn, err = (&net.Dialer{}).DialContext(ctx, "tcp", f.addr); err != nil {
			return false, false, err
		}
		f.r = bufio.NewReader(f.conn)
		conn := f.conn
		context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	}
	target := "/v1/shape?" + f.query + "&offset=" + url.QueryEscape(f.offset)
	if f.handle != "" {
		target += "&handle=" + url.QueryEscape(f.handle)
	}
	if live {
		target += "&live=true&cursor=" + url.QueryEscape(f.cursor)
	}
	data, upToDate, err = f.roundTrip(target)
	if err != nil {
		_ = f.conn.Close()
		f.conn = nil
	}
	return data, upToDate, err
}

// roundTrip sends one request and reads the response: the status, the
// electric headers and a Content-Length body.
func (f *shapeFollower) roundTrip(target string) (data, upToDate bool, err error) {
	if _, err := io.WriteString(f.conn, "GET "+target+" HTTP/1.1\r\nHost: bench\r\n\r\n"); err != nil {
		return false, false, err
	}
	status, err := f.r.ReadSlice('\n')
	if err != nil {
		return false, false, err
	}
	ok := bytes.HasPrefix(status, []byte("HTTP/1.1 200 "))
	length := -1
	for {
		line, err := f.r.ReadSlice('\n')
		if err != nil {
			return false, false, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimSpace(value)
		switch strings.ToLower(string(name)) {
		case "content-length":
			if length, err = strconv.Atoi(string(value)); err != nil {
				return false, false, fmt.Errorf("bad Content-Length %q", value)
			}
		case "electric-handle":
			f.handle = string(value)
		case "electric-offset":
			f.offset = string(value)
		case "electric-cursor":
			f.cursor = string(value)
		case "electric-up-to-date":
			upToDate = true
		case "electric-has-data":
			data = string(value) == "true"
		}
	}
	if length < 0 {
		return false, false, fmt.Errorf("GET /v1/shape: response without Content-Length (%s)", bytes.TrimSpace(status))
	}
	f.body = slices.Grow(f.body[:0], length)[:length]
	if _, err := io.ReadFull(f.r, f.body); err != nil {
		return false, false, err
	}
	if !ok {
		return false, false, fmt.Errorf("GET /v1/shape: %s %s", bytes.TrimSpace(status), f.body)
	}
	return data, upToDate, nil
}

func (f *shapeFollower) close() {
	if f.conn != nil {
		_ = f.conn.Close()
	}
}

// catchUp requests until the shape is up to date.
func (f *shapeFollower) catchUp(ctx context.Context) error {
	for {
		_, upToDate, err := f.step(ctx, false)
		if err != nil || upToDate {
			return err
		}
	}
}

// insertedIDs returns the ids of the rows inserted by the changes in a
// shape response body: each insert carries "id":"<n>" in its value.
func insertedIDs(body []byte) []int {
	var ids []int
	marker := []byte(`"id":"`)
	for {
		i := bytes.Index(body, marker)
		if i < 0 {
			return ids
		}
		body = body[i+len(marker):]
		end := bytes.IndexByte(body, '"')
		if end < 0 {
			return ids
		}
		if id, err := strconv.Atoi(string(body[:end])); err == nil {
			ids = append(ids, id)
		}
	}
}

// liveShape creates a 100-row table for live clients and follows a shape
// of it up to date: the engine's address, the shape's query and the
// follower, whose handle, offset and cursor the clients start from.
func (h *harness) liveShape(ctx context.Context, table string) (addr, query string, lead *shapeFollower, err error) {
	if _, err := h.conn.Exec(ctx, `CREATE TABLE `+table+` (id int PRIMARY KEY, v text); INSERT INTO `+table+` SELECT g, 'row ' || g FROM generate_series(1, 100) g`); err != nil {
		return "", "", nil, err
	}
	addr = fmt.Sprintf("127.0.0.1:%d", h.port)
	query = url.Values{"table": {table}, "secret": {benchKey}}.Encode()
	lead = &shapeFollower{addr: addr, query: query, offset: "-1"}
	if err := lead.catchUp(ctx); err != nil {
		lead.close()
		return "", "", nil, err
	}
	return addr, query, lead, nil
}

func percentile(lat []time.Duration, q float64) time.Duration {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat[int(q*float64(len(lat)-1))].Round(100 * time.Microsecond)
}

// shapesBench measures live shape delivery: one client's write-to-client
// latency, then many live clients on one shape woken by one write per
// second.
func (h *harness) shapesBench(ctx context.Context, clients, writes int, add func(string, ...any)) error {
	// Thousands of client connections need more than the bench's usual
	// memory limit; a GC spinning at the limit would be measured as latency.
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(1 << 30))
	addr, query, lead, err := h.liveShape(ctx, "live_items")
	if err != nil {
		return err
	}
	defer lead.close()
	next := 1000
	// One client: commit → change received.
	var single []time.Duration
	for i := 0; i < 100; i++ {
		done := make(chan error, 1)
		go func() { _, _, err := lead.step(ctx, true); done <- err }()
		time.Sleep(20 * time.Millisecond)
		start := time.Now()
		if _, err := h.conn.Exec(ctx, `INSERT INTO live_items VALUES ($1, 'x')`, next); err != nil {
			return err
		}
		next++
		if err := <-done; err != nil {
			return err
		}
		single = append(single, time.Since(start))
	}
	add("| shape write → live client, 1 client, 100 single-row commits | p50 %s, p99 %s | | |", percentile(single, 0.5), percentile(single, 0.99))

	// Many clients parked on the same live URL; one write per second.
	d := newDeliveries(next, writes)
	var failures atomic.Int64
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	ready := make(chan struct{}, clients)
	for i := 0; i < clients; i++ {
		f := &shapeFollower{addr: addr, query: query, handle: lead.handle, offset: lead.offset, cursor: lead.cursor}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer f.close()
			ready <- struct{}{}
			for runCtx.Err() == nil {
				got, _, err := f.step(runCtx, true)
				if err != nil {
					if runCtx.Err() == nil {
						failures.Add(1)
						time.Sleep(100 * time.Millisecond)
					}
					continue
				}
				if got {
					d.record(f.body, time.Now())
				}
			}
		}()
	}
	for i := 0; i < clients; i++ {
		<-ready
	}
	time.Sleep(2 * time.Second) // let every request reach the engine and park
	err = d.write(ctx, h, "live_items")
	cancel()
	wg.Wait()
	if err != nil {
		return err
	}
	return d.report(add, "live clients", clients, failures.Load(), h.peakRSS())
}

// deliveries measures how long one write per second takes to reach many
// clients of one shape. Each write inserts one row whose id is the write's
// number past firstID; a client finds the ids in the changes it receives,
// so a response that carries two writes (the client was still reading the
// previous one) counts both, each against its own commit time. The first
// write after the clients connected is reported apart: it is the cold one
// (the engine's and the clients' first GC with 10,000 connections on the
// two shared cores).
type deliveries struct {
	firstID, writes int
	at              []atomic.Int64 // unix ns of each write
	mu              sync.Mutex
	cold, lat       []time.Duration
}

func newDeliveries(firstID, writes int) *deliveries {
	return &deliveries{firstID: firstID, writes: writes, at: make([]atomic.Int64, writes+1)}
}

// record notes the writes found in what a client received at now.
func (d *deliveries) record(received []byte, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, id := range insertedIDs(received) {
		w := id - d.firstID
		if w < 0 || w > d.writes {
			continue
		}
		lat := now.Sub(time.Unix(0, d.at[w].Load()))
		if w == 0 {
			d.cold = append(d.cold, lat)
		} else {
			d.lat = append(d.lat, lat)
		}
	}
}

// write makes the writes into table, a second apart, then leaves the
// stragglers two seconds to arrive.
func (d *deliveries) write(ctx context.Context, h *harness, table string) error {
	for i := 0; i <= d.writes; i++ {
		d.at[i].Store(time.Now().UnixNano())
		if _, err := h.conn.Exec(ctx, `INSERT INTO `+table+` VALUES ($1, 'x')`, d.firstID+i); err != nil {
			return err
		}
		time.Sleep(time.Second)
	}
	time.Sleep(2 * time.Second)
	return nil
}

// report adds the latencies and the engine's peak RSS to the report.
func (d *deliveries) report(add func(string, ...any), clients string, n int, failures int64, rss float64) error {
	if len(d.lat) == 0 || len(d.cold) == 0 {
		return fmt.Errorf("no client received a change (%d request failures)", failures)
	}
	add("| shape write → %s, %d on one shape, %d writes 1 s apart after a first one | p50 %s, p99 %s (%d of %d deliveries, %d failed requests) | | |",
		clients, n, d.writes, percentile(d.lat, 0.5), percentile(d.lat, 0.99), len(d.lat), n*d.writes, failures)
	add("| … the first write after the %d %s connected | p50 %s, p99 %s (%d of %d deliveries) | | |", n, clients, percentile(d.cold, 0.5), percentile(d.cold, 0.99), len(d.cold), n)
	add("| engine peak RSS with %d %s | %.0f MiB | | |", n, clients, rss)
	return nil
}
