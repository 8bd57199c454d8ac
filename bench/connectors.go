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
	for _, db := range []string{"bench_b", "bench_dump", "bench_warm"} {
		if _, err := adminB.Exec(ctx, "CREATE DATABASE "+db); err != nil {
			return err
		}
	}
	// A new server's first load of this size also pays for touching its
	// shared buffers and creating its WAL files; whichever of the two loads
	// ran first would carry that. One untimed load warms it for both.
	fmt.Fprintln(os.Stderr, "warming PostgreSQL B…")
	if _, err := h.dumpRestore(ctx, "firenibble", clusterB.URL("bench_warm")); err != nil {
		return err
	}
	for _, sql := range []string{"DROP DATABASE bench_warm", "CHECKPOINT"} {
		if _, err := adminB.Exec(ctx, sql); err != nil {
			return err
		}
	}
	urlB := clusterB.URL("bench_b")
	storageB := filepath.Join(dir, "engine-b")
	portB, err := pgtest.FreePort()
	if err != nil {
		return err
	}
	var engineB *exec.Cmd
	stopEngineB := func() {
		if engineB != nil {
			_ = engineB.Process.Signal(os.Interrupt)
			_ = engineB.Wait()
			engineB = nil
		}
	}
	defer stopEngineB()
	startEngineB := func() (err error) {
		engineB, err = startEngineProcess(h.bin, urlB, portB, storageB, "bench_b")
		return err
	}
	if err := startEngineB(); err != nil {
		return err
	}
	destConfig, err := file("destination.json", map[string]any{"deployment_url": fmt.Sprintf("http://127.0.0.1:%d", portB), "access_key": benchKey})
	if err != nil {
		return err
	}
	syncCatalog, err := file("sync.json", protocol.ConfiguredCatalog{Streams: []protocol.ConfiguredStream{stream("incremental", "append_dedup")}})
	if err != nil {
		return err
	}
	if err := h.settle(ctx); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "end-to-end full load…")
	sync := pipeline.Sync{SourceBin: "bin/source-shapelog", DestinationBin: "bin/destination-shapelog",
		SourceConfig: sourceConfig, DestinationConfig: destConfig, Catalog: syncCatalog, Stderr: os.Stderr}
	full, err := sync.Run(ctx)
	if err != nil {
		return err
	}
	connB, err := pgx.Connect(ctx, urlB)
	if err != nil {
		return err
	}
	defer connB.Close(ctx)
	var n int
	if err := connB.QueryRow(ctx, "SELECT count(*) FROM firenibble").Scan(&n); err != nil || n != rows {
		return fmt.Errorf("database B has %d rows (%v), want %d", n, err, rows)
	}

	// The baseline runs without engine B: its slot would decode the dump's
	// WAL too (logical decoding reads the whole server's), a cost pg_dump
	// and psql alone do not have.
	if err := waitCaughtUp(ctx, connB, "bench_b"); err != nil {
		return err
	}
	stopEngineB()
	if _, err := adminB.Exec(ctx, "CHECKPOINT"); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "pg_dump | psql…")
	dumpTook, err := h.dumpRestore(ctx, "firenibble", clusterB.URL("bench_dump"))
	if err != nil {
		return err
	}
	add("| end to end: %d rows source → engine → destination → engine → PostgreSQL (append_dedup), rows/s | %s | %s (pg_dump --data-only \\| psql) | %.2f× |",
		rows, rate(rows, full.Took), rate(rows, dumpTook), dumpTook.Seconds()/full.Took.Seconds())
	add("| connector peak RSS, source / destination | %.0f MiB / %.0f MiB | | |", full.SourceRSS, full.DestinationRSS)
	add("| connector CPU for the full load, source / destination | %.1f s / %.1f s | | |", full.SourceCPU.Seconds(), full.DestinationCPU.Seconds())
	if err := startEngineB(); err != nil {
		return err
	}
	if err := waitCaughtUp(ctx, connB, "bench_b"); err != nil {
		return err
	}
	if err := waitIdle(ctx, engineB.Process.Pid); err != nil {
		return err
	}

	// Incremental: changes committed in A, synced from the saved states.
	if _, err := h.conn.Exec(ctx, fmt.Sprintf(`UPDATE firenibble SET f1 = f1 + 1 WHERE f0 <= %d`, changes)); err != nil {
		return err
	}
	if err := h.waitEngineCaughtUp(ctx, "bench"); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "incremental sync of %d changes…\n", changes)
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
	add("| incremental sync of %d updates, end to end (commit → database B), rows/s | %s | | |", changes, rate(changes, inc.Took))
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
func (h *harness) dumpRestore(ctx context.Context, table, target string) (time.Duration, error) {
	bin := h.cluster.BinDir
	schema := exec.CommandContext(ctx, "sh", "-c", fmt.Sprintf("%q --schema-only -t %s %q | %q -q -v ON_ERROR_STOP=1 %q",
		filepath.Join(bin, "pg_dump"), table, h.dbURL, filepath.Join(bin, "psql"), target))
	if out, err := schema.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("pg_dump --schema-only: %v: %s", err, out)
	}
	data := exec.CommandContext(ctx, "sh", "-c", fmt.Sprintf("%q --data-only -t %s %q | %q -q -v ON_ERROR_STOP=1 %q",
		filepath.Join(bin, "pg_dump"), table, h.dbURL, filepath.Join(bin, "psql"), target))
	start := time.Now()
	if out, err := data.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("pg_dump --data-only | psql: %v: %s", err, out)
	}
	return time.Since(start), nil
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
