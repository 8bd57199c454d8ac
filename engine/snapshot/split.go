package snapshot

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/shapelog/shapelog/engine/catalog"
)

// Splitting a table into key ranges samples it: about splitSample rows,
// whole blocks at a time, so that the sample costs a few hundred block
// reads whatever the table's size (a table estimated smaller is read
// whole). Tables of under splitMinRows rows (as the sample tells), or
// samples too small to give each range splitMinPerRange sampled keys, are
// not worth splitting further.
const (
	splitSample      = 15_000
	splitMinRows     = 20_000
	splitMinPerRange = 100
)

// SplitKeys returns up to n-1 strictly increasing keys of table t (which
// has a primary key) that divide it into about equal ranges: the first
// range up to and including the first key, the next up to the second, the
// last after the last key. Keys are text values in the order pages are
// read in. A small table gets none (one range). The keys come from a block
// sample (TABLESAMPLE SYSTEM) sized by the planner's row estimate, which
// is pg_class.reltuples scaled to the table's current size (or, never
// analyzed, its size); it locks nothing a SELECT does not.
func (m *Manager) SplitKeys(ctx context.Context, t *catalog.Table, n int) ([][]string, error) {
	if !Keyed(t) {
		return nil, fmt.Errorf("table %s.%s has no primary key checked row by row", t.Schema, t.Name)
	}
	if n <= 1 {
		return nil, nil
	}
	conn, err := m.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquiring a snapshot connection: %w", err)
	}
	defer conn.Release()
	table := pgx.Identifier{t.Schema, t.Name}.Sanitize()
	var plan []struct {
		Plan struct {
			Rows float64 `json:"Plan Rows"`
		} `json:"Plan"`
	}
	var planText string
	if err := conn.QueryRow(ctx, "EXPLAIN (FORMAT JSON) SELECT FROM "+table).Scan(&planText); err != nil {
		return nil, fmt.Errorf("estimating the rows of %s: %w", table, err)
	}
	if err := json.Unmarshal([]byte(planText), &plan); err != nil || len(plan) == 0 {
		return nil, fmt.Errorf("estimating the rows of %s: unexpected plan %q", table, planText)
	}
	percent := min(100, 100*splitSample/max(plan[0].Plan.Rows, 1))
	keys := make([]string, len(t.Key))
	for i, k := range t.Key {
		keys[i] = pgx.Identifier{t.Columns[k].Name}.Sanitize()
	}
	q := fmt.Sprintf("SELECT %[1]s FROM %[2]s TABLESAMPLE SYSTEM (%[3]s) ORDER BY %[1]s",
		strings.Join(keys, ", "), table, strconv.FormatFloat(percent, 'f', -1, 64))
	// Text values, as pages read keys (queryPage).
	res := conn.Conn().PgConn().ExecParams(ctx, q, nil, nil, nil, nil)
	var sample [][]string
	for res.NextRow() {
		k := make([]string, len(keys))
		for i, v := range res.Values() {
			k[i] = string(v)
		}
		sample = append(sample, k)
	}
	if _, err := res.Close(); err != nil {
		return nil, fmt.Errorf("sampling the keys of %s: %w", table, err)
	}
	if float64(len(sample))*100/percent < splitMinRows {
		return nil, nil
	}
	return splitSampled(sample, n), nil
}

// splitSampled picks the keys that split sample (distinct keys in key
// order) into up to n ranges of about equal size, each with at least
// splitMinPerRange of the sampled keys.
func splitSampled(sample [][]string, n int) [][]string {
	n = min(n, len(sample)/splitMinPerRange)
	var splits [][]string
	for i := 1; i < n; i++ {
		splits = append(splits, sample[i*len(sample)/n-1])
	}
	return splits
}
