// Package engine wires the engine's parts together: the shape log store,
// replication, snapshots and the HTTP APIs. The shapelog binary, the tests,
// the benchmarks and the demo all run the engine through it.
package engine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/shapelog/shapelog/engine/catalog"
	"github.com/shapelog/shapelog/engine/functions"
	"github.com/shapelog/shapelog/engine/httpapi"
	"github.com/shapelog/shapelog/engine/importer"
	"github.com/shapelog/shapelog/engine/metrics"
	"github.com/shapelog/shapelog/engine/replication"
	"github.com/shapelog/shapelog/engine/shapelog"
)

// Config is everything the engine needs.
type Config struct {
	DatabaseURL string
	// DatabaseID names the engine's own database in shape requests'
	// database_id once others are added (default "default").
	DatabaseID   string
	AccessKey    string
	Insecure     bool
	Listen       string // host:port; ":0" picks a free port
	StorageDir   string
	Filter       catalog.Filter
	Publication  string
	Slot         string
	Retention    time.Duration
	SnapshotIdle time.Duration
	// MaxSnapshots bounds held snapshots (tables without a primary key).
	MaxSnapshots int
	// SnapshotConns bounds the connections snapshot pages of keyed tables
	// are read through (default 4); more readers wait their turn.
	SnapshotConns int
	// StatementTimeout bounds each snapshot query, one page (default
	// snapshot.DefaultStatementTimeout).
	StatementTimeout time.Duration
	Version          string
	// MaxImportBytes bounds an import request body (default 64 MiB).
	MaxImportBytes int64
	// Functions configures /api/query, /api/mutation, /api/action and
	// /api/run; with no schemas exposed they answer "not found".
	Functions functions.Config
	// Shape configures Electric's /v1/shape. Its secret defaults to the
	// access key.
	Shape httpapi.ShapeConfig
	// ShapeChunkBytes closes shape snapshot chunks and change responses at
	// this size (default 10 MiB).
	ShapeChunkBytes int
	// ReplicationTimeout ends a replication session that receives nothing
	// from PostgreSQL, not even a keepalive, for this long, and reconnects
	// (default 60 s).
	ReplicationTimeout time.Duration
	// MetricsAccess says who may read GET /metrics (default open).
	MetricsAccess httpapi.MetricsAccess
}

// Engine is a running engine.
type Engine struct {
	Store    *shapelog.Store
	Repl     *replication.Replicator
	Importer *importer.Importer

	log       zerolog.Logger
	ln        net.Listener
	srv       *http.Server
	api       *httpapi.Server
	main      *database
	databases *databases
	functions *functions.Service
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	once      sync.Once
}

// Start opens the store, checks the database and starts serving. A
// misconfigured database (wal_level, privileges) is an error; an unreachable
// one is retried in the background while /v1/health reports it.
func Start(ctx context.Context, c Config, log zerolog.Logger) (*Engine, error) {
	if c.DatabaseID == "" {
		c.DatabaseID = "default"
	}
	if c.Retention == 0 {
		c.Retention = 7 * 24 * time.Hour
	}
	e := &Engine{log: log}
	ok := false
	defer func() {
		if !ok {
			e.closeResources()
		}
	}()
	var err error
	e.main, err = openDatabase(ctx, databaseConfig{
		id: c.DatabaseID, url: c.DatabaseURL, dir: c.StorageDir, filter: c.Filter, publication: c.Publication, slot: c.Slot,
		snapshotIdle: c.SnapshotIdle, maxSnapshots: c.MaxSnapshots, snapshotConns: c.SnapshotConns, statementTimeout: c.StatementTimeout, chunkBytes: c.ShapeChunkBytes,
		replicationTimeout: c.ReplicationTimeout,
	}, false, log)
	if err != nil {
		return nil, err
	}
	e.Store, e.Repl = e.main.store, e.main.repl
	e.Importer = importer.New(e.main.pool, log)
	if e.functions, err = functions.New(ctx, c.DatabaseURL, c.Functions, e.main.types, log); err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	e.databases = &databases{cfg: c, main: e.main, log: log, added: map[string]*database{}, specs: map[string]registered{}}
	if err := e.databases.restore(); err != nil {
		return nil, err
	}
	shapeCfg := c.Shape
	if shapeCfg.Secret == "" {
		shapeCfg.Secret = c.AccessKey
	}
	m := metrics.New()
	m.SetDatabases(e.databases.stats)
	e.api = httpapi.New(httpapi.Config{AccessKey: c.AccessKey, Insecure: c.Insecure, Version: c.Version, MaxImportBytes: c.MaxImportBytes,
		Functions: e.functions, Databases: e.databases, Shape: shapeCfg, Metrics: m, MetricsAccess: c.MetricsAccess},
		e.main.store, e.main.repl, e.main.snaps, e.Importer, e.main.pool, e.main.types, log)
	if e.ln, err = net.Listen("tcp", c.Listen); err != nil {
		return nil, fmt.Errorf("listening on %s: %w", c.Listen, err)
	}
	e.srv = &http.Server{Handler: e.api.Handler(), ReadHeaderTimeout: 10 * time.Second}
	runCtx, cancelRun := context.WithCancel(context.Background())
	e.cancel = cancelRun
	e.main.run(c.Retention)
	e.wg.Add(2)
	go func() { defer e.wg.Done(); e.pruneKeysLoop(runCtx) }()
	go func() {
		defer e.wg.Done()
		if err := e.srv.Serve(e.api.Listener(e.ln)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("http server stopped")
		}
	}()
	log.Info().Str("addr", e.ln.Addr().String()).Str("storage_dir", c.StorageDir).Bool("insecure", c.Insecure).
		Str("version", c.Version).Msg("shapelog engine listening")
	ok = true
	return e, nil
}

// Addr is the address the HTTP server listens on.
func (e *Engine) Addr() string { return e.ln.Addr().String() }

// URL is the engine's base URL on the loopback interface.
func (e *Engine) URL() string {
	_, port, _ := net.SplitHostPort(e.Addr())
	return "http://127.0.0.1:" + port
}

// WaitReadable blocks until every transaction committed before lsn is
// durable in the log, so that exports see it.
func (e *Engine) WaitReadable(ctx context.Context, lsn uint64) error {
	if err := e.Repl.WaitProcessed(ctx, lsn); err != nil {
		return err
	}
	written := e.Store.Written().Ts
	for e.Store.Durable().Ts < written {
		select {
		case <-e.Store.Advanced():
		case <-ctx.Done():
			return fmt.Errorf("waiting for the log to become durable: %w", ctx.Err())
		}
	}
	return nil
}

// Close stops serving (letting requests finish for up to timeout), stops
// replication and closes the store.
func (e *Engine) Close(timeout time.Duration) {
	e.once.Do(func() {
		e.log.Info().Msg("shutting down")
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		_ = e.srv.Shutdown(ctx)
		cancel()
		e.api.Close()
		e.cancel()
		e.wg.Wait()
		e.closeResources()
	})
}

func (e *Engine) closeResources() {
	if e.cancel != nil {
		e.cancel()
	}
	if e.databases != nil {
		e.databases.close()
	}
	if e.functions != nil {
		e.functions.Close()
	}
	if e.main != nil {
		e.main.stop()
	}
}

// pruneKeysLoop forgets import idempotency keys after a week, once a minute.
func (e *Engine) pruneKeysLoop(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// Idempotency keys only need to outlive a client's retries.
		if err := e.Importer.PruneKeys(ctx, "7 days"); err != nil && ctx.Err() == nil {
			e.log.Warn().Err(err).Msg("pruning import idempotency keys failed")
		}
	}
}
