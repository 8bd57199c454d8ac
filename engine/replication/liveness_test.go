package replication

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/shapelog/shapelog/engine/catalog"
	"github.com/shapelog/shapelog/engine/shapelog"
	"github.com/shapelog/shapelog/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// syncBuffer collects log lines from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTimeoutReconnects cuts the replication connection silently (through
// a proxy that stops forwarding without closing anything) and checks that
// the session times out, replication reconnects, and the log ends up with
// every row exactly once.
func TestTimeoutReconnects(t *testing.T) {
	ctx := context.Background()
	dbURL := pgtest.NewDatabase(t)
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE TABLE items (id int PRIMARY KEY, body text)"); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := pgtest.StartProxy(t, u.Host)
	u.Host = proxy.Addr()

	pool, err := pgxpool.New(ctx, dbURL) // queries go direct; only replication through the proxy
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store, err := shapelog.Open(t.TempDir(), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	logs := &syncBuffer{}
	const timeout = 2 * time.Second
	r := New(Config{DatabaseURL: u.String(), Publication: "liveness", Slot: "liveness", Filter: catalog.Filter{Schemas: []string{"public"}},
		Timeout: timeout, LagLogInterval: 200 * time.Millisecond}, store, pool, catalog.NewTypes(), zerolog.New(logs))
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(runCtx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "replication to start", 30*time.Second, func() bool { return r.Status().State == StateActive })

	insert := func(from, to int) uint64 {
		t.Helper()
		for i := from; i <= to; i += 10 {
			if _, err := conn.Exec(ctx, "INSERT INTO items SELECT g, 'row ' || g FROM generate_series($1::int, $2::int) g", i, min(i+9, to)); err != nil {
				t.Fatal(err)
			}
		}
		var lsn pglogrepl.LSN
		if err := conn.QueryRow(ctx, "SELECT pg_current_wal_flush_lsn()::text").Scan(&lsn); err != nil {
			t.Fatal(err)
		}
		return uint64(lsn)
	}
	durable := func(lsn uint64) func() bool {
		return func() bool { return store.Durable().EndLSN >= lsn }
	}

	lsn := insert(1, 100)
	waitFor(t, "the first rows in the log", 30*time.Second, durable(lsn))
	// An idle stream stays up: keepalives answer the status updates.
	time.Sleep(2 * timeout)
	if strings.Contains(logs.String(), "replication timeout") {
		t.Fatalf("an idle, healthy stream timed out:\n%s", logs.String())
	}
	if st := r.Status(); st.State != StateActive || st.Lag.ServerWALEnd == 0 || st.Lag.Bytes != 0 || st.Lag.Seconds != 0 {
		t.Fatalf("idle and caught up: status %+v", st)
	}
	if !strings.Contains(logs.String(), `"message":"replication lag"`) || !strings.Contains(logs.String(), `"lag_bytes":0`) {
		t.Fatalf("no lag log line:\n%s", logs.String())
	}
	before := proxy.Connections()

	proxy.Freeze()
	frozenAt := time.Now()
	lsn = insert(101, 200)
	waitFor(t, "the timeout to be logged", 4*timeout, func() bool { return strings.Contains(logs.String(), "replication timeout") })
	// Measured from the last message received, shortly before the freeze.
	if took := time.Since(frozenAt); took < timeout/2 {
		t.Fatalf("timed out %s after the freeze, too early for the %s bound", took, timeout)
	}
	// While cut off, the log falls behind and says so.
	if st := r.Status(); st.Lag.DurableLSN >= lsn {
		t.Fatalf("the log advanced while the connection was frozen: %+v", st)
	}
	waitFor(t, "the rows written meanwhile in the log", 30*time.Second, durable(lsn))
	if proxy.Connections() <= before {
		t.Fatalf("replication did not reconnect through the proxy (%d connections)", proxy.Connections())
	}
	waitFor(t, "the lag to return to 0", 10*time.Second, func() bool {
		st := r.Status()
		return st.State == StateActive && st.Lag.Bytes == 0 && st.Lag.Seconds == 0
	})

	// Every row, exactly once, in order.
	it, err := store.Changes(store.Horizon(), store.Durable().Ts, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var got []string
	for it.Next() {
		e := it.Entry()
		if e.Op != shapelog.OpInsert {
			t.Fatalf("unexpected %s", e.Op)
		}
		got = append(got, string(e.Values[0]))
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := 1; i <= 200; i++ {
		want = append(want, fmt.Sprint(i))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("log holds %d inserts %v, want 1..200 once each", len(got), got)
	}
	var timeoutLine string
	for line := range strings.Lines(logs.String()) {
		if strings.Contains(line, "replication timeout") {
			timeoutLine = line
			break
		}
	}
	if !strings.Contains(timeoutLine, `"level":"warn"`) || !strings.Contains(timeoutLine, "reconnecting") {
		t.Errorf("timeout log line: %s", timeoutLine)
	}
}
