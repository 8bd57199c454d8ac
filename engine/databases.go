package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/shapelog/shapelog/engine/catalog"
	"github.com/shapelog/shapelog/engine/httpapi"
	"github.com/shapelog/shapelog/engine/metrics"
	"github.com/shapelog/shapelog/engine/replication"
	"github.com/shapelog/shapelog/engine/shapelog"
	"github.com/shapelog/shapelog/engine/shapes"
	"github.com/shapelog/shapelog/engine/snapshot"
)

// database is one PostgreSQL database the engine replicates: its connection
// pool, shape log, replication slot, snapshots and shapes.
type database struct {
	id     string
	pool   *pgxpool.Pool
	types  *catalog.Types
	store  *shapelog.Store
	repl   *replication.Replicator
	snaps  *snapshot.Manager
	shapes *shapes.Manager
	ctx    context.Context // ends when the database stops
	cancel context.CancelFunc
	wg     sync.WaitGroup
	log    zerolog.Logger
}

// databaseConfig says how to open a database.
type databaseConfig struct {
	id            string
	url           string
	lookup        pgconn.LookupFunc // nil: the default resolver
	dir           string            // its shape log and shape storage
	filter        catalog.Filter
	shapesOnly    bool // publish only what shapes ask for
	publication   string
	slot          string
	snapshotIdle  time.Duration
	maxSnapshots  int
	snapshotConns int
	// statementTimeout bounds each snapshot query.
	statementTimeout time.Duration
	chunkBytes       int
	// replicationTimeout ends a silent replication session (default 60 s).
	replicationTimeout time.Duration
}

// openDatabase opens a database's storage and checks the server. A
// misconfigured server (wal_level, privileges, a slot in use) is an error;
// an unreachable one is too when strict, and otherwise retried once running.
func openDatabase(ctx context.Context, c databaseConfig, strict bool, log zerolog.Logger) (*database, error) {
	poolCfg, err := pgxpool.ParseConfig(c.url)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	for k, v := range catalog.SessionSettings {
		poolCfg.ConnConfig.RuntimeParams[k] = v
	}
	poolCfg.ConnConfig.RuntimeParams["application_name"] = "shapelog"
	if c.lookup != nil {
		poolCfg.ConnConfig.LookupFunc = c.lookup
	}
	poolCfg.MaxConns = 20
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	d := &database{id: c.id, pool: pool, types: catalog.NewTypes(), log: log}
	ok := false
	defer func() {
		if !ok {
			d.closeStorage()
		}
	}()
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return nil, fmt.Errorf("storage dir: %w", err)
	}
	if d.store, err = shapelog.Open(c.dir, log); err != nil {
		return nil, err
	}
	d.repl = replication.New(replication.Config{
		DatabaseURL: c.url, Publication: c.publication, Slot: c.slot, Filter: c.filter, ShapesOnly: c.shapesOnly, Lookup: c.lookup,
		Timeout: c.replicationTimeout,
	}, d.store, pool, d.types, log)
	checkCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = d.repl.Check(checkCtx)
	cancel()
	var cfgErr *replication.ConfigError
	if errors.As(err, &cfgErr) || (err != nil && strict) {
		return nil, err
	} else if err != nil {
		log.Warn().Err(err).Msg("database not reachable yet; will keep trying")
	}
	d.snaps, err = snapshot.NewManager(snapshot.Config{DatabaseURL: c.url, MaxSessions: c.maxSnapshots, PageConns: c.snapshotConns, IdleTimeout: c.snapshotIdle, StatementTimeout: c.statementTimeout, Lookup: c.lookup}, d.store, d.repl, log)
	if err != nil {
		return nil, err
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.shapes, err = shapes.Open(d.ctx, shapes.Config{Dir: filepath.Join(c.dir, "shapes"), ChunkBytes: c.chunkBytes},
		d.store, d.snaps, d.repl, pool, d.types, log)
	if err != nil {
		return nil, err
	}
	ok = true
	return d, nil
}

// run starts replication, shape maintenance, snapshot expiry and pruning of
// changes older than retention.
func (d *database) run(retention time.Duration) {
	ctx := d.ctx
	d.wg.Add(4)
	go func() { defer d.wg.Done(); _ = d.repl.Run(ctx) }()
	go func() { defer d.wg.Done(); d.shapes.Run(ctx) }()
	go func() { defer d.wg.Done(); d.snaps.Run(ctx) }()
	go func() { defer d.wg.Done(); d.pruneLoop(ctx, retention) }()
}

// stop ends the background work and closes the storage.
func (d *database) stop() {
	if d.cancel != nil {
		d.cancel()
	}
	d.wg.Wait()
	d.closeStorage()
}

func (d *database) closeStorage() {
	if d.cancel != nil {
		d.cancel()
	}
	if d.shapes != nil {
		_ = d.shapes.Close()
	}
	if d.store != nil {
		_ = d.store.Close()
	}
	d.pool.Close()
}

// stats is the database's state for the metrics.
func (d *database) stats() metrics.Database {
	st := d.repl.Status()
	held, keyed := d.snaps.Open()
	return metrics.Database{
		ID: d.id, Active: st.State == replication.StateActive, LagBytes: st.Lag.Bytes, LagSeconds: st.Lag.Seconds,
		LogBytes: d.store.DiskUsage(), Horizon: d.store.Horizon(), HeldSnapshots: held, KeyedSnapshots: keyed, Shapes: d.shapes.Count(),
	}
}

// pruneLoop drops changes older than the retention period once a minute.
func (d *database) pruneLoop(ctx context.Context, retention time.Duration) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cut, ok, err := d.store.TsAtOrBefore(time.Now().Add(-retention).UnixNano())
		if err == nil && ok {
			err = d.store.Prune(cut)
		}
		if err != nil {
			d.log.Error().Err(err).Msg("pruning the shape log failed")
		}
	}
}

// databases is the engine's registry of databases: its own, and those added
// with POST /v1/admin/database, which it remembers across restarts in
// <storage-dir>/databases.json and serves shapes from.
type databases struct {
	cfg  Config
	main *database
	log  zerolog.Logger

	admin  sync.Mutex // serializes Add, Remove and close
	mu     sync.Mutex // guards added and specs, which change under admin too
	added  map[string]*database
	specs  map[string]registered
	closed bool
}

// registered is a database in the registry, with the slot and publication
// it was given (kept, so that changing --slot later orphans nothing).
type registered struct {
	httpapi.DatabaseSpec
	Slot        string `json:"slot"`
	Publication string `json:"publication"`
}

var databaseIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,40}$`)

func (r *databases) registryPath() string { return filepath.Join(r.cfg.StorageDir, "databases.json") }

// restore reopens the databases added before a restart. One that cannot be
// opened is logged and left registered, so a later restart retries it.
func (r *databases) restore() error {
	b, err := os.ReadFile(r.registryPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("reading the database registry: %w", err)
	}
	var specs []registered
	if err := json.Unmarshal(b, &specs); err != nil {
		// Serve the engine's own database anyway; keep the file for a human.
		aside := r.registryPath() + ".unreadable"
		_ = os.Rename(r.registryPath(), aside)
		r.log.Error().Err(err).Str("file", aside).Msg("the database registry is unreadable: added databases are not served; re-add them (their slots are still on their servers)")
		return nil
	}
	for _, spec := range specs {
		if spec.Slot == "" || spec.Publication == "" {
			spec = r.register(spec.DatabaseSpec)
		}
		r.specs[spec.ID] = spec
		d, err := openDatabase(context.Background(), r.databaseConfig(spec), false, r.log.With().Str("database_id", spec.ID).Logger())
		if err != nil {
			r.log.Error().Err(err).Str("database_id", spec.ID).Msg("cannot serve an added database; fix it and restart, or remove it")
			continue
		}
		d.run(r.cfg.Retention)
		r.added[spec.ID] = d
	}
	return nil
}

// databaseConfig derives an added database's slot, publication and storage
// from the engine's.
func (r *databases) databaseConfig(spec registered) databaseConfig {
	return databaseConfig{
		id: spec.ID, url: spec.URL, lookup: addressFamily(spec.UseIPv6),
		dir: filepath.Join(r.cfg.StorageDir, "databases", spec.ID), shapesOnly: true,
		publication: spec.Publication, slot: spec.Slot,
		snapshotIdle: r.cfg.SnapshotIdle, maxSnapshots: r.cfg.MaxSnapshots, snapshotConns: r.cfg.SnapshotConns, statementTimeout: r.cfg.StatementTimeout, chunkBytes: r.cfg.ShapeChunkBytes,
		replicationTimeout: r.cfg.ReplicationTimeout,
	}
}

// register names a new database's slot and publication after the engine's.
func (r *databases) register(spec httpapi.DatabaseSpec) registered {
	suffix := "_" + strings.ToLower(strings.ReplaceAll(spec.ID, "-", "_"))
	return registered{DatabaseSpec: spec, Slot: r.cfg.Slot + suffix, Publication: r.cfg.Publication + suffix}
}

var errShuttingDown = &httpapi.DatabaseError{Status: http.StatusServiceUnavailable, Message: "The engine is shutting down."}

func notFound(id string) error {
	return &httpapi.DatabaseError{Status: http.StatusNotFound, Message: "Database " + id + " not found."}
}

func (r *databases) get(id string) (*database, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if id == "" {
		if len(r.added) > 0 {
			return nil, &httpapi.DatabaseError{Status: http.StatusBadRequest,
				Message: "Database ID was not provided and there are multiple databases. Please specify a database ID using the `database_id` query parameter."}
		}
		return r.main, nil
	}
	if id == r.main.id {
		return r.main, nil
	}
	if d := r.added[id]; d != nil {
		return d, nil
	}
	if _, ok := r.specs[id]; ok {
		return nil, &httpapi.DatabaseError{Status: http.StatusServiceUnavailable, Message: "Database " + id + " could not be opened at startup; see the engine log."}
	}
	return nil, notFound(id)
}

// Shapes implements httpapi.Databases.
func (r *databases) Shapes(id string) (*shapes.Manager, error) {
	d, err := r.get(id)
	if err != nil {
		return nil, err
	}
	return d.shapes, nil
}

// stats lists every running database's state for the metrics, the
// engine's own first. It holds mu so that a database being removed is
// not read while its storage closes.
func (r *databases) stats() []metrics.Database {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := []metrics.Database{r.main.stats()}
	for _, id := range slices.Sorted(maps.Keys(r.added)) {
		out = append(out, r.added[id].stats())
	}
	return out
}

// Status implements httpapi.Databases.
func (r *databases) Status(id string) (replication.Status, error) {
	if id == "" {
		return r.main.repl.Status(), nil
	}
	d, err := r.get(id)
	if err != nil {
		return replication.Status{}, err
	}
	return d.repl.Status(), nil
}

// Add implements httpapi.Databases: it checks the database as the engine's
// own is checked at startup, starts replicating it and records it.
func (r *databases) Add(ctx context.Context, spec httpapi.DatabaseSpec) (string, error) {
	bad := func(msg string) (string, error) {
		return "", &httpapi.DatabaseError{Status: http.StatusBadRequest, Message: msg}
	}
	if spec.URL == "" {
		return bad("database_url can't be blank")
	}
	target, err := databaseTarget(spec.URL)
	if err != nil {
		return bad("database_url is invalid: " + err.Error())
	}
	if spec.ID == "" {
		spec.ID = target.id()
	}
	if !databaseIDPattern.MatchString(spec.ID) {
		return bad("database_id must be 1 to 40 letters, digits, '_' or '-'")
	}
	r.admin.Lock()
	defer r.admin.Unlock()
	if r.closed {
		return "", errShuttingDown
	}
	canonical := func(id string) string { return strings.ToLower(strings.ReplaceAll(id, "-", "_")) }
	for id, other := range r.specs {
		if canonical(id) == canonical(spec.ID) {
			return bad("Database " + spec.ID + " already exists.")
		}
		if t, err := databaseTarget(other.URL); err == nil && t == target {
			return bad("The database " + target.String() + " is already in use by another tenant (" + id + ").")
		}
	}
	if canonical(spec.ID) == canonical(r.main.id) {
		return bad("Database " + spec.ID + " already exists.")
	}
	if t, err := databaseTarget(r.cfg.DatabaseURL); err == nil && t == target {
		return bad("The database " + target.String() + " is already in use by another tenant (" + r.main.id + ").")
	}
	reg := r.register(spec)
	for _, name := range []string{reg.Slot, reg.Publication} {
		if len(name) > 63 {
			return bad("database_id " + spec.ID + " is too long: the name " + name + " it gives its slot or publication exceeds PostgreSQL's 63 characters")
		}
	}
	cfg := r.databaseConfig(reg)
	_ = os.RemoveAll(cfg.dir) // left over from an earlier, failed attempt
	log := r.log.With().Str("database_id", spec.ID).Logger()
	d, err := openDatabase(ctx, cfg, true, log)
	if err != nil {
		_ = os.RemoveAll(cfg.dir)
		return bad("Cannot serve database " + spec.ID + ": " + err.Error())
	}
	d.run(r.cfg.Retention)
	if err := waitActive(ctx, d); err != nil {
		r.discard(d, cfg)
		return bad("Cannot serve database " + spec.ID + ": " + err.Error())
	}
	specs := maps.Clone(r.specs)
	specs[spec.ID] = reg
	if err := r.save(specs); err != nil {
		r.discard(d, cfg)
		return "", err
	}
	r.mu.Lock()
	r.specs[spec.ID], r.added[spec.ID] = reg, d
	r.mu.Unlock()
	log.Info().Str("database", target.String()).Str("slot", cfg.slot).Msg("database added")
	return spec.ID, nil
}

// Remove implements httpapi.Databases: it stops serving the database, drops
// its slot and publication and deletes its storage.
func (r *databases) Remove(ctx context.Context, id string) error {
	r.admin.Lock()
	defer r.admin.Unlock()
	if r.closed {
		return errShuttingDown
	}
	if id == r.main.id {
		return &httpapi.DatabaseError{Status: http.StatusBadRequest, Message: "Database " + id + " is the engine's own (DATABASE_URL) and cannot be removed."}
	}
	spec, ok := r.specs[id]
	if !ok {
		return notFound(id)
	}
	specs := maps.Clone(r.specs)
	delete(specs, id)
	if err := r.save(specs); err != nil {
		return err
	}
	r.mu.Lock()
	d := r.added[id]
	delete(r.added, id)
	delete(r.specs, id)
	r.mu.Unlock()
	if d == nil { // never opened since the start: open it to drop its slot
		var err error
		if d, err = openDatabase(ctx, r.databaseConfig(spec), false, r.log.With().Str("database_id", id).Logger()); err != nil {
			r.log.Warn().Err(err).Str("database_id", id).Str("slot", spec.Slot).Str("publication", spec.Publication).
				Msg("database removed, but its slot and publication could not be dropped: drop them by hand, or the slot keeps WAL")
			_ = os.RemoveAll(r.databaseConfig(spec).dir)
		}
	}
	if d != nil {
		r.discard(d, r.databaseConfig(spec))
	}
	r.log.Info().Str("database_id", id).Msg("database removed")
	return nil
}

// discard stops a running database, drops its slot and publication and
// deletes its storage.
func (r *databases) discard(d *database, cfg databaseConfig) {
	d.cancel()
	d.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err := d.repl.Drop(ctx)
	cancel()
	if err != nil {
		d.log.Warn().Err(err).Msg("could not drop the replication slot; drop it by hand or it keeps WAL")
	}
	d.closeStorage()
	if err := os.RemoveAll(cfg.dir); err != nil {
		d.log.Warn().Err(err).Msg("could not delete the database's storage")
	}
}

// waitActive waits until a new database replicates, or says why it does not.
func waitActive(ctx context.Context, d *database) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		st := d.repl.Status()
		switch st.State {
		case replication.StateActive:
			return nil
		case replication.StateWaiting:
			return errors.New(st.Err)
		}
		select {
		case <-ctx.Done():
			return errors.New("replication did not start within 30 s")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// save writes the registry atomically; it holds passwords, so only the
// engine's user may read it.
func (r *databases) save(specs map[string]registered) error {
	list := slices.SortedFunc(maps.Values(specs), func(a, b registered) int { return strings.Compare(a.ID, b.ID) })
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileDurably(r.registryPath(), b); err != nil {
		return fmt.Errorf("saving the database registry: %w", err)
	}
	return nil
}

// writeFileDurably replaces path with data (mode 0600) so that a crash
// leaves the old or the new file, never a torn one.
func writeFileDurably(path string, data []byte) error {
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}

// close stops every added database.
func (r *databases) close() {
	r.admin.Lock()
	defer r.admin.Unlock()
	r.closed = true
	r.mu.Lock()
	added := r.added
	r.added = map[string]*database{}
	r.mu.Unlock()
	for _, d := range added {
		d.stop()
	}
}

// target is the server and database a URL points at, to refuse adding one
// database twice.
type target struct {
	host     string
	port     uint16
	database string
}

func databaseTarget(url string) (target, error) {
	c, err := pgconn.ParseConfig(url)
	if err != nil {
		return target{}, err
	}
	return target{host: strings.ToLower(c.Host), port: c.Port, database: c.Database}, nil
}

func (t target) String() string { return fmt.Sprintf("%s on %s:%d", t.database, t.host, t.port) }

var unsafeIDChars = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// id is the default database_id: the database name made safe.
func (t target) id() string {
	id := unsafeIDChars.ReplaceAllString(t.database, "_")
	if len(id) > 40 {
		id = id[:40]
	}
	return id
}

// addressFamily resolves host names to IPv6 addresses only, or IPv4 only,
// as Electric's DATABASE_USE_IPV6 does. IP literals are used as given.
func addressFamily(ipv6 bool) pgconn.LookupFunc {
	return func(ctx context.Context, host string) ([]string, error) {
		if net.ParseIP(host) != nil {
			return []string{host}, nil
		}
		ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
		if err != nil {
			return nil, err
		}
		var out []string
		for _, ip := range ips {
			if (ip.IP.To4() == nil) == ipv6 {
				out = append(out, ip.IP.String())
			}
		}
		if len(out) == 0 {
			family := "IPv4"
			if ipv6 {
				family = "IPv6"
			}
			return nil, fmt.Errorf("host %s has no %s address (database_use_ipv6 selects the address family)", host, family)
		}
		return out, nil
	}
}
