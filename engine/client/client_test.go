package client

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// TestRetries: 429 and 5xx are retried (honouring Retry-After), 4xx never,
// and the server's code and message survive.
func TestRetries(t *testing.T) {
	var calls atomic.Int64
	var keys []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		if r.Header.Get("Authorization") != "Convex k" || r.Header.Get("Convex-Client") != "test-client-1.0.0" {
			t.Errorf("headers: %v", r.Header)
		}
		switch r.URL.Path {
		case "/api/streaming_import/import_airbyte_records":
			switch n {
			case 1:
				w.Header().Set("Retry-After", "0")
				w.WriteHeader(http.StatusTooManyRequests)
			case 2:
				w.WriteHeader(http.StatusServiceUnavailable)
			default:
				w.WriteHeader(http.StatusOK)
			}
		default:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"code":"MissingIndex","message":"Missing index: t"}`))
		}
	}))
	defer srv.Close()
	c, err := New(srv.URL, "k", Options{ClientName: "test-client-1.0.0", RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ImportAirbyteRecords(context.Background(), ImportRequest{}, ""); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 3 || keys[0] == "" || keys[0] != keys[1] || keys[1] != keys[2] {
		t.Fatalf("%d calls, idempotency keys %q: want 3 calls with one key", calls.Load(), keys)
	}
	calls.Store(0)
	_, err = c.PrimaryKeyIndexesReady(context.Background(), []string{"t"})
	var ce *Error
	if !errors.As(err, &ce) || ce.Code != "MissingIndex" || ce.Status != 400 || ce.Retryable() {
		t.Fatalf("error %v", err)
	}
	if calls.Load() != 1 {
		t.Fatalf("a 400 was retried: %d calls", calls.Load())
	}
	if _, err := New("ftp://x", "k", Options{}); err == nil {
		t.Fatal("a non-HTTP URL was accepted")
	}
}

// An error body's "oldestCursor" member is kept when present, nil when not.
func TestErrorOldestCursor(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		if r.URL.Query().Get("cursor") == "1" {
			_, _ = w.Write([]byte(`{"code":"InvalidWindowToReadDocuments","message":"too old","oldestCursor":1700000000000000042}`))
		} else {
			_, _ = w.Write([]byte(`{"code":"InvalidWindowToReadDocuments","message":"too old"}`))
		}
	}))
	defer srv.Close()
	c, err := New(srv.URL, "k", Options{})
	if err != nil {
		t.Fatal(err)
	}
	for cursor, want := range map[int64]int64{1: 1700000000000000042, 2: -1} {
		_, err := c.DocumentDeltas(context.Background(), DeltasRequest{Cursor: cursor})
		var ce *Error
		if !errors.As(err, &ce) || ce.Code != "InvalidWindowToReadDocuments" || ce.Message != "too old" {
			t.Fatalf("cursor %d: error %v", cursor, err)
		}
		switch {
		case want < 0 && ce.OldestCursor != nil:
			t.Errorf("cursor %d: OldestCursor %d, want nil", cursor, *ce.OldestCursor)
		case want >= 0 && (ce.OldestCursor == nil || *ce.OldestCursor != want):
			t.Errorf("cursor %d: OldestCursor %v, want %d", cursor, ce.OldestCursor, want)
		}
	}
}

// A page is read as its consumer goes: a consumer slower than Timeout does
// not fail it, an engine that stops sending for Timeout does.
func TestPageTimeoutIsPerRead(t *testing.T) {
	stall := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"values":[{"a":1},{"a":2}`))
		if r.URL.Query().Get("cursor") == "1" {
			w.(http.Flusher).Flush()
			<-stall // the engine goes quiet mid-page
		}
		_, _ = w.Write([]byte(`],"cursor":5,"hasMore":false}`))
	}))
	defer srv.Close()
	defer close(stall)
	c, err := New(srv.URL, "k", Options{Timeout: 200 * time.Millisecond, RetryMax: -1})
	if err != nil {
		t.Fatal(err)
	}
	docs := 0
	page, err := c.DocumentDeltasEach(context.Background(), DeltasRequest{Cursor: 0}, func([]byte) error {
		docs++
		time.Sleep(300 * time.Millisecond) // longer than Timeout
		return nil
	})
	if err != nil || docs != 2 || page.Cursor != 5 {
		t.Fatalf("slow consumer: %v, %d documents, %+v", err, docs, page)
	}
	_, err = c.DocumentDeltasEach(context.Background(), DeltasRequest{Cursor: 1}, func([]byte) error { return nil })
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("stalled engine: %v, want a deadline error", err)
	}
}
