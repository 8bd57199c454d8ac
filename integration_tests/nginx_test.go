package integration_tests

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shapelog/shapelog/internal/connectortest"
	"github.com/shapelog/shapelog/internal/pgtest"
)

// This file runs nginx with the repository's nginx.conf in front of the
// engine binary and checks that it does what Electric relies on a CDN for:
// identical live requests collapse into one engine request, and closed
// snapshot chunks are served from the cache.

// nginxBinary finds nginx or skips the test.
func nginxBinary(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	t.Skip("skipping: nginx is not installed (/usr/sbin/nginx); .ci/run installs it with apt-get install nginx")
	return ""
}

// startNginx renders ../nginx.conf for upstream (host:port) and runs nginx
// in the foreground with its own prefix, cache and temp directories; it
// returns nginx's base URL.
func startNginx(t *testing.T, upstream string) string {
	t.Helper()
	bin := nginxBinary(t)
	tmpl, err := os.ReadFile(filepath.Join("..", "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	port, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	prefix := t.TempDir()
	for _, d := range []string{"cache", "temp", "logs"} {
		if err := os.Mkdir(filepath.Join(prefix, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := strings.NewReplacer(
		"${SHAPELOG_NGINX_PORT}", "127.0.0.1:"+strconv.Itoa(port),
		"${SHAPELOG_UPSTREAM}", upstream,
		"${SHAPELOG_NGINX_CACHE_DIR}", filepath.Join(prefix, "cache"),
		"${SHAPELOG_NGINX_TEMP_DIR}", filepath.Join(prefix, "temp"),
	).Replace(string(tmpl))
	if i := strings.Index(conf, "${SHAPELOG_"); i >= 0 {
		t.Fatalf("nginx.conf has a placeholder the test does not fill: %.40s", conf[i:])
	}
	confPath := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	errorLog := filepath.Join(prefix, "logs", "error.log")
	global := "daemon off; pid " + filepath.Join(prefix, "nginx.pid") + ";"
	if os.Geteuid() == 0 {
		// As root the workers would switch to nobody and could not use
		// the test's directories.
		global += " user root;"
	}
	cmd := exec.Command(bin, "-p", prefix, "-c", confPath, "-e", errorLog, "-g", global)
	out := &syncedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(errorLog)
			t.Logf("nginx output:\n%s\nnginx error.log:\n%s", out.String(), b)
		}
	})
	addr := "127.0.0.1:" + strconv.Itoa(port)
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			return "http://" + addr
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(errorLog)
			t.Fatalf("nginx exited: %s\n%s", out.String(), b)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(errorLog)
			t.Fatalf("nginx is not listening on %s: %s\n%s", addr, out.String(), b)
		}
	}
}

// countingProxy sits between nginx and the engine and counts the requests
// that reach the engine, by query string.
type countingProxy struct {
	srv *httptest.Server
	mu  sync.Mutex
	n   map[string]int
}

func newCountingProxy(t *testing.T, engineURL string) *countingProxy {
	t.Helper()
	target, err := url.Parse(engineURL)
	if err != nil {
		t.Fatal(err)
	}
	p := &countingProxy{n: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(target)
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.n[r.URL.RawQuery]++
		p.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *countingProxy) count(query string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n[query]
}

// shapeResponse is one /v1/shape response.
type shapeResponse struct {
	status  int
	header  http.Header
	body    []byte
	msgs    []map[string]any
	elapsed time.Duration
}

func (r *shapeResponse) cacheStatus() string { return r.header.Get("X-Cache-Status") }

func getShape(t *testing.T, c *http.Client, u string, header ...string) *shapeResponse {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	r := &shapeResponse{status: resp.StatusCode, header: resp.Header, body: body, elapsed: time.Since(start)}
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &r.msgs); err != nil {
			t.Fatalf("GET %s: body is not a JSON array: %v\n%s", u, err, body)
		}
	}
	return r
}

// shapeQuery builds a query string sorted like the TS client's.
func shapeQuery(kv ...string) string {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return v.Encode()
}

func TestNginxCachesAndCollapsesShapeRequests(t *testing.T) {
	nginxBinary(t)
	dbURL := pgtest.NewDatabase(t)
	conn := connectortest.Connect(t, dbURL)
	connectortest.Exec(t, conn, `CREATE TABLE items (id int4 PRIMARY KEY, title text)`)
	connectortest.Exec(t, conn, `INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 20) i`)
	// The live requests must stay parked at the engine until the write.
	e := startEngineProcess(t, dbURL, "SHAPELOG_LONG_POLL_TIMEOUT=20s")
	origin := newCountingProxy(t, e.URL)
	nginx := startNginx(t, strings.TrimPrefix(origin.srv.URL, "http://"))
	hc := &http.Client{Timeout: 60 * time.Second}
	secret := connectortest.AccessKey

	// A snapshot chunk (offset=-1) is closed: a week in browsers, an hour
	// in shared caches. The second request is a cache hit.
	initial := shapeQuery("offset", "-1", "secret", secret, "table", "items")
	first := getShape(t, hc, nginx+"/v1/shape?"+initial)
	if first.status != http.StatusOK {
		t.Fatalf("offset=-1: %d %s", first.status, first.body)
	}
	handle, offset := first.header.Get("Electric-Handle"), first.header.Get("Electric-Offset")
	if handle == "" || offset == "" {
		t.Fatalf("offset=-1 response without electric-handle/electric-offset: %v", first.header)
	}
	if got := first.cacheStatus(); got != "MISS" {
		t.Errorf("first offset=-1 request: X-Cache-Status %q, want MISS", got)
	}
	second := getShape(t, hc, nginx+"/v1/shape?"+initial)
	if got := second.cacheStatus(); got != "HIT" {
		t.Errorf("second offset=-1 request: X-Cache-Status %q, want HIT (cache-control %q)", got, first.header.Get("Cache-Control"))
	}
	if string(second.body) != string(first.body) || second.header.Get("Electric-Handle") != handle ||
		second.header.Get("Electric-Schema") != first.header.Get("Electric-Schema") {
		t.Errorf("cached offset=-1 response differs from the original")
	}
	if n := origin.count(initial); n != 1 {
		t.Errorf("the engine saw %d offset=-1 requests, want 1", n)
	}
	// A conditional request for the cached chunk is answered by nginx.
	if etag := first.header.Get("ETag"); etag == "" {
		t.Errorf("offset=-1 response without an ETag")
	} else if r := getShape(t, hc, nginx+"/v1/shape?"+initial, "If-None-Match", etag); r.status != http.StatusNotModified {
		t.Errorf("If-None-Match with the chunk's ETag: %d %s, want 304", r.status, r.cacheStatus())
	}
	if n := origin.count(initial); n != 1 {
		t.Errorf("after a conditional request the engine saw %d offset=-1 requests, want 1", n)
	}

	// Catch up to the end of the snapshot like the client does.
	rows := 0
	for range 50 {
		rows += countChanges(first.msgs)
		if _, ok := first.header["Electric-Up-To-Date"]; ok {
			break
		}
		first = getShape(t, hc, nginx+"/v1/shape?"+shapeQuery("handle", handle, "offset", offset, "secret", secret, "table", "items"))
		if first.status != http.StatusOK {
			t.Fatalf("catch-up at %s: %d %s", offset, first.status, first.body)
		}
		offset = first.header.Get("Electric-Offset")
	}
	if rows != 20 {
		t.Fatalf("synced %d rows, want 20", rows)
	}

	// N identical live requests (the same handle, offset and cursor, as N
	// clients at the same point of the shape send), one write: every client
	// gets it and the engine sees about one request.
	const n = 50
	live := shapeQuery("cursor", "", "handle", handle, "live", "true", "offset", offset, "secret", secret, "table", "items")
	liveClient := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: n}}
	var written sync.WaitGroup
	written.Add(n)
	results := make([]*shapeResponse, n)
	errs := make([]error, n)
	var done sync.WaitGroup
	for i := range n {
		done.Add(1)
		go func() {
			defer done.Done()
			var once sync.Once
			wrote := func() { once.Do(written.Done) }
			defer wrote()
			trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { wrote() }}
			req, err := http.NewRequest(http.MethodGet, nginx+"/v1/shape?"+live, nil)
			if err != nil {
				errs[i] = err
				return
			}
			resp, err := liveClient.Do(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
			if err != nil {
				errs[i] = err
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				errs[i] = err
				return
			}
			r := &shapeResponse{status: resp.StatusCode, header: resp.Header, body: body}
			if resp.StatusCode == http.StatusOK {
				errs[i] = json.Unmarshal(body, &r.msgs)
			}
			results[i] = r
		}()
	}
	written.Wait()
	waitFor(t, "the first live request to reach the engine", func() bool { return origin.count(live) >= 1 })
	// Give nginx a moment to read the other requests, which then wait on
	// the cache lock; the assertions below do not depend on it.
	time.Sleep(300 * time.Millisecond)
	connectortest.Exec(t, conn, `INSERT INTO items VALUES (21, 'the write')`)
	done.Wait()

	statuses := map[string]int{}
	for i, r := range results {
		if errs[i] != nil {
			t.Fatalf("live request %d: %v", i, errs[i])
		}
		statuses[r.cacheStatus()]++
		if r.status != http.StatusOK {
			t.Fatalf("live request %d: %d %s", i, r.status, r.body)
		}
		var got []string
		for _, m := range r.msgs {
			if k, _ := m["key"].(string); k != "" {
				got = append(got, k)
			}
		}
		if len(got) != 1 || got[0] != `"public"."items"/"21"` {
			t.Fatalf("live request %d got changes %v, want the insert of row 21\n%s", i, got, r.body)
		}
		if _, ok := r.header["Electric-Up-To-Date"]; !ok || r.header.Get("Electric-Cursor") == "" {
			t.Errorf("live request %d: headers %v, want electric-up-to-date and electric-cursor", i, r.header)
		}
	}
	origins := origin.count(live)
	t.Logf("%d identical live requests through nginx: %d reached the engine; cache statuses %v", n, origins, sortedCounts(statuses))
	if origins > 3 {
		t.Errorf("the engine saw %d requests for one live URL asked %d times, want ≤ 3 (nginx should collapse them)", origins, n)
	}

	// Live mode over SSE streams through nginx, bypassing its cache.
	t.Run("Electric client over SSE through nginx", func(t *testing.T) {
		if _, err := exec.LookPath("node"); err != nil {
			t.Skip("skipping: `node` is not installed")
		}
		c := startElectricClientWith(t, "SSE through nginx", nginx, map[string]any{"table": "items", "secret": secret}, map[string]any{"liveSse": true})
		c.waitRows("initial sync through nginx", func(rows map[string]map[string]any) string {
			if len(rows) != 21 {
				return fmt.Sprintf("%d rows", len(rows))
			}
			return ""
		})
		c.waitEvent("an SSE request through nginx", func(ev clientEvent) bool {
			return ev.Event == "fetch" && strings.Contains(ev.URL, "live_sse=true") && ev.Status == 200
		})
		sse := c.countFetches("live_sse=true")
		connectortest.Exec(t, conn, `UPDATE items SET title = 'over sse' WHERE id = 3`)
		connectortest.Exec(t, conn, `UPDATE items SET title = 'over sse too' WHERE id = 4`)
		c.waitRows("live changes over SSE through nginx", func(rows map[string]map[string]any) string {
			if rows["3"]["title"] != "over sse" || rows["4"]["title"] != "over sse too" {
				return fmt.Sprintf("rows 3 and 4: %v %v", rows["3"], rows["4"])
			}
			return ""
		})
		if n := c.countFetches("live_sse=true"); n != sse {
			t.Errorf("%d more SSE requests for two changes: nginx did not stream the open response", n-sse)
		}
	})

	// Electric's own client also syncs through the cache.
	t.Run("Electric client through nginx", func(t *testing.T) {
		if _, err := exec.LookPath("node"); err != nil {
			t.Skip("skipping: `node` is not installed")
		}
		c := startElectricClient(t, "through nginx", nginx, map[string]any{"table": "items", "secret": secret})
		c.waitRows("initial sync through nginx", func(rows map[string]map[string]any) string {
			if len(rows) != 21 || rows["21"] == nil {
				return fmt.Sprintf("%d rows", len(rows))
			}
			return ""
		})
		connectortest.Exec(t, conn, `UPDATE items SET title = 'changed' WHERE id = 1`)
		connectortest.Exec(t, conn, `DELETE FROM items WHERE id = 2`)
		c.waitRows("live changes through nginx", func(rows map[string]map[string]any) string {
			if len(rows) != 20 || rows["2"] != nil || rows["1"]["title"] != "changed" {
				return fmt.Sprintf("%d rows, row 1 %v", len(rows), rows["1"])
			}
			return ""
		})
		// After a TRUNCATE the shape has a new handle while nginx still
		// holds the old handle's snapshot chunk (cached for an hour): a
		// client starting now syncs the stale chunk, gets 409 at its next
		// request and resyncs under the new handle.
		connectortest.Exec(t, conn, `TRUNCATE items`)
		connectortest.Exec(t, conn, `INSERT INTO items VALUES (100, 'after truncate')`)
		onlyRow100 := func(rows map[string]map[string]any) string {
			if len(rows) != 1 || rows["100"] == nil {
				return fmt.Sprintf("%d rows", len(rows))
			}
			return ""
		}
		c.waitRows("resync through nginx after TRUNCATE", onlyRow100)
		c.waitEvent("must-refetch", func(ev clientEvent) bool { return ev.Event == "must-refetch" })
		late := startElectricClient(t, "late, through nginx", nginx, map[string]any{"table": "items", "secret": secret})
		late.waitRows("a client starting after the TRUNCATE, through nginx", onlyRow100)
	})
}

func countChanges(msgs []map[string]any) int {
	n := 0
	for _, m := range msgs {
		if _, ok := m["key"]; ok {
			n++
		}
	}
	return n
}

func sortedCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%d ", k, m[k])
	}
	return strings.TrimSpace(b.String())
}

// waitFor polls cond for up to 30 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
