package shapes

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/shapelog/shapelog/engine/catalog"
	"github.com/shapelog/shapelog/engine/snapshot"
	"github.com/shapelog/shapelog/engine/where"
)

// SubsetRequest is a subset snapshot: Electric's subset__* parameters (or
// the body of POST /v1/shape).
type SubsetRequest struct {
	Where   string
	Params  map[string]string
	OrderBy string
	// Limit (0 = none) and Offset page the rows; both need OrderBy.
	Limit, Offset int
}

// SubsetError is a subset parameter the engine cannot accept; Electric
// reports it as {"errors": {"subset": {Field: [Msg]}}}.
type SubsetError struct {
	Field string
	Msg   string
}

func (e *SubsetError) Error() string { return "subset " + e.Field + ": " + e.Msg }

// SubsetResult is a subset snapshot: its rows as insert messages carrying
// Mark, and the MVCC snapshot and WAL position they were read at, with
// which the client merges them with the shape's log.
type SubsetResult struct {
	Data       []byte // messages, comma-separated
	Xmin, Xmax string
	Xip        []string
	Mark       int32
	LSN        uint64
}

// MaxSubsetBytes bounds a subset snapshot's rendered rows, which are
// answered at once.
const MaxSubsetBytes = 64 << 20

// Subset reads the rows of d that also match sub straight from PostgreSQL.
func (m *Manager) Subset(ctx context.Context, d *Definition, sub SubsetRequest) (*SubsetResult, error) {
	if (sub.Limit > 0 || sub.Offset > 0) && strings.TrimSpace(sub.OrderBy) == "" {
		return nil, &SubsetError{"order_by", "order_by is required when limit or offset is present"}
	}
	q := snapshot.SubsetQuery{Where: []string{d.Where}, Limit: sub.Limit, Offset: sub.Offset}
	if strings.TrimSpace(sub.Where) != "" {
		f, err := where.Parse(sub.Where, sub.Params, d.Table.Columns)
		if err != nil {
			return nil, &SubsetError{"where", err.Error()}
		}
		if name := outsideQueryable(d, f.Columns()); name != "" {
			return nil, &SubsetError{"where", "unknown reference " + name + ": only queryable_columns may be used"}
		}
		q.Where = append(q.Where, f.SQL())
	}
	if strings.TrimSpace(sub.OrderBy) != "" {
		order, cols, err := parseOrderBy(sub.OrderBy, d.Table.Columns)
		if err != nil {
			return nil, &SubsetError{"order_by", err.Error()}
		}
		if name := outsideQueryable(d, cols); name != "" {
			return nil, &SubsetError{"order_by", "unknown reference " + name + ": only queryable_columns may be used"}
		}
		q.OrderBy = order
	}
	enc := newEncoder(d)
	res := &SubsetResult{Mark: rand.Int32()}
	var key []byte
	seen, err := m.snaps.QuerySubset(ctx, d.Table, q, func(values [][]byte) error {
		if len(res.Data) > MaxSubsetBytes {
			return &SubsetError{"limit", fmt.Sprintf("the subset is larger than %d MiB: page it with limit and order_by", MaxSubsetBytes>>20)}
		}
		if len(res.Data) > 0 {
			res.Data = append(res.Data, ',')
		}
		key = d.Table.AppendKey(key[:0], values)
		res.Data = enc.appendSubsetRow(res.Data, key, values, res.Mark)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading a subset of %s: %w", pgx.Identifier{d.Table.Schema, d.Table.Name}.Sanitize(), err)
	}
	parts := strings.SplitN(seen.MVCC, ":", 3)
	if len(parts) != 3 {
		return nil, fmt.Errorf("unexpected snapshot %q", seen.MVCC)
	}
	res.Xmin, res.Xmax, res.LSN = parts[0], parts[1], seen.LSN
	res.Xip = []string{}
	if parts[2] != "" {
		res.Xip = strings.Split(parts[2], ",")
	}
	return res, nil
}

// outsideQueryable names the first of cols that d's queryable columns do
// not allow, or "".
func outsideQueryable(d *Definition, cols []int) string {
	for _, c := range cols {
		if d.Queryable != nil && !slices.Contains(d.Queryable, c) {
			return d.Table.Columns[c].Name
		}
	}
	return ""
}

// parseOrderBy checks an ORDER BY list of columns, each with an optional
// ASC/DESC and NULLS FIRST/LAST, and returns it with the columns quoted,
// and the columns it uses.
func parseOrderBy(s string, cols []catalog.Column) (string, []int, error) {
	const prefix = "SELECT 1 ORDER BY "
	tree, err := pg_query.Parse(prefix + s)
	if err != nil {
		return "", nil, errors.New("invalid ORDER BY: " + err.Error())
	}
	sel := tree.GetStmts()
	if len(sel) != 1 || sel[0].GetStmt().GetSelectStmt() == nil || len(sel[0].GetStmt().GetSelectStmt().GetSortClause()) == 0 {
		return "", nil, errors.New("invalid ORDER BY: give a comma-separated list of columns, each optionally followed by ASC or DESC and NULLS FIRST or NULLS LAST")
	}
	stmt := sel[0].GetStmt().GetSelectStmt()
	if stmt.GetLimitCount() != nil || stmt.GetLimitOffset() != nil || len(stmt.GetLockingClause()) > 0 {
		return "", nil, errors.New("invalid ORDER BY: only columns, directions and NULLS FIRST/LAST are allowed")
	}
	var out []string
	var used []int
	for _, item := range stmt.GetSortClause() {
		sb := item.GetSortBy()
		ref := sb.GetNode().GetColumnRef()
		if sb == nil || ref == nil || len(ref.GetFields()) != 1 || ref.GetFields()[0].GetString_() == nil || len(sb.GetUseOp()) > 0 {
			return "", nil, errors.New("invalid ORDER BY: only column names can be ordered by")
		}
		name := ref.GetFields()[0].GetString_().GetSval()
		i := slices.IndexFunc(cols, func(c catalog.Column) bool { return c.Name == name })
		if i < 0 {
			return "", nil, errors.New("unknown reference " + name)
		}
		term := pgx.Identifier{name}.Sanitize()
		switch sb.GetSortbyDir() {
		case pg_query.SortByDir_SORTBY_ASC:
			term += " ASC"
		case pg_query.SortByDir_SORTBY_DESC:
			term += " DESC"
		}
		switch sb.GetSortbyNulls() {
		case pg_query.SortByNulls_SORTBY_NULLS_FIRST:
			term += " NULLS FIRST"
		case pg_query.SortByNulls_SORTBY_NULLS_LAST:
			term += " NULLS LAST"
		}
		out = append(out, term)
		used = append(used, i)
	}
	return strings.Join(out, ", "), used, nil
}
