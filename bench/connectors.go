package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shapelog/shapelog/internal/pgtest"
	"github.com/shapelog/shapelog/internal/pipeline"
	"github.com/shapelog/shapelog/protocol"
)

// connectorsBench measures the connectors on the firenibble table:
//   - source: rows/s from `source read` to its stdout vs COPY TO STDOUT;
//   - end to end: source | destination into a second database through a
//     second engine vs pg_dump --data-only | psql between the same two;
//   - incremental: n changes synced end to end.
func (h *harness) connectorsBench(ctx context.Context, rows, changes int, add func(string, ...any)) error {
	dir, err := os.MkdirTemp("", "shapelog-bench-connectors-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	file := func(name string, v any) (string, error) {
		b, err := json.Marshal(v)
		if err != nil {
			return "", err
		}
		p := filepath.Join(dir, name)
		return p, os.WriteFile(p, b, 0o600)
	}
	engineA := fmt.Sprintf("http://127.0.0.1:%d", h.port)
	sourceConfig, err := file("source.json", map[string]any{"deployment_url": engineA, "access_key": benchKey, "page_size": 10000, "tables": []string{"firenibble"}})
	if err != nil {
		return err
	}
	stream := func(mode, dest string) protocol.ConfiguredStream {
		return protocol.ConfiguredStream{
			Stream:   protocol.Stream{Name: "firenibble", Namespace: "public", JSONSchema: h.discoverSchema(ctx, sourceConfig), SupportedSyncModes: []string{"full_refresh", "incremental"}},
			SyncMode: mode, DestinationSyncMode: dest, PrimaryKey: [][]string{{"f0"}},
		}
	}
	fullCatalog, err := file("full.json", protocol.ConfiguredCatalog{Streams: []protocol.ConfiguredStream{stream("full_refresh", "append")}})
	if err != nil {
		return err
	}

	// Source alone, to stdout.
	fmt.Fprintln(os.Stderr, "source read → stdout…")
	src := exec.CommandContext(ctx, "bin/source-shapelog", "read", "--config", sourceConfig, "--catalog", fullCatalog)
	src.Stderr = os.Stderr
	stdout, err := src.StdoutPipe()
	if err != nil {
		return err
	}
	start := time.Now()
	if err := src.Start(); err != nil {
		return err
	}
	rss := pipeline.WatchRSS(src.Process)
	records, err := countRecords(stdout)
	sourceRSS := rss.Stop()[0]
	if err := errors.Join(err, src.Wait()); err != nil {
		return fmt.Errorf("source read: %w", err)
	}
	sourceTook := time.Since(start)
	if records != rows {
		return fmt.Errorf("source sent %d records, want %d", records, rows)
	}
	copyTook, _, err := h.copyBaseline(ctx, "firenibble")
	if err != nil {
		return err
	}
	add("| source: %d rows to stdout (RECORD lines), rows/s | %s | %s (COPY TO STDOUT) | %.0f%% |", rows, rate(rows, sourceTook), rate(rows, copyTook), 100*copyTook.Seconds()/sourceTook.Seconds())
	add("| source peak RSS | %.0f MiB | | |", sourceRSS)

	// End to end into database B, on a second PostgreSQL server as in a
	// real deployment (a server's walsenders decode all of its WAL, so one
	// server for both would have engine A's slot decode B's writes too),
	// through engine B. B has the default shared_buffers: a backend faults
	// in every page of shared memory it touches once, and engine B's one
	// long-lived connection runs a hundred COPYs whose buffer rings together
	// cover all of them, where psql's one COPY reuses a single ring; with
	// 1 GB that first touch alone cost engine B's backend ~1.4 s of CPU.
	fmt.Fprintln(os.Stderr, "starting PostgreSQL B…")
	clusterB, err := startCluster("128MB")
	if err != nil {
		return err
	}
	defer clusterB.Stop()
	adminB, err := pgx.Connect(ctx, clusterB.URL("postgres"))
	if err != nil {
		return err
	}
	defer adminB.Close(ctx)
	for _, db := range []string{"bench_b", "bench_stdio", "bench_dump", "bench_warm"} {
		if _, err := adminB.Exec(ctx, "CREATE DATABASE "+db); err != nil {
			return err
		}
	}
	// A new server's first load of this size also pays for touching its
	// shared buffers and creating its WAL files; whichever of the loads
	// ran first would carry that. One untimed load warms it for all.
	fmt.Fprintln(os.Stderr, "warming PostgreSQL B…")
	if _, _, err := h.dumpRestore(ctx, "firenibble", clusterB.URL("bench_warm")); err != nil {
		return err
	}
	for _, sql := range []string{"DROP DATABASE bench_warm", "CHECKPOINT"} {
		if _, err := adminB.Exec(ctx, sql); err != nil {
			return err
		}
	}
	// Each load goes into its own database through its own engine B; only
	// the engine of the load running is up (a stopped engine's slot does
	// not decode, and every walsender of a server decodes all its WAL).
	type engineB struct {
		db   string
		port int
		cmd  *exec.Cmd
	}
	stop := func(e *engineB) {
		if e.cmd != nil {
			_ = e.cmd.Process.Signal(os.Interrupt)
			_ = e.cmd.Wait()
			e.cmd = nil
		}
	}
	startB := func(e *engineB) (err error) {
		e.cmd, err = startEngineProcess(h.bin, clusterB.URL(e.db), e.port, filepath.Join(dir, "engine-"+e.db), e.db)
		return err
	}
	newEngine := func(db string) (*engineB, error) {
		port, err := pgtest.FreePort()
		return &engineB{db: db, port: port}, err
	}
	speedB, err := newEngine("bench_b")
	if err != nil {
		return err
	}
	stdioB, err := newEngine("bench_stdio")
	if err != nil {
		return err
	}
	defer stop(speedB)
	defer stop(stdioB)
	syncCatalog, err := file("sync.json", protocol.ConfiguredCatalog{Streams: []protocol.ConfiguredStream{stream("incremental", "append_dedup")}})
	if err != nil {
		return err
	}
	// load runs a full load into e's database with the data channel speed
	// (nil: stdio) and reports the sync, the CPU time of each process, and
	// leaves e stopped, caught up.
	load := func(e *engineB, speed *pipeline.Speed) (*pipeline.Result, []time.Duration, pipeline.Sync, error) {
		var sync pipeline.Sync
		if err := startB(e); err != nil {
			return nil, nil, sync, err
		}
		destConfig, err := file("destination-"+e.db+".json", map[string]any{"deployment_url": fmt.Sprintf("http://127.0.0.1:%d", e.port), "access_key": benchKey})
		if err != nil {
			return nil, nil, sync, err
		}
		if err := h.settle(ctx); err != nil {
			return nil, nil, sync, err
		}
		mode := "stdio"
		if speed != nil {
			mode = fmt.Sprintf("speed mode (%s on %d sockets)", speed.Format, speed.Sockets)
		}
		fmt.Fprintf(os.Stderr, "end-to-end full load, %s…\n", mode)
		sync = pipeline.Sync{SourceBin: "bin/source-shapelog", DestinationBin: "bin/destination-shapelog",
			SourceConfig: sourceConfig, DestinationConfig: destConfig, Catalog: syncCatalog, Stderr: os.Stderr, Speed: speed}
		engine := e.cmd.Process.Pid
		meter := newCPUMeter(h.cluster.PID, clusterB.PID, func() int { return h.engine.Process.Pid }, func() int { return engine })
		res, err := sync.Run(ctx)
		if err != nil {
			return nil, nil, sync, err
		}
		conn, err := pgx.Connect(ctx, clusterB.URL(e.db))
		if err != nil {
			return nil, nil, sync, err
		}
		defer conn.Close(ctx)
		if err := waitCaughtUp(ctx, conn, e.db); err != nil {
			return nil, nil, sync, err
		}
		// Engine B replicates database B, the load included: that is part
		// of the load's cost, measured once it has caught up. Exited
		// backends count once the postmaster has reaped them. The count
		// that checks the load comes after: its first read of the new
		// pages (hint bits) is not the load's, and pg_dump | psql's
		// figure has no such read either.
		time.Sleep(time.Second)
		cpu := append(meter.since(), res.SourceCPU, res.DestinationCPU)
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM firenibble").Scan(&n); err != nil || n != rows {
			return nil, nil, sync, fmt.Errorf("database %s has %d rows (%v), want %d", e.db, n, err, rows)
		}
		stop(e)
		_, err = adminB.Exec(ctx, "CHECKPOINT")
		return res, cpu, sync, err
	}
	speed := &pipeline.Speed{Sockets: 2, Format: "PROTOBUF"}
	full, fullCPU, sync, err := load(speedB, speed)
	if err != nil {
		return err
	}
	stdio, stdioCPU, _, err := load(stdioB, nil)
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "pg_dump | psql…")
	meter := newCPUMeter(h.cluster.PID, clusterB.PID)
	dumpTook, dumpCPU, err := h.dumpRestore(ctx, "firenibble", clusterB.URL("bench_dump"))
	if err != nil {
		return err
	}
	time.Sleep(time.Second)
	dumpServers := meter.since()
	add("| end to end, speed mode (protobuf on %d Unix sockets): %d rows source → engine → destination → engine → PostgreSQL (append_dedup), rows/s | %s | %s (pg_dump --data-only \\| psql) | %.2f× |",
		speed.Sockets, rows, rate(rows, full.Took), rate(rows, dumpTook), dumpTook.Seconds()/full.Took.Seconds())
	add("| end to end, stdio (JSON lines), the same rows/s | %s | %s | %.2f× |", rate(rows, stdio.Took), rate(rows, dumpTook), dumpTook.Seconds()/stdio.Took.Seconds())
	perM := func(d time.Duration) float64 { return d.Seconds() * 1e6 / float64(rows) }
	cpuRow := func(c []time.Duration) string {
		var total time.Duration
		for _, d := range c {
			total += d
		}
		return fmt.Sprintf("%.1f / %.1f / %.1f / %.1f / %.1f / %.1f = **%.1f**", perM(c[0]), perM(c[1]), perM(c[2]), perM(c[3]), perM(c[4]), perM(c[5]), perM(total))
	}
	add("| CPU-s per million rows, speed mode: PostgreSQL A / PostgreSQL B / engine A / engine B / source / destination | %s | %.1f / %.1f / pg_dump+psql %.1f = **%.1f** | |",
		cpuRow(fullCPU), perM(dumpServers[0]), perM(dumpServers[1]), perM(dumpCPU), perM(dumpServers[0]+dumpServers[1]+dumpCPU))
	add("| CPU-s per million rows, stdio: the same | %s | | |", cpuRow(stdioCPU))
	add("| connector peak RSS, source / destination, speed mode / stdio | %.0f / %.0f MiB | %.0f / %.0f MiB | |", full.SourceRSS, full.DestinationRSS, stdio.SourceRSS, stdio.DestinationRSS)
	connB, err := pgx.Connect(ctx, clusterB.URL("bench_b"))
	if err != nil {
		return err
	}
	defer connB.Close(ctx)
	engineBPid := func() int { return speedB.cmd.Process.Pid }
	if err := startB(speedB); err != nil {
		return err
	}
	if err := waitCaughtUp(ctx, connB, "bench_b"); err != nil {
		return err
	}
	if err := waitIdle(ctx, engineBPid()); err != nil {
		return err
	}

	// Incremental: changes committed in A, synced from the saved states.
	if _, err := h.conn.Exec(ctx, fmt.Sprintf(`UPDATE firenibble SET f1 = f1 + 1 WHERE f0 <= %d`, changes)); err != nil {
		return err
	}
	if err := h.waitEngineCaughtUp(ctx, "bench"); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "incremental sync of %d changes, speed mode…\n", changes)
	sync.States = full.States
	inc, err := sync.Run(ctx)
	if err != nil {
		return err
	}
	var sumA, sumB int64
	if err := h.conn.QueryRow(ctx, "SELECT sum(f1) FROM firenibble").Scan(&sumA); err != nil {
		return err
	}
	if err := connB.QueryRow(ctx, "SELECT sum(f1) FROM firenibble").Scan(&sumB); err != nil || sumA != sumB {
		return fmt.Errorf("after the incremental sync sum(f1) is %d in B (%v), %d in A", sumB, err, sumA)
	}
	add("| incremental sync of %d updates, end to end in speed mode (commit → database B), rows/s | %s | | |", changes, rate(changes, inc.Took))
	return nil
}

// discoverSchema returns firenibble's stream schema from `source discover`.
func (h *harness) discoverSchema(ctx context.Context, config string) json.RawMessage {
	out, err := exec.CommandContext(ctx, "bin/source-shapelog", "discover", "--config", config).Output()
	if err != nil {
		return json.RawMessage(`{}`)
	}
	for _, line := range bytes.Split(out, []byte("\n")) {
		var m protocol.Message
		if json.Unmarshal(line, &m) == nil && m.Catalog != nil {
			for _, s := range m.Catalog.Streams {
				if s.Name == "firenibble" {
					return s.JSONSchema
				}
			}
		}
	}
	return json.RawMessage(`{}`)
}

// dumpRestore times pg_dump --data-only -t table | psql into target (the
// table's definition is restored first, untimed).
func (h *harness) dumpRestore(ctx context.Context, table, target string) (time.Duration, time.Duration, error) {
	bin := h.cluster.BinDir
	schema := exec.CommandContext(ctx, "sh", "-c", fmt.Sprintf("%q --schema-only -t %s %q | %q -q -v ON_ERROR_STOP=1 %q",
		filepath.Join(bin, "pg_dump"), table, h.dbURL, filepath.Join(bin, "psql"), target))
	if out, err := schema.CombinedOutput(); err != nil {
		return 0, 0, fmt.Errorf("pg_dump --schema-only: %v: %s", err, out)
	}
	data := exec.CommandContext(ctx, "sh", "-c", fmt.Sprintf("%q --data-only -t %s %q | %q -q -v ON_ERROR_STOP=1 %q",
		filepath.Join(bin, "pg_dump"), table, h.dbURL, filepath.Join(bin, "psql"), target))
	start := time.Now()
	if out, err := data.CombinedOutput(); err != nil {
		return 0, 0, fmt.Errorf("pg_dump --data-only | psql: %v: %s", err, out)
	}
	// The shell's rusage holds pg_dump's and psql's, which it waited for.
	return time.Since(start), data.ProcessState.UserTime() + data.ProcessState.SystemTime(), nil
}

// countRecords counts the RECORD lines of a connector's output.
func countRecords(r io.Reader) (int, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	n, lineStart := 0, true
	for {
		line, err := br.ReadSlice('\n')
		if lineStart && bytes.HasPrefix(line, []byte(`{"type":"RECORD"`)) {
			n++
		}
		lineStart = err == nil
		if err == io.EOF {
			return n, nil
		}
		if err != nil && err != bufio.ErrBufferFull {
			return n, err
		}
	}
}
