package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shapelog/shapelog/engine"
	"github.com/shapelog/shapelog/internal/connectortest"
	"github.com/shapelog/shapelog/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const testKey = "test-access-key"

// startEngine runs an engine in-process against dbURL with the test key
// and slot.
func startEngine(t *testing.T, dbURL string, mods ...func(*engine.Config)) *engine.Engine {
	t.Helper()
	base := func(c *engine.Config) { c.AccessKey, c.Slot, c.Publication = testKey, "shapelog_test", "shapelog_test" }
	return connectortest.StartEngine(t, dbURL, append([]func(*engine.Config){base}, mods...)...)
}

func connect(t *testing.T, dbURL string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func mustExec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// apiResult is a decoded response.
type apiResult struct {
	Status int
	Body   []byte
}

func (r apiResult) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decoding %s: %v", r.Body, err)
	}
}

func (r apiResult) errorCode(t *testing.T) string {
	t.Helper()
	var e struct{ Code, Message string }
	r.decode(t, &e)
	if e.Message == "" {
		t.Fatalf("error without message: %s", r.Body)
	}
	return e.Code
}

// get calls an /api endpoint with the test key.
func get(t *testing.T, base, path string, params url.Values) apiResult {
	t.Helper()
	return getWith(t, base, path, params, "Convex "+testKey)
}

// sendJSON sends a JSON body with an Authorization header (if auth is set)
// and returns the status and the response body.
func sendJSON(t *testing.T, method, target, auth, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, target, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, b := roundTrip(t, req)
	return resp.StatusCode, b
}

// roundTrip sends req and reads the whole response.
func roundTrip(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func getWith(t *testing.T, base, path string, params url.Values, auth string) apiResult {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+path+"?"+params.Encode(), nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, b := roundTrip(t, req)
	return apiResult{Status: resp.StatusCode, Body: b}
}

type doc = map[string]any

type snapshotPage struct {
	Values   []doc   `json:"values"`
	Snapshot int64   `json:"snapshot"`
	Cursor   *string `json:"cursor"`
	HasMore  bool    `json:"hasMore"`
}

type deltasPage struct {
	Values  []doc `json:"values"`
	Cursor  int64 `json:"cursor"`
	HasMore bool  `json:"hasMore"`
}

// readSnapshot walks list_snapshot to the end.
func readSnapshot(t *testing.T, base string, params url.Values) ([]doc, int64) {
	t.Helper()
	var all []doc
	p := url.Values{}
	for k, v := range params {
		p[k] = v
	}
	for {
		r := get(t, base, "/api/list_snapshot", p)
		if r.Status != http.StatusOK {
			t.Fatalf("list_snapshot: %d %s", r.Status, r.Body)
		}
		var page snapshotPage
		r.decode(t, &page)
		all = append(all, page.Values...)
		if !page.HasMore {
			return all, page.Snapshot
		}
		p.Set("snapshot", strconv.FormatInt(page.Snapshot, 10))
		p.Set("cursor", *page.Cursor)
	}
}

// readDeltas walks document_deltas from cursor until hasMore is false.
func readDeltas(t *testing.T, base string, cursor int64, params url.Values) ([]doc, int64) {
	t.Helper()
	pages, end := deltaPages(t, base, cursor, params)
	return slices.Concat(pages...), end
}

// deltaPages reads document_deltas after cursor page by page, up to the
// log's end, and returns the pages and the last cursor.
func deltaPages(t *testing.T, base string, cursor int64, params url.Values) ([][]doc, int64) {
	t.Helper()
	p := url.Values{}
	for k, v := range params {
		p[k] = v
	}
	var pages [][]doc
	for {
		p.Set("cursor", strconv.FormatInt(cursor, 10))
		r := get(t, base, "/api/document_deltas", p)
		if r.Status != http.StatusOK {
			t.Fatalf("document_deltas: %d %s", r.Status, r.Body)
		}
		var page deltasPage
		r.decode(t, &page)
		pages = append(pages, page.Values)
		cursor = page.Cursor
		if !page.HasMore {
			return pages, cursor
		}
	}
}

// waitDeltas polls document_deltas until pred holds for what was read.
func waitDeltas(t *testing.T, base string, cursor int64, params url.Values, pred func([]doc) bool) []doc {
	t.Helper()
	var all []doc
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var got []doc
		got, cursor = readDeltas(t, base, cursor, params)
		all = append(all, got...)
		if pred(all) {
			return all
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("deltas never satisfied the condition; got %d docs: %s", len(all), brief(all))
	return nil
}

func brief(docs []doc) string {
	b, _ := json.Marshal(docs)
	if len(b) > 2000 {
		b = append(b[:2000], "…"...)
	}
	return string(b)
}

// apply folds snapshot documents and deltas into the table state by _id.
func apply(state map[string]doc, docs []doc) {
	for _, d := range docs {
		id := fmt.Sprint(d["_id"])
		if d["_truncated"] == true {
			table := d["_table"]
			for k, v := range state {
				if v["_table"] == table {
					delete(state, k)
				}
			}
			continue
		}
		if d["_deleted"] == true {
			delete(state, id)
			continue
		}
		state[id] = d
	}
}
