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
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/shapelog/shapelog/engine/catalog"
	"github.com/shapelog/shapelog/engine/functions"
	"github.com/shapelog/shapelog/engine/httpapi"
	"github.com/shapelog/shapelog/engine/importer"
	"github.com/shapelog/shapelog/engine/replication"
	"github.com/shapelog/shapelog/engine/shapelog"
	"github.com/shapelog/shapelog/engine/shapes"
	"github.com/shapelog/shapelog/engine/snapshot"
)

// Config is everything the engine needs.
type Config struct {
	DatabaseURL  string
	AccessKey    string
	Insecure     bool
	Listen       string // host:port; ":0" picks a free port
	StorageDir   string
	Filter       catalog.Filter
	Publication  string
	Slot         string
	Retention    time.Duration
	SnapshotIdle time.Duration
	MaxSnapshots int
	Version      string
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
}

// Engine is a running engine.
type Engine struct {
	Store    *shapelog.Store
	Repl     *replication.Replicator
	Importer *importer.Importer
	Shapes   *shapes.Manager

	log       zerolog.Logger
	ln        net.Listener
	srv       *http.Server
	pool      *pgxpool.Pool
	functions *functions.Service
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	once      sync.Once
}

// Start opens the store, checks the database and starts serving. A
// misconfigured database (wal_level, privileges) is an error; an unreachable
// one is retried in the background while /v1/health reports it.
func Start(ctx context.Context, c Config, log zerolog.Logger) (*Engine, error) {
	poolCfg, err := pgxpool.ParseConfig(c.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	for k, v := range catalog.SessionSettings {
		poolCfg.ConnConfig.RuntimeParams[k] = v
	}
	poolCfg.ConnConfig.RuntimeParams["application_name"] = "shapelog"
	poolCfg.MaxConns = 20
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	e := &Engine{log: log, pool: pool}
	ok := false
	defer func() {
		if !ok {
			e.closeResources()
		}
	}()
	if err := os.MkdirAll(c.StorageDir, 0o755); err != nil {
		return nil, fmt.Errorf("storage dir: %w", err)
	}
	if e.Store, err = shapelog.Open(c.StorageDir, log); err != nil {
		return nil, err
	}
	types := catalog.NewTypes()
	e.Repl = replication.New(replication.Config{
		DatabaseURL: c.DatabaseURL, Publication: c.Publication, Slot: c.Slot, Filter: c.Filter,
	}, e.Store, pool, types, log)
	checkCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = e.Repl.Check(checkCtx)
	cancel()
	var cfgErr *replication.ConfigError
	if errors.As(err, &cfgErr) {
		return nil, err
	} else if err != nil {
		log.Warn().Err(err).Msg("database not reachable yet; will keep trying")
	}
	snaps := snapshot.NewManager(snapshot.Config{DatabaseURL: c.DatabaseURL, MaxSessions: c.MaxSnapshots, IdleTimeout: c.SnapshotIdle}, e.Store, e.Repl, log)
	e.Importer = importer.New(pool, log)
	if e.functions, err = functions.New(ctx, c.DatabaseURL, c.Functions, types, log); err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	runCtx, cancelRun := context.WithCancel(context.Background())
	e.cancel = cancelRun
	e.Shapes, err = shapes.Open(runCtx, shapes.Config{Dir: filepath.Join(c.StorageDir, "shapes"), ChunkBytes: c.ShapeChunkBytes},
		e.Store, snaps, e.Repl, pool, types, log)
	if err != nil {
		return nil, err
	}
	shapeCfg := c.Shape
	if shapeCfg.Secret == "" {
		shapeCfg.Secret = c.AccessKey
	}
	api := httpapi.New(httpapi.Config{AccessKey: c.AccessKey, Insecure: c.Insecure, Version: c.Version, MaxImportBytes: c.MaxImportBytes,
		Functions: e.functions, Shapes: e.Shapes, Shape: shapeCfg},
		e.Store, e.Repl, snaps, e.Importer, pool, types, log)
	if e.ln, err = net.Listen("tcp", c.Listen); err != nil {
		return nil, fmt.Errorf("listening on %s: %w", c.Listen, err)
	}
	e.srv = &http.Server{Handler: api.Handler(), ReadHeaderTimeout: 10 * time.Second}
	retention := c.Retention
	if retention == 0 {
		retention = 7 * 24 * time.Hour
	}
	e.wg.Add(5)
	go func() { defer e.wg.Done(); _ = e.Repl.Run(runCtx) }()
	go func() { defer e.wg.Done(); e.Shapes.Run(runCtx) }()
	go func() { defer e.wg.Done(); snaps.Run(runCtx) }()
	go func() { defer e.wg.Done(); e.pruneLoop(runCtx, retention) }()
	go func() {
		defer e.wg.Done()
		if err := e.srv.Serve(e.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
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
		e.cancel()
		e.wg.Wait()
		e.closeResources()
	})
}

func (e *Engine) closeResources() {
	if e.cancel != nil {
		e.cancel()
	}
	if e.Shapes != nil {
		_ = e.Shapes.Close()
	}
	if e.Store != nil {
		_ = e.Store.Close()
	}
	if e.functions != nil {
		e.functions.Close()
	}
	e.pool.Close()
}

// pruneLoop drops changes older than the retention period once a minute.
func (e *Engine) pruneLoop(ctx context.Context, retention time.Duration) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cut, ok, err := e.Store.TsAtOrBefore(time.Now().Add(-retention).UnixNano())
		if err == nil && ok {
			err = e.Store.Prune(cut)
		}
		if err != nil {
			e.log.Error().Err(err).Msg("pruning the shape log failed")
		}
		// Idempotency keys only need to outlive a client's retries.
		if err := e.Importer.PruneKeys(ctx, "7 days"); err != nil && ctx.Err() == nil {
			e.log.Warn().Err(err).Msg("pruning import idempotency keys failed")
		}
	}
}
