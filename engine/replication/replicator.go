// Package replication owns the engine's publication and logical replication
// slot and streams every committed change into the shape log, confirming to
// PostgreSQL only what the log has made durable.
package replication

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/shapelog/shapelog/engine/catalog"
	"github.com/shapelog/shapelog/engine/shapelog"
)

// Config says what to replicate and how.
type Config struct {
	DatabaseURL string
	Publication string
	Slot        string
	Filter      catalog.Filter
	// ShapesOnly publishes only the tables shapes ask for, ignoring Filter
	// (a database registered for shapes alone).
	ShapesOnly bool
	// Lookup resolves host names (nil: the default resolver).
	Lookup pgconn.LookupFunc
	// StatusInterval is how often the confirmed position is sent even when
	// nothing changed (well under wal_sender_timeout); at most a third of
	// Timeout.
	StatusInterval time.Duration
	// Timeout ends a session that receives nothing from PostgreSQL, not
	// even a keepalive, for this long (default 60 s): the connection is
	// presumed dead (half-open) and replication reconnects. The engine asks
	// for a keepalive with each status update, so a live server always has
	// several chances to answer within it.
	Timeout time.Duration
	// LagLogInterval is how often the lag is logged (default 60 s).
	LagLogInterval time.Duration
}

// State is the replicator's health, as /v1/health reports it.
type State string

// The states.
const (
	StateStarting State = "starting"
	StateActive   State = "active"
	StateWaiting  State = "waiting-for-database"
)

// Status is a snapshot of the replicator's health.
type Status struct {
	State State
	Err   string // the last error while not active
	Lag   Lag
}

// Replicator streams changes from PostgreSQL into a Store.
type Replicator struct {
	cfg   Config
	store *shapelog.Store
	log   zerolog.Logger
	pool  *pgxpool.Pool
	types *catalog.Types

	status      atomic.Pointer[Status]
	lag         lagTracker
	tables      atomic.Pointer[[]*catalog.Table]
	published   atomic.Pointer[map[uint32]bool] // published with REPLICA IDENTITY FULL at the last reconcile
	skipped     atomic.Pointer[map[uint32]bool] // selected tables the last reconcile could not publish
	reconcileMu sync.Mutex
	shapeMu     sync.Mutex
	shapeOIDs   []uint32 // tables shapes need besides the selected ones

	// processed is the stream position below which every commit has been
	// written to the store; advanced is closed when it moves.
	posMu     sync.Mutex
	processed uint64
	advanced  chan struct{}
	poke      chan struct{}
}

// New prepares a replicator; Run starts it.
func New(cfg Config, store *shapelog.Store, pool *pgxpool.Pool, types *catalog.Types, log zerolog.Logger) *Replicator {
	if cfg.Publication == "" {
		cfg.Publication = "shapelog"
	}
	if cfg.Slot == "" {
		cfg.Slot = "shapelog"
	}
	if cfg.StatusInterval == 0 {
		cfg.StatusInterval = 10 * time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 60 * time.Second
	}
	cfg.StatusInterval = min(cfg.StatusInterval, cfg.Timeout/3)
	if cfg.LagLogInterval == 0 {
		cfg.LagLogInterval = time.Minute
	}
	r := &Replicator{cfg: cfg, store: store, pool: pool, types: types, log: log.With().Str("component", "replication").Str("slot", cfg.Slot).Logger(),
		advanced: make(chan struct{}), poke: make(chan struct{}, 1)}
	r.status.Store(&Status{State: StateStarting})
	empty := []*catalog.Table{}
	r.tables.Store(&empty)
	return r
}

// Status reports the replicator's health and lag.
func (r *Replicator) Status() Status {
	st := *r.status.Load()
	st.Lag = r.Lag()
	return st
}

// Tables are the tables published at the last reconcile, with the
// definitions Current or CurrentTable read since; it costs nothing.
func (r *Replicator) Tables() []*catalog.Table { return *r.tables.Load() }

func (r *Replicator) setStatus(s State, err error) {
	st := &Status{State: s}
	if err != nil {
		st.Err = err.Error()
	}
	r.status.Store(st)
}

// Check runs the startup checks once, so `serve` can refuse to start with an
// actionable message instead of retrying a misconfiguration forever.
func (r *Replicator) Check(ctx context.Context) error {
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if err := checkServer(ctx, conn.Conn(), r.cfg.Slot); err != nil {
		return err
	}
	// Fail fast if another engine runs on this slot; Run takes the lock for
	// good.
	if err := acquireSlotLock(ctx, conn.Conn(), r.cfg.Slot); err != nil {
		return err
	}
	_, err = conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", lockKey(r.cfg.Slot))
	return err
}

// Run replicates until ctx ends, reconnecting with backoff after errors
// (PostgreSQL restarts, network trouble). It returns only ctx's error.
func (r *Replicator) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); r.logLag(ctx.Done(), r.cfg.LagLogInterval) }()
	defer wg.Wait()
	backoff := 200 * time.Millisecond
	for {
		started := time.Now()
		err := r.session(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		state := StateWaiting
		var cfgErr *ConfigError
		if errors.As(err, &cfgErr) {
			r.log.Error().Err(err).Msg("replication cannot run until this is fixed; retrying")
		} else {
			r.log.Warn().Err(err).Dur("retry_in", backoff).Msg("replication interrupted; reconnecting")
		}
		r.setStatus(state, err)
		if time.Since(started) > time.Minute {
			backoff = 200 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 15*time.Second)
	}
}

// replicationConfig is DatabaseURL as a replication connection with the
// engine's session settings.
func replicationConfig(databaseURL string, lookup pgconn.LookupFunc) (*pgconn.Config, error) {
	cfg, err := pgconn.ParseConfig(databaseURL)
	if err != nil {
		return nil, err
	}
	if lookup != nil {
		cfg.LookupFunc = lookup
	}
	cfg.RuntimeParams["replication"] = "database"
	for k, v := range catalog.SessionSettings {
		cfg.RuntimeParams[k] = v
	}
	return cfg, nil
}

// session is one connected run of the replication loop.
func (r *Replicator) session(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lockConn, err := r.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	// The lock lives as long as this connection; hijack it from the pool.
	lock := lockConn.Hijack()
	defer lock.Close(context.Background())
	if err := checkServer(ctx, lock, r.cfg.Slot); err != nil {
		return err
	}
	if err := acquireSlotLock(ctx, lock, r.cfg.Slot); err != nil {
		return err
	}
	if _, err := r.reconcile(ctx); err != nil {
		return err
	}
	cfg, err := replicationConfig(r.cfg.DatabaseURL, r.cfg.Lookup)
	if err != nil {
		return err
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("opening replication connection: %w", err)
	}
	defer func() {
		// Bounded: a dead connection must not hold up the reconnect.
		closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	start, err := r.prepareSlot(ctx, lock, conn)
	if err != nil {
		return err
	}
	err = pglogrepl.StartReplication(ctx, conn, r.cfg.Slot, pglogrepl.LSN(start), pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names '" + escapeLiteral(r.cfg.Publication) + "'"},
	})
	if err != nil {
		return explain(err, "starting replication")
	}
	r.log.Info().Str("lsn", pglogrepl.LSN(start).String()).Msg("replication started")
	r.setStatus(StateActive, nil)
	go r.reconcileLoop(ctx)
	return r.stream(ctx, conn)
}

func escapeLiteral(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, '\'')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// prepareSlot creates the slot when missing and returns the LSN to stream
// from. A new slot starts a new log: the store's horizon moves past every
// cursor handed out before, since the changes in between were never seen.
func (r *Replicator) prepareSlot(ctx context.Context, lock *pgx.Conn, conn *pgconn.PgConn) (uint64, error) {
	var confirmed pglogrepl.LSN
	var plugin string
	var active bool
	err := lock.QueryRow(ctx, "SELECT coalesce(confirmed_flush_lsn, '0/0')::text, plugin, active FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()", r.cfg.Slot).
		Scan(&confirmed, &plugin, &active)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		res, err := pglogrepl.CreateReplicationSlot(ctx, conn, r.cfg.Slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{SnapshotAction: "NOEXPORT_SNAPSHOT"})
		if err != nil {
			return 0, explain(err, "creating replication slot "+r.cfg.Slot)
		}
		lsn, err := pglogrepl.ParseLSN(res.ConsistentPoint)
		if err != nil {
			return 0, err
		}
		if r.store.Initialized() {
			r.log.Warn().Msg("replication slot was missing and has been recreated: changes made meanwhile were not captured, so every delta cursor handed out before is now expired and clients must take a new snapshot")
		}
		if err := r.store.Init(time.Now().UnixNano(), uint64(lsn)); err != nil {
			return 0, err
		}
		r.log.Info().Str("lsn", lsn.String()).Msg("created replication slot")
		return uint64(lsn), nil
	case err != nil:
		return 0, err
	}
	if plugin != "pgoutput" {
		return 0, &ConfigError{fmt.Sprintf("replication slot %q uses plugin %q, not pgoutput: drop it or choose another --slot", r.cfg.Slot, plugin)}
	}
	if active {
		return 0, &ConfigError{fmt.Sprintf("replication slot %q is in use by another client: stop it or choose another --slot", r.cfg.Slot)}
	}
	if !r.store.Initialized() {
		r.log.Warn().Msg("storage is empty but the slot exists: starting a new log at the slot's position")
		if err := r.store.Init(time.Now().UnixNano(), uint64(confirmed)); err != nil {
			return 0, err
		}
	}
	return max(r.store.Written().EndLSN, uint64(confirmed)), nil
}

func (r *Replicator) reconcileLoop(ctx context.Context) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := r.reconcile(ctx); err != nil && ctx.Err() == nil {
				r.log.Warn().Err(err).Msg("publication reconcile failed")
			}
		}
	}
}

// setProcessed records that every commit below lsn is in the store.
func (r *Replicator) setProcessed(lsn uint64) {
	r.posMu.Lock()
	if lsn > r.processed {
		r.processed = lsn
		close(r.advanced)
		r.advanced = make(chan struct{})
	}
	r.posMu.Unlock()
}

// WaitProcessed blocks until every transaction that committed before lsn is
// in the store (written; see Store.Durable for visibility).
func (r *Replicator) WaitProcessed(ctx context.Context, lsn uint64) error {
	for {
		r.posMu.Lock()
		done, ch := r.processed >= lsn, r.advanced
		r.posMu.Unlock()
		if done {
			return nil
		}
		// Ask the server where it is; an idle stream answers with a keepalive.
		select {
		case r.poke <- struct{}{}:
		default:
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for replication to reach %s: %w", pglogrepl.LSN(lsn), ctx.Err())
		case <-ch:
		case <-time.After(100 * time.Millisecond):
		}
	}
}
