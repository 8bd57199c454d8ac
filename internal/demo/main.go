// Command demo shows the engine end to end on a throwaway PostgreSQL: sample
// data, a consistent snapshot over HTTP, then live inserts, updates and
// deletes read back as deltas. Run it with `make demo`; it cleans up after
// itself.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/shapelog/shapelog/engine"
	"github.com/shapelog/shapelog/engine/client"
	"github.com/shapelog/shapelog/internal/pgtest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) { fmt.Printf("\n▶ "+format+"\n", args...) }

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	started := time.Now()

	step("starting a throwaway PostgreSQL (wal_level=logical)")
	cluster, err := pgtest.Start(pgtest.Options{})
	if err != nil {
		return err
	}
	defer cluster.Stop()
	dbURL := cluster.URL("postgres")
	db, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer db.Close(context.Background())

	step("creating sample data: todos (1,000 rows) and a hostile \"Mixed Case\" table")
	if _, err := db.Exec(ctx, `
		CREATE TABLE todos (id bigint PRIMARY KEY, title text NOT NULL, done boolean NOT NULL DEFAULT false,
			tags text[], due date, meta jsonb, created_at timestamptz NOT NULL DEFAULT now());
		INSERT INTO todos (id, title, tags, due, meta)
			SELECT g, 'todo #' || g, ARRAY['demo', 'n' || (g % 3)], date '2026-12-01' + g % 30, jsonb_build_object('prio', g % 5)
			FROM generate_series(1, 1000) g;
		CREATE TABLE "Mixed Case" ("Id" int, label text, PRIMARY KEY ("Id"));
		INSERT INTO "Mixed Case" VALUES (1, 'quotes " and unicode ✓');`); err != nil {
		return err
	}

	step("starting the engine")
	storage, err := os.MkdirTemp("", "shapelog-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(storage)
	const key = "demo-access-key"
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.TimeOnly}).Level(zerolog.WarnLevel)
	e, err := engine.Start(ctx, engine.Config{DatabaseURL: dbURL, AccessKey: key, Listen: "127.0.0.1:0", StorageDir: storage, Version: "demo"}, log)
	if err != nil {
		return err
	}
	defer e.Close(5 * time.Second)
	api, err := client.New(e.URL(), key, client.Options{ClientName: "shapelog-demo-0.1.0"})
	if err != nil {
		return err
	}
	fmt.Printf("  engine at %s (try: curl -H 'Authorization: Convex %s' %s/api/json_schemas)\n", e.URL(), key, e.URL())
	if err := waitActive(ctx, e); err != nil {
		return err
	}

	step("GET /api/json_schemas — one JSON Schema per published table")
	schemas, err := api.JSONSchemas(ctx, true, "json")
	if err != nil {
		return err
	}
	for name := range schemas {
		fmt.Printf("  %s\n", name)
	}

	step("GET /api/list_snapshot — a consistent snapshot, page by page")
	snapshotStart := time.Now()
	var docs int
	var first json.RawMessage
	req := client.SnapshotRequest{}
	var snapshot int64
	for {
		page, err := api.ListSnapshot(ctx, req)
		if err != nil {
			return err
		}
		if first == nil && len(page.Values) > 0 {
			first = page.Values[0]
		}
		docs += len(page.Values)
		snapshot = page.Snapshot
		if !page.HasMore {
			break
		}
		req.Snapshot, req.Cursor = &page.Snapshot, page.Cursor
	}
	fmt.Printf("  %d documents at snapshot %d (%s) in %s\n  first: %s\n", docs, snapshot, time.Unix(0, snapshot).UTC().Format(time.RFC3339Nano), time.Since(snapshotStart).Round(time.Millisecond), first)

	step("writing live changes: insert, update, delete, a key change")
	for _, sql := range []string{
		`INSERT INTO todos (id, title) VALUES (1001, 'a new todo')`,
		`UPDATE todos SET done = true WHERE id <= 3`,
		`DELETE FROM todos WHERE id = 10`,
		`UPDATE "Mixed Case" SET "Id" = 2 WHERE "Id" = 1`,
	} {
		fmt.Printf("  %s\n", sql)
		if _, err := db.Exec(ctx, sql); err != nil {
			return err
		}
	}

	step("GET /api/document_deltas?cursor=<snapshot> — every change after the snapshot, in commit order")
	cursor, seen := snapshot, 0
	deadline := time.Now().Add(10 * time.Second)
	for seen < 7 && time.Now().Before(deadline) {
		page, err := api.DocumentDeltas(ctx, client.DeltasRequest{Cursor: cursor})
		if err != nil {
			return err
		}
		for _, v := range page.Values {
			fmt.Printf("  %s\n", v)
		}
		seen += len(page.Values)
		cursor = page.Cursor
		time.Sleep(50 * time.Millisecond)
	}
	if seen < 7 {
		return fmt.Errorf("saw %d changes, expected 7", seen)
	}
	step("done in %s — the engine, PostgreSQL and all files are removed now", time.Since(started).Round(time.Millisecond))
	return nil
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
