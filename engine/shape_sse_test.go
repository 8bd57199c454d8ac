package engine_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/shapelog/shapelog/engine"
	"github.com/shapelog/shapelog/internal/pgtest"
)

// sseStream is one live_sse response being read.
type sseStream struct {
	resp   *http.Response
	events chan string // data payloads, and ":" for each comment
	cancel context.CancelFunc
}

func openSSE(t *testing.T, c *shapeClient) *sseStream {
	t.Helper()
	q := url.Values{}
	for k, v := range c.params {
		q[k] = v
	}
	q.Set("offset", c.offset)
	q.Set("handle", c.handle)
	q.Set("cursor", c.cursor)
	q.Set("live", "true")
	q.Set("live_sse", "true")
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/shape?"+q.Encode(), nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	s := &sseStream{resp: resp, events: make(chan string, 1000), cancel: cancel}
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	go func() {
		defer close(s.events)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "data: "):
				s.events <- strings.TrimPrefix(line, "data: ")
			case strings.HasPrefix(line, ":"):
				s.events <- ":"
			}
		}
	}()
	return s
}

// next reads events up to and including the next up-to-date, applying
// them to c as Electric's client does, and returns the changes and the
// up-to-date's global_last_seen_lsn.
func (s *sseStream) next(t *testing.T, c *shapeClient) ([]shapeMsg, string) {
	t.Helper()
	var got []shapeMsg
	timeout := time.After(15 * time.Second)
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				t.Fatalf("stream ended before up-to-date; got %v", got)
			}
			if ev == ":" {
				continue
			}
			var m shapeMsg
			if err := json.Unmarshal([]byte(ev), &m); err != nil {
				t.Fatalf("event %q: %v", ev, err)
			}
			if m.Headers["control"] == "up-to-date" {
				return got, m.Headers["global_last_seen_lsn"].(string)
			}
			switch m.Headers["operation"] {
			case "insert":
				c.rows[m.Key] = m.Value
			case "update":
				for k, v := range m.Value {
					c.rows[m.Key][k] = v
				}
			case "delete":
				delete(c.rows, m.Key)
			}
			got = append(got, m)
		case <-timeout:
			t.Fatalf("no up-to-date within 15 s; got %v", got)
		}
	}
}

// TestShapeSSE: live mode over one Server-Sent Events response, as
// Electric's client uses it: changes as data events, an up-to-date after
// each batch, resuming from `<global_last_seen_lsn>_0` without a change
// missed or repeated, keep-alives, and a silent end after the SSE timeout.
func TestShapeSSE(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE items (id int PRIMARY KEY, title text)`)
	mustExec(t, conn, `INSERT INTO items VALUES (1, 'one'), (2, 'two')`)
	e := startShapeEngine(t, dbURL, func(c *engine.Config) { c.Shape.SSETimeout = 3 * time.Second })
	c := newShapeClient(t, e.URL(), url.Values{"table": {"items"}})
	c.sync()

	s := openSSE(t, c)
	h := s.resp.Header
	if s.resp.StatusCode != http.StatusOK || h.Get("Content-Type") != "text/event-stream" || h.Get("Electric-Handle") != c.handle ||
		h.Get("Electric-Offset") != c.offset || h.Get("Electric-Cursor") == "" || h.Get("Electric-Schema") != "" {
		t.Fatalf("SSE response %d with headers %v", s.resp.StatusCode, h)
	}
	start := time.Now()
	mustExec(t, conn, `INSERT INTO items VALUES (3, 'three')`)
	msgs, _ := s.next(t, c)
	// The stream is written by its shape's streamer, not a goroutine of its own.
	if _, m := scrapeMetrics(t, e.URL(), ""); m["shapelog_live_sse_streams"] != 1 {
		t.Errorf("/metrics while one SSE stream is open: shapelog_live_sse_streams %v", m["shapelog_live_sse_streams"])
	}
	if len(msgs) != 1 || msgs[0].Headers["operation"] != "insert" {
		t.Fatalf("first batch %v", msgs)
	}
	// One transaction of several changes arrives whole before its up-to-date.
	mustExec(t, conn, `BEGIN; UPDATE items SET title = 'uno' WHERE id = 1; DELETE FROM items WHERE id = 2; INSERT INTO items VALUES (4, 'four'); COMMIT`)
	msgs, lsn := s.next(t, c)
	if len(msgs) != 3 || len(c.rows) != 3 || *c.rows[`"public"."items"/"1"`]["title"] != "uno" {
		t.Fatalf("second batch %v, rows %v", msgs, c.describe())
	}
	// Nothing for a while: keep-alive comments, then the end of the stream.
	keepAlives := 0
	for ev := range s.events {
		if ev != ":" {
			t.Fatalf("unexpected event %q", ev)
		}
		keepAlives++
	}
	if took := time.Since(start); keepAlives == 0 || took < 2*time.Second {
		t.Fatalf("stream ended after %s with %d keep-alives", took, keepAlives)
	}

	// The client resumes from the last up-to-date: the changes after it,
	// none before it again.
	c.offset = lsn + "_0"
	mustExec(t, conn, `INSERT INTO items VALUES (5, 'five')`)
	s = openSSE(t, c)
	msgs, _ = s.next(t, c)
	if len(msgs) != 1 || *msgs[0].Value["id"] != "5" {
		t.Fatalf("after reconnecting: %v", msgs)
	}
	if len(c.rows) != 4 {
		t.Fatalf("rows %s", c.describe())
	}
	mustExec(t, conn, `INSERT INTO items VALUES (6, 'six')`)
	if msgs, _ = s.next(t, c); len(msgs) != 1 || *msgs[0].Value["id"] != "6" {
		t.Fatalf("live after reconnecting: %v", msgs)
	}
}
