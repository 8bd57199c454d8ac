package replication

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shapelog/shapelog/engine/catalog"
)

// ConfigError is a problem only the operator can fix (wal_level, grants,
// settings); retrying will not help until they do.
type ConfigError struct{ Msg string }

func (e *ConfigError) Error() string { return e.Msg }

// checkServer verifies the server can do logical replication for us.
func checkServer(ctx context.Context, conn *pgx.Conn, slot string) error {
	var walLevel string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&walLevel); err != nil {
		return err
	}
	if walLevel != "logical" {
		return &ConfigError{fmt.Sprintf("wal_level is %q but shapelog needs logical replication: run ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL", walLevel)}
	}
	var user string
	var canReplicate bool
	if err := conn.QueryRow(ctx, "SELECT current_user, rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&user, &canReplicate); err != nil {
		return err
	}
	if !canReplicate {
		return &ConfigError{fmt.Sprintf("role %q may not use replication: run ALTER ROLE %s REPLICATION; (or connect as a role that has it)", user, pgx.Identifier{user}.Sanitize())}
	}
	var slots, used int
	if err := conn.QueryRow(ctx, "SELECT current_setting('max_replication_slots')::int, (SELECT count(*) FROM pg_replication_slots)").Scan(&slots, &used); err != nil {
		return err
	}
	if slots == 0 {
		return &ConfigError{"max_replication_slots is 0: set it to at least 4 (one for the engine plus one per concurrent snapshot) and restart PostgreSQL"}
	}
	// Slot names are per cluster: a slot of this name on another database
	// would make creating ours fail for ever.
	var otherDB string
	err := conn.QueryRow(ctx, "SELECT database FROM pg_replication_slots WHERE slot_name = $1 AND database IS DISTINCT FROM current_database()", slot).Scan(&otherDB)
	if err == nil {
		return &ConfigError{fmt.Sprintf("replication slot %q already belongs to database %q (slot names are per cluster): give this engine its own --slot and --publication", slot, otherDB)}
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	return nil
}

// lockKey is the advisory-lock key that marks a slot as owned by a running
// engine.
func lockKey(slot string) int64 {
	h := fnv.New64a()
	h.Write([]byte("shapelog slot " + slot))
	return int64(h.Sum64())
}

// acquireSlotLock takes the advisory lock for the slot on conn, which must
// stay open for as long as the engine uses the slot.
func acquireSlotLock(ctx context.Context, conn *pgx.Conn, slot string) error {
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", lockKey(slot)).Scan(&ok); err != nil {
		return err
	}
	if ok {
		return nil
	}
	var pid int
	_ = conn.QueryRow(ctx, `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND ((classid::bigint << 32) | objid::bigint) = $1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`, lockKey(slot)).Scan(&pid)
	return &ConfigError{fmt.Sprintf("replication slot %q is in use by another shapelog engine (backend pid %d holds its lock): stop that engine or give this one its own --slot and --publication", slot, pid)}
}

// requestedReconciles counts the calls of Reconcile, in every replicator
// of the process.
var requestedReconciles atomic.Int64

// RequestedReconciles is how many reconciles callers have asked for
// (Reconcile, by every replicator of this process); the replicator's own,
// at the start of each session and periodically, are not counted. Tests
// use it to show which requests do write-side work.
func RequestedReconciles() int64 { return requestedReconciles.Load() }

// Reconcile makes the publication hold exactly the tables the filter
// selects, with REPLICA IDENTITY FULL. FULL is needed because (1) updates
// that leave a TOASTed column unchanged do not carry its value, and the old
// row FULL provides is the only place to take it from; (2) tables without a
// primary key cannot publish updates and deletes at all otherwise (PostgreSQL
// rejects the writes); (3) where-clause shapes need the old row to see rows
// move out. Tables it cannot fix (not the owner) are skipped with an error
// naming the statement an owner should run.
//
// It serializes with every other reconcile and may alter tables and the
// publication: readers that only need the published tables use Tables,
// Current or CurrentTable, and reconcile only for a table those do not
// have.
func (r *Replicator) Reconcile(ctx context.Context) ([]*catalog.Table, error) {
	requestedReconciles.Add(1)
	return r.reconcile(ctx)
}

// reconcile is Reconcile, uncounted: the replicator's own.
func (r *Replicator) reconcile(ctx context.Context) ([]*catalog.Table, error) {
	r.reconcileMu.Lock()
	defer r.reconcileMu.Unlock()
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	// Don't queue behind long transactions for ALTER TABLE; reset before
	// the connection goes back to the pool.
	if _, err := conn.Exec(ctx, "SET lock_timeout = '10s'"); err != nil {
		return nil, err
	}
	defer func() { _, _ = conn.Exec(context.Background(), "RESET lock_timeout") }()
	pub := pgx.Identifier{r.cfg.Publication}.Sanitize()
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", r.cfg.Publication).Scan(&exists); err != nil {
		return nil, err
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE PUBLICATION "+pub+" WITH (publish = 'insert, update, delete, truncate', publish_via_partition_root = true)"); err != nil {
			return nil, explain(err, "creating publication "+r.cfg.Publication)
		}
		r.log.Info().Str("publication", r.cfg.Publication).Msg("created publication")
	}
	var tables []*catalog.Table
	if !r.cfg.ShapesOnly {
		if tables, err = catalog.LoadTables(ctx, conn, r.types, r.cfg.Filter); err != nil {
			return nil, err
		}
	}
	selected := len(tables)
	// Tables only shapes need are published too, but not exported.
	for _, oid := range r.shapeTables() {
		if slices.ContainsFunc(tables, func(t *catalog.Table) bool { return t.OID == oid }) {
			continue
		}
		t, err := catalog.LoadTable(ctx, conn, r.types, oid)
		if err != nil {
			continue // dropped meanwhile: its shapes are invalidated by the stream
		}
		tables = append(tables, t)
	}
	published, err := r.publicationTables(ctx, conn)
	if err != nil {
		return nil, err
	}
	var ready []*catalog.Table
	wanted := map[uint32]bool{}
	ok := map[uint32]bool{}
	skipped := map[uint32]bool{}
	for i, t := range tables {
		wanted[t.OID] = true
		name := pgx.Identifier{t.Schema, t.Name}.Sanitize()
		if t.ReplicaIdentity != 'f' {
			if _, err := conn.Exec(ctx, "ALTER TABLE "+name+" REPLICA IDENTITY FULL"); err != nil {
				r.log.Error().Err(explain(err, "")).Str("table", name).
					Str("fix", "ALTER TABLE "+name+" REPLICA IDENTITY FULL;").
					Msg("table skipped: cannot set REPLICA IDENTITY FULL (run the fix as the table's owner)")
				skipped[t.OID] = true
				continue
			}
			t.ReplicaIdentity = 'f'
		}
		if !published[t.OID] {
			if _, err := conn.Exec(ctx, "ALTER PUBLICATION "+pub+" ADD TABLE "+name); err != nil {
				r.log.Error().Err(explain(err, "")).Str("table", name).
					Str("fix", "ALTER PUBLICATION "+pub+" ADD TABLE "+name+";").
					Msg("table skipped: cannot add it to the publication")
				skipped[t.OID] = true
				continue
			}
			r.log.Info().Str("table", name).Msg("table published")
		}
		ok[t.OID] = true
		if i < selected {
			ready = append(ready, t)
		}
	}
	for oid := range published {
		if wanted[oid] {
			continue
		}
		var name string
		if err := conn.QueryRow(ctx, "SELECT $1::oid::regclass::text", oid).Scan(&name); err != nil {
			continue
		}
		if _, err := conn.Exec(ctx, "ALTER PUBLICATION "+pub+" DROP TABLE "+name); err != nil {
			r.log.Warn().Err(err).Str("table", name).Msg("could not drop table from publication")
			continue
		}
		r.log.Info().Str("table", name).Msg("table unpublished: no longer selected")
	}
	r.tables.Store(&ready)
	r.published.Store(&ok)
	r.skipped.Store(&skipped)
	return ready, nil
}

// publicationTables returns the OIDs of the tables in the publication.
func (r *Replicator) publicationTables(ctx context.Context, q catalog.Querier) (map[uint32]bool, error) {
	published := map[uint32]bool{}
	rows, err := q.Query(ctx, `SELECT pr.prrelid FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid WHERE p.pubname = $1`, r.cfg.Publication)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var oid uint32
		if err := rows.Scan(&oid); err != nil {
			return nil, err
		}
		published[oid] = true
	}
	return published, rows.Err()
}

// Current returns the tables the filter selects as the catalog has them
// now (new tables, new columns), for readers that must not miss a change
// made just before they ask. It reads the catalog without the reconcile
// lock and changes nothing, unless a selected table is not in the
// publication with REPLICA IDENTITY FULL yet (created since the last
// reconcile, say): then it reconciles, which publishes it, and returns what
// Reconcile does. A table the last reconcile had to skip (see Reconcile)
// is left out without another try; the periodic reconcile retries it.
func (r *Replicator) Current(ctx context.Context) ([]*catalog.Table, error) {
	if r.cfg.ShapesOnly {
		return []*catalog.Table{}, nil
	}
	known := r.tables.Load()
	tables, err := catalog.LoadTables(ctx, r.pool, r.types, r.cfg.Filter)
	if err != nil {
		return nil, err
	}
	published, err := r.publicationTables(ctx, r.pool)
	if err != nil {
		return nil, err
	}
	skipped := r.skipped.Load()
	ready := make([]*catalog.Table, 0, len(tables))
	for _, t := range tables {
		switch {
		case published[t.OID] && t.ReplicaIdentity == 'f':
			ready = append(ready, t)
		case skipped != nil && (*skipped)[t.OID]:
		default:
			return r.Reconcile(ctx)
		}
	}
	// Later readers of Tables (the next pages of a snapshot) see these
	// definitions, unless a reconcile stored its own meanwhile.
	r.tables.CompareAndSwap(known, &ready)
	return ready, nil
}

// CurrentTable returns the published table with OID oid (one of Tables) as
// the catalog has it now, read without the reconcile lock and changing
// nothing. It returns nil when the table is not published as the last
// reconcile left it: not among Tables, dropped, renamed, or no longer in
// the publication with REPLICA IDENTITY FULL; the caller reconciles then.
func (r *Replicator) CurrentTable(ctx context.Context, oid uint32) (*catalog.Table, error) {
	known := r.tables.Load()
	i := slices.IndexFunc(*known, func(t *catalog.Table) bool { return t.OID == oid })
	if i < 0 {
		return nil, nil
	}
	t, err := catalog.LoadTable(ctx, r.pool, r.types, oid)
	if errors.Is(err, catalog.ErrTableNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if was := (*known)[i]; t.Schema != was.Schema || t.Name != was.Name || t.ReplicaIdentity != 'f' {
		return nil, nil
	}
	var in bool
	if err := r.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid WHERE p.pubname = $1 AND pr.prrelid = $2)`,
		r.cfg.Publication, oid).Scan(&in); err != nil {
		return nil, err
	}
	if !in {
		return nil, nil
	}
	ready := slices.Clone(*known)
	ready[i] = t
	r.tables.CompareAndSwap(known, &ready)
	return t, nil
}

func (r *Replicator) shapeTables() []uint32 {
	r.shapeMu.Lock()
	defer r.shapeMu.Unlock()
	return r.shapeOIDs
}

// SetShapeTables sets the tables shapes need besides the selected ones.
// Tables not yet published are published, with REPLICA IDENTITY FULL, before
// it returns (an error says why one could not be); tables no longer needed
// leave the publication at the next reconcile.
func (r *Replicator) SetShapeTables(ctx context.Context, oids []uint32) error {
	r.shapeMu.Lock()
	r.shapeOIDs = slices.Clone(oids)
	r.shapeMu.Unlock()
	published := r.published.Load()
	missing := slices.ContainsFunc(oids, func(oid uint32) bool { return published == nil || !(*published)[oid] })
	if !missing {
		return nil
	}
	if _, err := r.Reconcile(ctx); err != nil {
		return err
	}
	published = r.published.Load()
	for _, oid := range oids {
		if !(*published)[oid] {
			return fmt.Errorf("table with OID %d could not be published (see the engine log for the statement an owner must run)", oid)
		}
	}
	return nil
}

// explain adds what to do to the PostgreSQL errors operators hit.
func explain(err error, doing string) error {
	var pgErr *pgconn.PgError
	if doing != "" {
		doing += ": "
	}
	if !errors.As(err, &pgErr) {
		return fmt.Errorf("%s%w", doing, err)
	}
	switch pgErr.Code {
	case "42501":
		return &ConfigError{fmt.Sprintf("%spermission denied (%s): the engine's role needs CREATE on the database and ownership of the published tables, or an administrator must run the statement for it", doing, pgErr.Message)}
	case "53400", "55000":
		if strings.Contains(pgErr.Message, "replication slot") {
			return &ConfigError{fmt.Sprintf("%s%s: raise max_replication_slots (and max_wal_senders) and restart PostgreSQL", doing, pgErr.Message)}
		}
	case "55P03":
		return fmt.Errorf("%stimed out waiting for a lock (%s): a long transaction holds the table; will retry", doing, pgErr.Message)
	}
	return fmt.Errorf("%s%w", doing, err)
}

// Drop removes the replication slot and the publication, for a database the
// engine stops serving. Call it after Run has returned; the slot may stay
// active for a moment while its walsender exits, so Drop waits for that.
func (r *Replicator) Drop(ctx context.Context) error {
	for {
		_, err := r.pool.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()", r.cfg.Slot)
		var pgErr *pgconn.PgError
		if err == nil {
			break
		} else if !errors.As(err, &pgErr) || pgErr.Code != "55006" { // object_in_use: still active
			return explain(err, "dropping replication slot "+r.cfg.Slot)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("dropping replication slot %s: still in use: %w", r.cfg.Slot, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	if _, err := r.pool.Exec(ctx, "DROP PUBLICATION IF EXISTS "+pgx.Identifier{r.cfg.Publication}.Sanitize()); err != nil {
		return explain(err, "dropping publication "+r.cfg.Publication)
	}
	r.log.Info().Str("slot", r.cfg.Slot).Str("publication", r.cfg.Publication).Msg("dropped replication slot and publication")
	return nil
}
