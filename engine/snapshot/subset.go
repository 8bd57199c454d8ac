package snapshot

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shapelog/shapelog/engine/catalog"
)

// SubsetQuery is a query for some rows of a table, straight from
// PostgreSQL: Electric's subset snapshots.
type SubsetQuery struct {
	// Where are SQL conditions, ANDed ("" entries are skipped).
	Where []string
	// OrderBy is an ORDER BY list ("" = unordered).
	OrderBy string
	// Limit (0 = none) and Offset page the rows.
	Limit, Offset int
}

// Subset is what a subset query saw: PostgreSQL's MVCC snapshot as
// pg_current_snapshot() prints it, and the WAL insert position after it
// (every transaction the snapshot sees committed below it).
type Subset struct {
	MVCC string
	LSN  uint64
}

// QuerySubset runs q on t in one short read-only REPEATABLE READ
// transaction on a snapshot connection (no JIT, statement_timeout), calling
// row with each row's text values in table column order.
func (m *Manager) QuerySubset(ctx context.Context, t *catalog.Table, q SubsetQuery, row func(values [][]byte) error) (*Subset, error) {
	cols := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		cols[i] = pgx.Identifier{c.Name}.Sanitize()
	}
	sql := "SELECT " + strings.Join(cols, ", ") + " FROM " + pgx.Identifier{t.Schema, t.Name}.Sanitize()
	var conds []string
	for _, w := range q.Where {
		if w != "" {
			conds = append(conds, "("+w+")")
		}
	}
	if len(conds) > 0 {
		sql += " WHERE " + strings.Join(conds, " AND ")
	}
	if q.OrderBy != "" {
		sql += " ORDER BY " + q.OrderBy
	}
	if q.Limit > 0 {
		sql += fmt.Sprintf(" LIMIT %d", q.Limit)
	}
	if q.Offset > 0 {
		sql += fmt.Sprintf(" OFFSET %d", q.Offset)
	}
	conn, err := m.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquiring a snapshot connection: %w", err)
	}
	defer conn.Release()
	// One implicit transaction, REPEATABLE READ by the connection's
	// default: the rows are those of the snapshot the first statement
	// prints. The insert position is read after it, so every commit it
	// sees is below it, whatever synchronous_commit says.
	b := &pgconn.Batch{}
	b.ExecParams("SELECT pg_current_snapshot()::text, pg_current_wal_insert_lsn()::text", nil, nil, nil, nil)
	b.ExecParams(sql, nil, nil, nil, nil)
	mrr := conn.Conn().PgConn().ExecBatch(ctx, b)
	var snapText, lsnText string
	var rowErr error
	for i := 0; mrr.NextResult(); i++ {
		res := mrr.ResultReader()
		for res.NextRow() {
			switch {
			case i == 0:
				snapText, lsnText = string(res.Values()[0]), string(res.Values()[1])
			case rowErr == nil:
				rowErr = row(res.Values())
			}
		}
		if _, err := res.Close(); err != nil {
			_ = mrr.Close()
			return nil, err
		}
	}
	if err := mrr.Close(); err != nil {
		return nil, err
	}
	if rowErr != nil {
		return nil, rowErr
	}
	lsn, err := pglogrepl.ParseLSN(lsnText)
	if err != nil {
		return nil, err
	}
	return &Subset{MVCC: snapText, LSN: uint64(lsn)}, nil
}
