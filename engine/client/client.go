// Package client is the Go client of the engine's /api surface, used by the
// connectors, tests and benchmarks. It retries connection errors, 429 and
// 5xx responses with exponential backoff (honouring Retry-After), never
// retries other 4xx, and returns *Error values that keep the server's code
// and message.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-cleanhttp"
	"github.com/hashicorp/go-retryablehttp"
)

// Options tune a client. The zero value is sensible.
type Options struct {
	// ClientName is sent as `Convex-Client: <name>` and must look like
	// "<client>-<semver>"; default "shapelog-client-0.1.0".
	ClientName string
	// RetryMax is how many times a failed request is retried (default 5).
	RetryMax int
	// RetryWaitMin and RetryWaitMax bound the backoff (default 250ms, 10s).
	RetryWaitMin, RetryWaitMax time.Duration
	// Timeout bounds each attempt (default 5 minutes). For snapshot and
	// delta pages, which are read as the caller consumes them, it bounds the
	// wait for the response and then each read of the body instead: a page
	// is one transaction's changes, however many, and a slow consumer must
	// not fail it.
	Timeout time.Duration
}

// Client calls one engine.
type Client struct {
	base    *url.URL
	key     string
	name    string
	timeout time.Duration
	http    *retryablehttp.Client
	pages   *retryablehttp.Client // without an overall deadline (see Options.Timeout)
}

// New creates a client for the engine at baseURL (e.g. https://host:3000).
func New(baseURL, accessKey string, opts Options) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("invalid deployment URL %q: expected http(s)://host[:port]", baseURL)
	}
	if opts.ClientName == "" {
		opts.ClientName = "shapelog-client-0.1.0"
	}
	if opts.RetryMax == 0 {
		opts.RetryMax = 5
	}
	if opts.RetryWaitMin == 0 {
		opts.RetryWaitMin = 250 * time.Millisecond
	}
	if opts.RetryWaitMax == 0 {
		opts.RetryWaitMax = 10 * time.Second
	}
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Minute
	}
	transport := cleanhttp.DefaultPooledTransport()
	transport.ResponseHeaderTimeout = opts.Timeout
	newClient := func(timeout time.Duration) *retryablehttp.Client {
		rc := retryablehttp.NewClient()
		rc.Logger = nil
		rc.RetryMax = opts.RetryMax
		rc.RetryWaitMin, rc.RetryWaitMax = opts.RetryWaitMin, opts.RetryWaitMax
		rc.HTTPClient = &http.Client{Transport: transport, Timeout: timeout}
		rc.CheckRetry = retryPolicy
		rc.ErrorHandler = retryablehttp.PassthroughErrorHandler
		return rc
	}
	return &Client{base: u, key: accessKey, name: opts.ClientName, timeout: opts.Timeout, http: newClient(opts.Timeout), pages: newClient(0)}, nil
}

// idleTimeoutBody fails a read of a response body that waits longer than
// timeout for the engine.
type idleTimeoutBody struct {
	io.ReadCloser
	timeout time.Duration
	timer   *time.Timer
	expired atomic.Bool
}

func newIdleTimeoutBody(body io.ReadCloser, timeout time.Duration) *idleTimeoutBody {
	b := &idleTimeoutBody{ReadCloser: body, timeout: timeout}
	b.timer = time.AfterFunc(timeout, func() {
		b.expired.Store(true)
		body.Close() // unblocks the read
	})
	b.timer.Stop()
	return b
}

func (b *idleTimeoutBody) Read(p []byte) (int, error) {
	b.timer.Reset(b.timeout)
	n, err := b.ReadCloser.Read(p)
	b.timer.Stop()
	if err != nil && b.expired.Load() {
		err = fmt.Errorf("the engine sent nothing for %s: %w", b.timeout, os.ErrDeadlineExceeded)
	}
	return n, err
}

// retryPolicy retries transport errors, 429 and 5xx (but not 501), never
// another 4xx.
func retryPolicy(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err != nil {
		var urlErr *url.Error
		if errors.As(err, &urlErr) && strings.Contains(urlErr.Error(), "unsupported protocol scheme") {
			return false, err
		}
		return true, nil
	}
	return resp.StatusCode == http.StatusTooManyRequests || (resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented), nil
}

// Error is an error response from the engine.
type Error struct {
	Status  int
	Code    string
	Message string
	// OldestCursor is the body's "oldestCursor" member, nil when absent: on
	// an InvalidWindowToReadDocuments answer, the lowest cursor
	// document_deltas accepts now.
	OldestCursor *int64
}

func (e *Error) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("engine answered HTTP %d: %s", e.Status, e.Message)
	}
	return fmt.Sprintf("engine answered HTTP %d %s: %s", e.Status, e.Code, e.Message)
}

// Retryable reports whether the request may succeed if tried again later.
func (e *Error) Retryable() bool {
	return e.Status == http.StatusTooManyRequests || e.Status >= 500
}

// Auth reports an authentication or authorisation failure (wrong key).
func (e *Error) Auth() bool {
	return (e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden ||
		e.Code == "InvalidAdminKey" || e.Code == "BadAdminKey" || e.Code == "BadDeployKey") && !e.DatabasePrivilege()
}

// DatabasePrivilege reports that the engine's own database user lacks a
// privilege for the request (the key was fine).
func (e *Error) DatabasePrivilege() bool { return e.Code == "InsufficientPrivilege" }

// do sends a request and decodes a 200 JSON body into out (if non-nil).
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body any, header http.Header, out any) error {
	u := *c.base
	u.Path += path
	if query != nil {
		u.RawQuery = query.Encode()
	}
	var raw any
	switch b := body.(type) {
	case nil:
	case retryablehttp.ReaderFunc:
		raw = b
	default:
		enc, err := json.Marshal(body)
		if err != nil {
			return err
		}
		raw = enc
	}
	req, err := retryablehttp.NewRequestWithContext(ctx, method, u.String(), raw)
	if err != nil {
		return err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Convex "+c.key)
	req.Header.Set("Convex-Client", c.name)
	req.Header.Set("Accept", "application/json")
	if body != nil && req.Header.Get("Content-Type") == "" { // header may name another
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.http
	if _, ok := out.(*pageOut); ok {
		hc = c.pages
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("calling %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return decodeError(resp)
	}
	switch out := out.(type) {
	case nil:
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	case *pageOut:
		if err := streamPage(newIdleTimeoutBody(resp.Body, c.timeout), out); err != nil {
			return fmt.Errorf("decoding %s response: %w", path, err)
		}
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decoding %s response: %w", path, err)
	}
	return nil
}

func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &Error{Status: resp.StatusCode}
	var body struct {
		Code, Message string
		OldestCursor  *int64 `json:"oldestCursor"`
	}
	if json.Unmarshal(b, &body) == nil && (body.Code != "" || body.Message != "") {
		e.Code, e.Message, e.OldestCursor = body.Code, body.Message, body.OldestCursor
	} else {
		e.Message = strings.TrimSpace(string(b))
		if e.Message == "" {
			e.Message = http.StatusText(resp.StatusCode)
		}
	}
	return e
}

// JSONSchemas returns each published table's JSON Schema, keyed by API name.
func (c *Client) JSONSchemas(ctx context.Context, deltaSchema bool, format string) (map[string]json.RawMessage, error) {
	q := url.Values{"deltaSchema": {strconv.FormatBool(deltaSchema)}}
	if format != "" {
		q.Set("format", format)
	}
	var out map[string]json.RawMessage
	return out, c.do(ctx, http.MethodGet, "/api/json_schemas", q, nil, nil, &out)
}

// SnapshotRequest asks for one list_snapshot page.
type SnapshotRequest struct {
	TableName string // "" = every published table
	Snapshot  *int64 // from the first page, on later pages
	Cursor    *string
	Format    string // "json" (default) or "convex_json"
	// Limit is the page size in rows; 0 = the server's default (1024).
	Limit int
}

// SnapshotPage is one list_snapshot page. Values are raw JSON documents.
type SnapshotPage struct {
	Values   []json.RawMessage `json:"values"`
	Snapshot int64             `json:"snapshot"`
	Cursor   *string           `json:"cursor"`
	HasMore  bool              `json:"hasMore"`
}

// ListSnapshot reads one page of a consistent snapshot.
func (c *Client) ListSnapshot(ctx context.Context, r SnapshotRequest) (*SnapshotPage, error) {
	var docs collected
	page, err := c.ListSnapshotEach(ctx, r, docs.add)
	if err != nil {
		return nil, err
	}
	page.Values = docs.values()
	return page, nil
}

// ListSnapshotEach reads one page of a consistent snapshot, passing each
// document to each as it arrives (valid only during the call) instead of
// holding the page; the page returned has no Values.
func (c *Client) ListSnapshotEach(ctx context.Context, r SnapshotRequest, each func(doc []byte) error) (*SnapshotPage, error) {
	q := url.Values{}
	if r.TableName != "" {
		q.Set("tableName", r.TableName)
	}
	if r.Snapshot != nil {
		q.Set("snapshot", strconv.FormatInt(*r.Snapshot, 10))
	}
	if r.Cursor != nil {
		q.Set("cursor", *r.Cursor)
	}
	if r.Format != "" {
		q.Set("format", r.Format)
	}
	if r.Limit > 0 {
		q.Set("limit", strconv.Itoa(r.Limit))
	}
	var page SnapshotPage
	out := &pageOut{each: each, scalars: map[string]any{"snapshot": &page.Snapshot, "cursor": &page.Cursor, "hasMore": &page.HasMore}}
	if err := c.do(ctx, http.MethodGet, "/api/list_snapshot", q, nil, nil, out); err != nil {
		return nil, err
	}
	return &page, nil
}

// DeltasRequest asks for the changes after a cursor.
type DeltasRequest struct {
	Cursor    int64
	TableName string
	Format    string
	// Limit is the page size in changes (the page still ends on a
	// transaction boundary); 0 = the server's default.
	Limit int
}

// DeltasPage is one document_deltas page.
type DeltasPage struct {
	Values  []json.RawMessage `json:"values"`
	Cursor  int64             `json:"cursor"`
	HasMore bool              `json:"hasMore"`
}

// DocumentDeltas reads the changes committed after r.Cursor.
func (c *Client) DocumentDeltas(ctx context.Context, r DeltasRequest) (*DeltasPage, error) {
	var docs collected
	page, err := c.DocumentDeltasEach(ctx, r, docs.add)
	if err != nil {
		return nil, err
	}
	page.Values = docs.values()
	return page, nil
}

// DocumentDeltasEach reads the changes committed after r.Cursor, passing
// each document to each as it arrives (valid only during the call) instead
// of holding the page, which ends on a transaction boundary and so is as
// large as the largest transaction in it; the page returned has no Values.
func (c *Client) DocumentDeltasEach(ctx context.Context, r DeltasRequest, each func(doc []byte) error) (*DeltasPage, error) {
	q := url.Values{"cursor": {strconv.FormatInt(r.Cursor, 10)}}
	if r.TableName != "" {
		q.Set("tableName", r.TableName)
	}
	if r.Format != "" {
		q.Set("format", r.Format)
	}
	if r.Limit > 0 {
		q.Set("limit", strconv.Itoa(r.Limit))
	}
	var page DeltasPage
	out := &pageOut{each: each, scalars: map[string]any{"cursor": &page.Cursor, "hasMore": &page.HasMore}}
	if err := c.do(ctx, http.MethodGet, "/api/document_deltas", q, nil, nil, out); err != nil {
		return nil, err
	}
	return &page, nil
}

// WaitHealthy polls the engine at baseURL until /v1/health answers 200
// (replication active), or ctx ends.
func WaitHealthy(ctx context.Context, baseURL string) error {
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(baseURL, "/")+"/v1/health", nil)
		if err != nil {
			return err
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("engine at %s never became healthy: %w", baseURL, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
