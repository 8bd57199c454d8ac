package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime/debug"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// shapeFollower follows one shape over /v1/shape like Electric's client.
type shapeFollower struct {
	base   string
	client *http.Client
	query  url.Values
	handle string
	offset string
	cursor string
}

// step makes one request and reports whether it brought changes and
// whether the shape is now up to date.
func (f *shapeFollower) step(ctx context.Context, live bool) (data, upToDate bool, err error) {
	q := url.Values{}
	for k, v := range f.query {
		q[k] = v
	}
	q.Set("offset", f.offset)
	if f.handle != "" {
		q.Set("handle", f.handle)
	}
	if live {
		q.Set("live", "true")
		q.Set("cursor", f.cursor)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.base+"/v1/shape?"+q.Encode(), nil)
	if err != nil {
		return false, false, err
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return false, false, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return false, false, err
	}
	if resp.StatusCode != http.StatusOK {
		return false, false, fmt.Errorf("GET /v1/shape: %d %s", resp.StatusCode, body)
	}
	f.handle, f.offset, f.cursor = resp.Header.Get("electric-handle"), resp.Header.Get("electric-offset"), resp.Header.Get("electric-cursor")
	_, upToDate = resp.Header["Electric-Up-To-Date"]
	return resp.Header.Get("electric-has-data") == "true", upToDate, nil
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

func percentile(lat []time.Duration, q float64) time.Duration {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat[int(q*float64(len(lat)-1))].Round(100 * time.Microsecond)
}

// shapesBench measures live shape delivery: one client's write-to-client
// latency, then many live clients on one shape woken by one write per
// second.
func (h *harness) shapesBench(ctx context.Context, clients, writes int, add func(string, ...any)) error {
	if _, err := h.conn.Exec(ctx, `CREATE TABLE live_items (id int PRIMARY KEY, v text); INSERT INTO live_items SELECT g, 'row ' || g FROM generate_series(1, 100) g`); err != nil {
		return err
	}
	// Thousands of client connections need more than the bench's usual
	// memory limit; a GC spinning at the limit would be measured as latency.
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(1 << 30))
	base := fmt.Sprintf("http://127.0.0.1:%d", h.port)
	transport := &http.Transport{MaxIdleConns: clients + 10, MaxIdleConnsPerHost: clients + 10, IdleConnTimeout: time.Minute}
	hc := &http.Client{Transport: transport, Timeout: time.Minute}
	defer transport.CloseIdleConnections()
	query := url.Values{"table": {"live_items"}, "secret": {benchKey}}
	lead := &shapeFollower{base: base, client: hc, query: query, offset: "-1"}
	if err := lead.catchUp(ctx); err != nil {
		return err
	}
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
	var wrote atomic.Int64 // unix ns of the last write
	var mu sync.Mutex
	var lat []time.Duration
	var failures atomic.Int64
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	ready := make(chan struct{}, clients)
	for i := 0; i < clients; i++ {
		f := &shapeFollower{base: base, client: hc, query: query, handle: lead.handle, offset: lead.offset, cursor: lead.cursor}
		wg.Add(1)
		go func() {
			defer wg.Done()
			first := true
			for runCtx.Err() == nil {
				if first {
					ready <- struct{}{}
					first = false
				}
				got, _, err := f.step(runCtx, true)
				if err != nil {
					if runCtx.Err() == nil {
						failures.Add(1)
						time.Sleep(100 * time.Millisecond)
					}
					continue
				}
				if got {
					d := time.Since(time.Unix(0, wrote.Load()))
					mu.Lock()
					lat = append(lat, d)
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < clients; i++ {
		<-ready
	}
	time.Sleep(2 * time.Second) // let every request reach the engine and park
	for i := 0; i < writes; i++ {
		wrote.Store(time.Now().UnixNano())
		if _, err := h.conn.Exec(ctx, `INSERT INTO live_items VALUES ($1, 'x')`, next); err != nil {
			cancel()
			return err
		}
		next++
		time.Sleep(time.Second)
	}
	cancel()
	wg.Wait()
	if len(lat) == 0 {
		return fmt.Errorf("no live client received a change (%d request failures)", failures.Load())
	}
	add("| shape write → live clients, %d clients on one shape, %d writes 1 s apart | p50 %s, p99 %s (%d deliveries, %d failed requests) | | |",
		clients, writes, percentile(lat, 0.5), percentile(lat, 0.99), len(lat), failures.Load())
	add("| engine peak RSS with %d live clients | %.0f MiB | | |", clients, h.peakRSS())
	return nil
}
