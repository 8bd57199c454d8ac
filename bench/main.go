// Command bench measures the engine against PostgreSQL's own tools on the
// same machine in the same run, and prints a Markdown table:
//
//   - snapshot: list_snapshot over N rows of a 16-column table vs
//     COPY (SELECT …) TO STDOUT;
//   - changes: M committed changes drained through document_deltas vs a plain
//     logical-replication client (pglogrepl, pgoutput) draining the same WAL;
//   - latency: commit to visible in document_deltas, p50/p99;
//   - import: import_airbyte_records (append, dedup) vs COPY FROM STDIN;
//   - connectors: source read to stdout vs COPY TO STDOUT, the end-to-end
//     full load source | destination vs pg_dump --data-only | psql, and an
//     incremental sync of changes;
//   - engine RSS (peak) after each phase, at N rows and optionally more.
//
// Usage: go run ./bench [-rows 1000000] [-changes 200000] [-rss-rows 5000000]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"time"
)

func main() {
	rows := flag.Int("rows", 1_000_000, "rows in the snapshot table")
	changes := flag.Int("changes", 200_000, "changes for the replication throughput test")
	rssRows := flag.Int("rss-rows", 0, "also snapshot a table this large to show engine RSS (0 = skip)")
	latencySamples := flag.Int("latency-samples", 300, "commits timed for commit-to-visible latency")
	importRows := flag.Int("import-rows", 1_000_000, "records for the import benchmark (at most -rows)")
	importBatch := flag.Int("import-batch", 10_000, "records per import request")
	syncChanges := flag.Int("sync-changes", 100_000, "changes for the incremental end-to-end sync")
	liveClients := flag.Int("live-clients", 10_000, "concurrent live clients on one shape")
	liveWrites := flag.Int("live-writes", 10, "writes (1 s apart) the live clients wait for")
	only := flag.String("only", "", "run one part: snapshot, changes, latency, shapes, sse, import, connectors, rss (default all)")
	bin := flag.String("engine", "bin/shapelog", "engine binary")
	flag.Parse()
	// The client side is tuned like the engine: few GCs, bounded memory.
	debug.SetGCPercent(400)
	debug.SetMemoryLimit(192 << 20)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	h, err := newHarness(ctx, *bin)
	if err != nil {
		fail(err)
	}
	// Failures still stop the engine and remove the cluster.
	fail := func(err error) {
		h.Close()
		fail(err)
	}
	defer h.Close()
	var report []string
	add := func(format string, args ...any) {
		line := fmt.Sprintf(format, args...)
		report = append(report, line)
		fmt.Fprintln(os.Stderr, "  "+line)
	}
	add("| measurement | shapelog | PostgreSQL baseline | ratio |")
	add("|---|---|---|---|")

	want := func(part string) bool { return *only == "" || *only == part }
	// Every part needs the snapshot table and a running engine.
	if err := h.snapshotBench(ctx, *rows, add); err != nil {
		fail(err)
	}
	if want("changes") {
		if err := h.changesBench(ctx, *changes, add); err != nil {
			fail(err)
		}
	}
	if want("latency") {
		if err := h.latencyBench(ctx, *latencySamples, add); err != nil {
			fail(err)
		}
	}
	if want("shapes") {
		if err := h.shapesBench(ctx, *liveClients, *liveWrites, add); err != nil {
			fail(err)
		}
	}
	if want("sse") {
		if err := h.sseBench(ctx, *liveClients, *liveWrites, add); err != nil {
			fail(err)
		}
	}
	if want("import") {
		if err := h.importBench(ctx, min(*importRows, *rows), *importBatch, add); err != nil {
			fail(err)
		}
	}
	if want("connectors") {
		if err := h.connectorsBench(ctx, *rows, min(*syncChanges, *rows), add); err != nil {
			fail(err)
		}
	}
	if *rssRows > 0 && want("rss") {
		if err := h.rssBench(ctx, *rssRows, add); err != nil {
			fail(err)
		}
	}
	fmt.Printf("\nshapelog bench, %s, %s\n\n%s\n", time.Now().UTC().Format("2006-01-02"), h.machine(), strings.Join(report, "\n"))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}
