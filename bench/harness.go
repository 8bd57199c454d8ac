package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shapelog/shapelog/engine/client"
	"github.com/shapelog/shapelog/internal/pgtest"
)

const benchKey = "bench-key"

type harness struct {
	bin     string
	cluster *pgtest.Cluster
	dbURL   string
	conn    *pgx.Conn
	storage string
	port    int
	engine  *exec.Cmd
	api     *client.Client
	closed  bool
}

func newHarness(ctx context.Context, bin string) (*harness, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("engine binary %s: %w (run make build)", bin, err)
	}
	fmt.Fprintln(os.Stderr, "starting PostgreSQL (durable: fsync on)…")
	cluster, err := startCluster("1GB") // the tables read stay cached
	if err != nil {
		return nil, err
	}
	h := &harness{bin: bin, cluster: cluster, dbURL: cluster.URL("postgres")}
	if h.conn, err = pgx.Connect(ctx, h.dbURL); err != nil {
		cluster.Stop()
		return nil, err
	}
	if h.storage, err = os.MkdirTemp("", "shapelog-bench-"); err != nil {
		return nil, err
	}
	if h.port, err = pgtest.FreePort(); err != nil {
		return nil, err
	}
	h.api, err = client.New(fmt.Sprintf("http://127.0.0.1:%d", h.port), benchKey, client.Options{ClientName: "shapelog-bench-0.1.0"})
	return h, err
}

func (h *harness) Close() {
	if h.closed {
		return
	}
	h.closed = true
	h.stopEngine()
	h.conn.Close(context.Background())
	h.cluster.Stop()
	os.RemoveAll(h.storage)
}

func (h *harness) machine() string {
	model := ""
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			if strings.HasPrefix(s.Text(), "model name") {
				model = strings.TrimSpace(strings.SplitN(s.Text(), ":", 2)[1])
				break
			}
		}
		f.Close()
	}
	var v string
	_ = h.conn.QueryRow(context.Background(), "SHOW server_version").Scan(&v)
	return fmt.Sprintf("%d CPUs (%s), PostgreSQL %s, loopback", runtime.NumCPU(), model, v)
}

func (h *harness) startEngine() error {
	cmd, err := startEngineProcess(h.bin, h.dbURL, h.port, h.storage, "bench")
	h.engine = cmd
	return err
}

// startEngineProcess runs the engine binary on dbURL and waits until it
// is active.
func startEngineProcess(bin, dbURL string, port int, storage, slot string) (*exec.Cmd, error) {
	cmd := exec.Command(bin, "serve", "--port", strconv.Itoa(port), "--storage-dir", storage, "--log-level", "warn", "--slot", slot, "--publication", slot)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "SHAPELOG_ACCESS_KEY="+benchKey)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return cmd, client.WaitHealthy(ctx, fmt.Sprintf("http://127.0.0.1:%d", port))
}

func (h *harness) stopEngine() {
	if h.engine == nil {
		return
	}
	_ = h.engine.Process.Signal(os.Interrupt)
	_ = h.engine.Wait()
	h.engine = nil
}

// waitEngineCaughtUp waits until the engine has confirmed (made durable)
// everything committed so far on its slot.
func (h *harness) waitEngineCaughtUp(ctx context.Context, slot string) error {
	return waitCaughtUp(ctx, h.conn, slot)
}

// waitCaughtUp waits until slot, on conn's server, has confirmed everything
// committed so far.
func waitCaughtUp(ctx context.Context, conn *pgx.Conn, slot string) error {
	var target string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&target); err != nil {
		return err
	}
	for {
		var done bool
		err := conn.QueryRow(ctx, "SELECT confirmed_flush_lsn >= $1::pg_lsn FROM pg_replication_slots WHERE slot_name = $2", target, slot).Scan(&done)
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// settle prepares a measured phase: what earlier phases wrote is vacuumed
// (autovacuum would otherwise run during it), checkpointed, and replicated
// by the engine, and the engine is idle (its log store's compactions of
// what it replicated are done).
func (h *harness) settle(ctx context.Context) error {
	for _, sql := range []string{"VACUUM (ANALYZE)", "CHECKPOINT"} {
		if _, err := h.conn.Exec(ctx, sql); err != nil {
			return err
		}
	}
	if err := h.waitEngineCaughtUp(ctx, "bench"); err != nil {
		return err
	}
	return waitIdle(ctx, h.engine.Process.Pid)
}

// waitIdle waits (up to a minute) until process pid uses less than 5% of a
// core over half a second.
func waitIdle(ctx context.Context, pid int) error {
	cpu := func() (int64, error) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, err
		}
		// Fields after the command name (which may hold spaces): utime and
		// stime are the 12th and 13th.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		return u + s, nil
	}
	last, err := cpu()
	for deadline := time.Now().Add(time.Minute); err == nil && time.Now().Before(deadline); {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
		var now int64
		if now, err = cpu(); err == nil && now-last < 3 { // clock ticks of 10 ms
			return nil
		}
		last = now
	}
	return err
}

// peakRSS is the engine's peak resident set size in MiB.
func (h *harness) peakRSS() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", h.engine.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// startCluster starts a durable throwaway PostgreSQL for the benchmarks
// with sharedBuffers (e.g. "1GB").
func startCluster(sharedBuffers string) (*pgtest.Cluster, error) {
	return pgtest.Start(pgtest.Options{Durable: true, Settings: []string{"shared_buffers = " + sharedBuffers, "max_wal_size = 8GB"}})
}

// createTable makes a firenibble-shaped table (16 mixed columns, ~280 B/row).
func (h *harness) createTable(ctx context.Context, name string, rows int) error {
	fmt.Fprintf(os.Stderr, "loading %d rows into %s…\n", rows, name)
	_, err := h.conn.Exec(ctx, fmt.Sprintf(`
		DROP TABLE IF EXISTS %[1]s;
		CREATE TABLE %[1]s (
			f0 bigint PRIMARY KEY, f1 bigint, f2 bigint, f3 int,
			f4 float8, f5 float8, f6 float8, f7 float8,
			f8 varchar(32), f9 varchar(32), f10 varchar(32), f11 varchar(32), f12 varchar(32),
			f13 date, f14 date, f15 date);
		INSERT INTO %[1]s SELECT g, g * 7, g %% 1000, (g %% 100000)::int,
			random(), random() * 1000, g / 3.0, -g / 7.0,
			md5(g::text), md5((g + 1)::text), md5((g + 2)::text), md5((g + 3)::text), md5((g + 4)::text),
			date '2020-01-01' + (g %% 1000), date '2021-01-01' + (g %% 500), date '2022-01-01' + (g %% 250)
		FROM generate_series(1, %[2]d) g`, name, rows))
	if err != nil {
		return err
	}
	_, err = h.conn.Exec(ctx, "VACUUM (FREEZE, ANALYZE) "+name)
	return err
}

type countingWriter struct{ n atomic.Int64 }

func (w *countingWriter) Write(p []byte) (int, error) { w.n.Add(int64(len(p))); return len(p), nil }

// copyBaseline times COPY (SELECT * FROM t) TO STDOUT.
func (h *harness) copyBaseline(ctx context.Context, table string) (time.Duration, int64, error) {
	return h.copyQuery(ctx, "SELECT * FROM "+table)
}

// copyQuery times COPY (query) TO STDOUT.
func (h *harness) copyQuery(ctx context.Context, query string) (time.Duration, int64, error) {
	w := &countingWriter{}
	start := time.Now()
	_, err := h.conn.PgConn().CopyTo(ctx, w, "COPY ("+query+") TO STDOUT")
	return time.Since(start), w.n.Load(), err
}

// readSnapshot walks list_snapshot over one table.
func (h *harness) readSnapshot(ctx context.Context, table string) (docs int, bytes int64, took time.Duration, err error) {
	start := time.Now()
	req := client.SnapshotRequest{TableName: table}
	count := func(doc []byte) error {
		docs++
		bytes += int64(len(doc))
		return nil
	}
	for {
		page, err := h.api.ListSnapshotEach(ctx, req, count)
		if err != nil {
			return 0, 0, 0, err
		}
		if !page.HasMore {
			return docs, bytes, time.Since(start), nil
		}
		req.Snapshot, req.Cursor = &page.Snapshot, page.Cursor
	}
}

func rate(n int, d time.Duration) string {
	return fmt.Sprintf("%.0f", float64(n)/d.Seconds())
}

func mbps(b int64, d time.Duration) float64 { return float64(b) / (1 << 20) / d.Seconds() }

func (h *harness) snapshotBench(ctx context.Context, rows int, add func(string, ...any)) error {
	if err := h.createTable(ctx, "firenibble", rows); err != nil {
		return err
	}
	copyTook, copyBytes, err := h.copyBaseline(ctx, "firenibble")
	if err != nil {
		return err
	}
	if err := h.startEngine(); err != nil {
		return err
	}
	docs, bytes, took, err := h.readSnapshot(ctx, "firenibble")
	if err != nil {
		return err
	}
	if docs != rows {
		return fmt.Errorf("snapshot returned %d docs, want %d", docs, rows)
	}
	// Snapshots page in primary-key order (an index scan) so that a page
	// can be continued after any restart; this is what that order costs
	// PostgreSQL itself.
	orderedTook, _, err := h.copyQuery(ctx, "SELECT * FROM firenibble ORDER BY f0")
	if err != nil {
		return err
	}
	copyRate, ourRate := float64(rows)/copyTook.Seconds(), float64(rows)/took.Seconds()
	add("| snapshot of %d rows × 16 cols: rows/s | %s (list_snapshot) | %s (COPY TO STDOUT) | %.0f%% |", rows, rate(rows, took), rate(rows, copyTook), 100*ourRate/copyRate)
	add("| key order's cost to PostgreSQL: COPY … ORDER BY key, rows/s | | %s (vs %s unordered) | %.0f%% |", rate(rows, orderedTook), rate(rows, copyTook), 100*copyTook.Seconds()/orderedTook.Seconds())
	add("| snapshot: MB/s (JSON vs COPY text) | %.1f | %.1f | |", mbps(bytes, took), mbps(copyBytes, copyTook))
	add("| engine peak RSS after %d-row snapshot | %.0f MiB | | |", rows, h.peakRSS())
	return nil
}

// plainClient drains a slot with pglogrepl and counts inserts, like the
// simplest logical-replication consumer.
func (h *harness) plainClient(ctx context.Context, slot string, want int) (time.Duration, error) {
	cfg, err := pgconn.ParseConfig(h.dbURL)
	if err != nil {
		return 0, err
	}
	cfg.RuntimeParams["replication"] = "database"
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	start := time.Now()
	if err := pglogrepl.StartReplication(ctx, conn, slot, 0, pglogrepl.StartReplicationOptions{PluginArgs: []string{"proto_version '1'", "publication_names 'bench_plain'"}}); err != nil {
		return 0, err
	}
	got := 0
	for got < want {
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			return 0, err
		}
		cd, ok := msg.(*pgproto3.CopyData)
		if !ok || cd.Data[0] != pglogrepl.XLogDataByteID {
			continue
		}
		xld, err := pglogrepl.ParseXLogData(cd.Data[1:])
		if err != nil {
			return 0, err
		}
		m, err := pglogrepl.Parse(xld.WALData)
		if err != nil {
			return 0, err
		}
		if _, ok := m.(*pglogrepl.InsertMessage); ok {
			got++
		}
	}
	return time.Since(start), nil
}

func (h *harness) changesBench(ctx context.Context, n int, add func(string, ...any)) error {
	if _, err := h.conn.Exec(ctx, `CREATE TABLE changes (LIKE firenibble INCLUDING ALL)`); err != nil {
		return err
	}
	// The engine publishes it and snapshots it (empty) so the cursor is set.
	page, err := h.api.ListSnapshot(ctx, client.SnapshotRequest{TableName: "changes"})
	if err != nil {
		return err
	}
	cursor := page.Snapshot
	if _, err := h.conn.Exec(ctx, `CREATE PUBLICATION bench_plain FOR TABLE changes`); err != nil {
		return err
	}
	if _, err := h.conn.Exec(ctx, `SELECT pg_create_logical_replication_slot('bench_plain', 'pgoutput')`); err != nil {
		return err
	}
	// Both consumers drain the same WAL, written while neither reads.
	h.stopEngine()
	fmt.Fprintf(os.Stderr, "writing %d changes in transactions of 100 rows…\n", n)
	start := time.Now()
	// Simple protocol: COMMIT inside DO needs a top-level statement.
	if _, err := h.conn.PgConn().Exec(ctx, fmt.Sprintf(`DO $$ BEGIN FOR i IN 0..%d LOOP
		INSERT INTO changes SELECT * FROM firenibble WHERE f0 > i * 100 AND f0 <= (i + 1) * 100; COMMIT; END LOOP; END $$`, n/100-1)).ReadAll(); err != nil {
		return err
	}
	writeTook := time.Since(start)
	plainTook, err := h.plainClient(ctx, "bench_plain", n)
	if err != nil {
		return err
	}
	// The walsender may outlive the client's connection by a moment.
	for i := 0; ; i++ {
		_, err := h.conn.Exec(ctx, `SELECT pg_drop_replication_slot('bench_plain')`)
		if err == nil {
			break
		}
		if i == 100 {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
	start = time.Now()
	if err := h.startEngine(); err != nil {
		return err
	}
	seen := 0
	for seen < n {
		page, err := h.api.DocumentDeltas(ctx, client.DeltasRequest{Cursor: cursor, TableName: "changes", Limit: 10000})
		if err != nil {
			return err
		}
		seen += len(page.Values)
		cursor = page.Cursor
		if !page.HasMore && seen < n {
			time.Sleep(5 * time.Millisecond)
		}
	}
	took := time.Since(start)
	ours, plain := float64(n)/took.Seconds(), float64(n)/plainTook.Seconds()
	add("| %d changes (txns of 100) drained: changes/s | %s (commit → document_deltas, incl. engine start) | %s (pglogrepl client) | %.0f%% |", n, rate(n, took), rate(n, plainTook), 100*ours/plain)
	add("| (PostgreSQL wrote them at) | | %s changes/s | |", rate(n, writeTook))
	add("| engine peak RSS after the changes | %.0f MiB | | |", h.peakRSS())
	return nil
}

func (h *harness) latencyBench(ctx context.Context, samples int, add func(string, ...any)) error {
	if _, err := h.conn.Exec(ctx, `CREATE TABLE pings (id int PRIMARY KEY, at timestamptz)`); err != nil {
		return err
	}
	page, err := h.api.ListSnapshot(ctx, client.SnapshotRequest{TableName: "pings"})
	if err != nil {
		return err
	}
	cursor := page.Snapshot
	var lat []time.Duration
	for i := 0; i < samples; i++ {
		if _, err := h.conn.Exec(ctx, `INSERT INTO pings VALUES ($1, now())`, i); err != nil {
			return err
		}
		committed := time.Now()
		for {
			page, err := h.api.DocumentDeltas(ctx, client.DeltasRequest{Cursor: cursor, TableName: "pings"})
			if err != nil {
				return err
			}
			cursor = page.Cursor
			if len(page.Values) > 0 {
				lat = append(lat, time.Since(committed))
				break
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p := func(q float64) string { return lat[int(q*float64(len(lat)-1))].Round(10 * time.Microsecond).String() }
	add("| commit → visible in document_deltas, %d single-row commits | p50 %s, p99 %s | | |", samples, p(0.5), p(0.99))
	return nil
}

func (h *harness) rssBench(ctx context.Context, rows int, add func(string, ...any)) error {
	if err := h.createTable(ctx, "big", rows); err != nil {
		return err
	}
	// The running engine first replicates the load (else its walsender,
	// still decoding it, holds the slot from the fresh engine).
	if err := h.settle(ctx); err != nil {
		return err
	}
	// A fresh engine process, so its peak RSS is this snapshot's alone.
	h.stopEngine()
	if err := h.startEngine(); err != nil {
		return err
	}
	// The application keeps writing: 1,000 updates a second, each of which
	// the snapshot's pages turn back. Meanwhile the snapshot connections'
	// backend_xmin is sampled: it must be held only while a page is read.
	wctx, stop := context.WithCancel(ctx)
	updates := make(chan int64, 1)
	go func() { updates <- h.updateLoad(wctx, "big", rows, 1000) }()
	xmins := make(chan xminSamples, 1)
	go func() { xmins <- h.sampleSnapshotXmin(wctx) }()
	docs, bytes, took, err := h.readSnapshot(ctx, "big")
	stop()
	n, x := <-updates, <-xmins
	if err != nil {
		return err
	}
	if docs != rows {
		return fmt.Errorf("snapshot returned %d docs, want %d", docs, rows)
	}
	add("| snapshot of %d rows while %.0f updates/s run: rows/s | %s (%.1f MB/s) | | |", docs, float64(n)/took.Seconds(), rate(docs, took), mbps(bytes, took))
	add("| engine peak RSS after %d-row snapshot under updates | %.0f MiB | | |", rows, h.peakRSS())
	add("| snapshot connections: samples with backend_xmin held between pages | %d of %d idle samples | | |", x.heldIdle, x.idle)
	add("| snapshot connections: oldest backend_xmin while reading a page | %d xids old | | |", x.maxActiveAge)
	return nil
}

// updateLoad updates random rows of table (keys 1..rows) at perSecond,
// over a few connections (one commit waits for its WAL flush), until ctx
// ends, and returns how many it made.
func (h *harness) updateLoad(ctx context.Context, table string, rows, perSecond int) int64 {
	const conns = 2
	var n atomic.Int64
	var wg sync.WaitGroup
	for c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.Connect(ctx, h.dbURL)
			if err != nil {
				return
			}
			defer conn.Close(context.Background())
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			rng := rand.New(rand.NewSource(int64(c)))
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				for range perSecond / 100 / conns {
					if _, err := conn.Exec(ctx, "UPDATE "+table+" SET f1 = f1 + 1 WHERE f0 = $1", rng.Intn(rows)+1); err != nil {
						return
					}
					n.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return n.Load()
}

// xminSamples is what sampleSnapshotXmin saw of the snapshot connections.
type xminSamples struct {
	idle, heldIdle int   // samples of idle snapshot connections, and of those holding an xmin
	maxActiveAge   int64 // oldest backend_xmin of a connection reading a page, in xids
}

// sampleSnapshotXmin watches the engine's snapshot connections every 20 ms
// until ctx ends.
func (h *harness) sampleSnapshotXmin(ctx context.Context) xminSamples {
	var x xminSamples
	conn, err := pgx.Connect(ctx, h.dbURL)
	if err != nil {
		return x
	}
	defer conn.Close(context.Background())
	for ctx.Err() == nil {
		rows, err := conn.Query(ctx, `SELECT state, backend_xmin IS NOT NULL, coalesce(age(backend_xmin), 0)
			FROM pg_stat_activity WHERE application_name LIKE 'shapelog snapshot%'`)
		if err != nil {
			return x
		}
		for rows.Next() {
			var state string
			var held bool
			var age int64
			if rows.Scan(&state, &held, &age) != nil {
				continue
			}
			if state == "active" {
				x.maxActiveAge = max(x.maxActiveAge, age)
				continue
			}
			x.idle++
			if held {
				x.heldIdle++
			}
		}
		rows.Close()
		time.Sleep(20 * time.Millisecond)
	}
	return x
}
