// Command demo syncs one PostgreSQL database into another through two
// engines and the Airbyte connector pair, on a throwaway cluster: a full
// sync, then inserts, updates, deletes and a key change carried over by an
// incremental sync, with a report comparing both databases. Run it with
// `make demo` (which builds the binaries first); it cleans up after itself.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/shapelog/shapelog/engine"
	"github.com/shapelog/shapelog/internal/pgtest"
	"github.com/shapelog/shapelog/internal/pipeline"
	"github.com/shapelog/shapelog/protocol"
)

const key = "demo-access-key"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) { fmt.Printf("\n▶ "+format+"\n", args...) }

// tables are the demo's tables, with the SQL that orders their rows.
var tables = map[string]string{
	"todos":       "id",
	"Mixed Case":  `"Id"`,
	"order_lines": "order_id, line",
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	started := time.Now()
	for _, bin := range []string{"bin/source-shapelog", "bin/destination-shapelog"} {
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("%s is missing: run make demo (it builds the binaries)", bin)
		}
	}
	dir, err := os.MkdirTemp("", "shapelog-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	step("starting a throwaway PostgreSQL (wal_level=logical) with databases a and b")
	cluster, err := pgtest.Start(pgtest.Options{})
	if err != nil {
		return err
	}
	defer cluster.Stop()
	admin, err := pgx.Connect(ctx, cluster.URL("postgres"))
	if err != nil {
		return err
	}
	defer admin.Close(context.Background())
	for _, db := range []string{"a", "b"} {
		if _, err := admin.Exec(ctx, "CREATE DATABASE "+db); err != nil {
			return err
		}
	}
	a, err := pgx.Connect(ctx, cluster.URL("a"))
	if err != nil {
		return err
	}
	defer a.Close(context.Background())
	b, err := pgx.Connect(ctx, cluster.URL("b"))
	if err != nil {
		return err
	}
	defer b.Close(context.Background())

	step("creating sample data in a: todos (100,000 rows), order_lines (composite key), \"Mixed Case\"")
	if _, err := a.Exec(ctx, `
		CREATE TABLE todos (id bigint PRIMARY KEY, title text NOT NULL, done boolean NOT NULL DEFAULT false,
			tags text[], due date, meta jsonb, amount numeric(12,2), created_at timestamptz NOT NULL DEFAULT now());
		INSERT INTO todos (id, title, tags, due, meta, amount)
			SELECT g, 'todo #' || g, ARRAY['demo', 'n' || (g % 3)], date '2026-12-01' + g % 30,
			       jsonb_build_object('prio', g % 5), g * 1.5
			FROM generate_series(1, 100000) g;
		CREATE TABLE order_lines (order_id int, line int, sku text, qty int NOT NULL, PRIMARY KEY (order_id, line));
		INSERT INTO order_lines SELECT g / 4, g % 4, 'sku-' || g, g % 9 FROM generate_series(1, 20000) g;
		CREATE TABLE "Mixed Case" ("Id" int PRIMARY KEY, label text);
		INSERT INTO "Mixed Case" VALUES (1, 'quotes " and unicode ✓');`); err != nil {
		return err
	}

	step("starting engine A (on a) and engine B (on b)")
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.TimeOnly}).Level(zerolog.WarnLevel)
	engines := map[string]*engine.Engine{}
	for _, db := range []string{"a", "b"} {
		e, err := engine.Start(ctx, engine.Config{
			DatabaseURL: cluster.URL(db), AccessKey: key, Listen: "127.0.0.1:0", StorageDir: filepath.Join(dir, "engine-"+db),
			Slot: "shapelog_demo_" + db, Publication: "shapelog_demo_" + db, Version: "demo",
		}, log)
		if err != nil {
			return err
		}
		defer e.Close(5 * time.Second)
		if err := waitActive(ctx, e); err != nil {
			return err
		}
		engines[db] = e
		fmt.Printf("  engine %s at %s\n", strings.ToUpper(db), e.URL())
	}

	step("configuring the connectors: source on engine A, destination on engine B")
	write := func(name string, v any) (string, error) {
		data, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return "", err
		}
		p := filepath.Join(dir, name)
		return p, os.WriteFile(p, data, 0o600)
	}
	sourceConfig, err := write("source.json", map[string]any{"deployment_url": engines["a"].URL(), "access_key": key})
	if err != nil {
		return err
	}
	destConfig, err := write("destination.json", map[string]any{"deployment_url": engines["b"].URL(), "access_key": key})
	if err != nil {
		return err
	}
	catalog, err := discoverCatalog(ctx, sourceConfig)
	if err != nil {
		return err
	}
	catalogFile, err := write("catalog.json", catalog)
	if err != nil {
		return err
	}
	fmt.Printf("  %d streams, each incremental + append_dedup on its primary key (files in %s)\n", len(catalog.Streams), dir)

	sync := pipeline.Sync{
		SourceBin: "bin/source-shapelog", DestinationBin: "bin/destination-shapelog",
		SourceConfig: sourceConfig, DestinationConfig: destConfig, Catalog: catalogFile, Stderr: os.Stderr,
		// Speed mode, wired as the Airbyte platform wires it.
		Speed: &pipeline.Speed{Sockets: 2, Format: "PROTOBUF"},
		OnState: func(echoed int, _, _ *os.Process) {
			if echoed%10 == 0 {
				fmt.Printf("  … %d checkpoints committed\n", echoed)
			}
		},
	}
	step("full sync in speed mode: source-shapelog read → protobuf on 2 Unix sockets → destination-shapelog write")
	full, err := sync.Run(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("  %d records in %s (%.0f records/s)\n", full.Records, full.Took.Round(time.Millisecond), float64(full.Records)/full.Took.Seconds())

	step("changing a: inserts, updates, deletes, a primary-key change")
	changes := []string{
		`INSERT INTO todos (id, title) SELECT g, 'new todo ' || g FROM generate_series(100001, 101000) g`,
		`UPDATE todos SET done = true, amount = amount * 2 WHERE id % 10 = 0`,
		`DELETE FROM todos WHERE id BETWEEN 500 AND 999`,
		`UPDATE order_lines SET qty = qty + 1 WHERE order_id < 100`,
		`UPDATE "Mixed Case" SET "Id" = 2 WHERE "Id" = 1`,
	}
	for _, sql := range changes {
		tag, err := a.Exec(ctx, sql)
		if err != nil {
			return err
		}
		fmt.Printf("  %-75s %s\n", sql, tag)
	}
	var lsn string
	if err := a.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
		return err
	}
	pos, err := pglogrepl.ParseLSN(lsn)
	if err != nil {
		return err
	}
	if err := engines["a"].WaitReadable(ctx, uint64(pos)); err != nil {
		return err
	}

	step("incremental sync from the saved states: only the changes travel")
	sync.States = full.States
	inc, err := sync.Run(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("  %d records in %s\n", inc.Records, inc.Took.Round(time.Millisecond))

	step("report")
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  table\trows in a\trows in b\tsame rows\t")
	allSame := true
	for _, t := range []string{"todos", "order_lines", "Mixed Case"} {
		ca, sa, err := digest(ctx, a, a, t)
		if err != nil {
			return err
		}
		cb, sb, err := digest(ctx, b, a, t)
		if err != nil {
			return err
		}
		same := ca == cb && sa == sb
		allSame = allSame && same
		fmt.Fprintf(tw, "  %s\t%d\t%d\t%v\t\n", t, ca, cb, same)
	}
	_ = tw.Flush()
	fmt.Printf("  full sync: %d records, %.0f records/s; incremental: %d records; source peak RSS %.0f MiB, destination %.0f MiB\n",
		full.Records, float64(full.Records)/full.Took.Seconds(), inc.Records, full.SourceRSS, full.DestinationRSS)
	if !allSame {
		return fmt.Errorf("b differs from a")
	}
	step("done in %s — the engines, PostgreSQL and all files are removed now", time.Since(started).Round(time.Millisecond))
	return nil
}

// discoverCatalog runs `source-shapelog discover` and configures every
// stream for incremental sync, deduplicated on its primary key.
func discoverCatalog(ctx context.Context, config string) (*protocol.ConfiguredCatalog, error) {
	out, err := exec.CommandContext(ctx, "bin/source-shapelog", "discover", "--config", config).Output()
	if err != nil {
		return nil, fmt.Errorf("discover: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		var m protocol.Message
		if json.Unmarshal([]byte(line), &m) != nil || m.Catalog == nil {
			continue
		}
		cat := &protocol.ConfiguredCatalog{}
		for _, s := range m.Catalog.Streams {
			cat.Streams = append(cat.Streams, protocol.ConfiguredStream{Stream: s, SyncMode: protocol.SyncIncremental,
				DestinationSyncMode: protocol.DestinationAppendDedup, PrimaryKey: s.SourceDefinedPrimaryKey})
		}
		return cat, nil
	}
	return nil, fmt.Errorf("discover printed no catalog: %s", out)
}

// digest returns a table's row count and an md5 of its rows (over a's
// columns, in key order), read through conn.
func digest(ctx context.Context, conn, a *pgx.Conn, table string) (int64, string, error) {
	rows, err := a.Query(ctx, `SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`,
		pgx.Identifier{table}.Sanitize())
	if err != nil {
		return 0, "", err
	}
	cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, "", err
	}
	for i, c := range cols {
		cols[i] = pgx.Identifier{c}.Sanitize()
	}
	var n int64
	var sum string
	err = conn.QueryRow(ctx, fmt.Sprintf(`SELECT count(*), coalesce(md5(string_agg(row(%s)::text, ',' ORDER BY %s)), '')
		FROM %s`, strings.Join(cols, ", "), tables[table], pgx.Identifier{table}.Sanitize())).Scan(&n, &sum)
	return n, sum, err
}

func waitActive(ctx context.Context, e *engine.Engine) error {
	deadline := time.Now().Add(30 * time.Second)
	for e.Repl.Status().State != "active" {
		if time.Now().After(deadline) {
			return fmt.Errorf("engine not active: %s", e.Repl.Status().Err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}
