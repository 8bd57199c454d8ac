package importer

import (
	"context"
	"sort"

	"github.com/jackc/pgx/v5"
)

// GenerationColumn holds the sync generation (Airbyte's generation_id) a
// row was written by; overwrite syncs delete the other generations once
// the new one is complete.
const GenerationColumn = "_airbyte_generation_id"

// DeleteOtherGenerations finishes overwrite syncs: in one transaction, it
// deletes from each table every row whose GenerationColumn is not the
// table's kept generation (all rows when the table has no such column).
// Missing tables are skipped: a sync that wrote nothing leaves nothing.
// DELETE rather than TRUNCATE keeps the old rows readable by concurrent
// readers until the commit.
func (im *Importer) DeleteOtherGenerations(ctx context.Context, keep map[string]int64) (map[string]int64, error) {
	names := make([]string, 0, len(keep))
	for n := range keep {
		names = append(names, n)
	}
	sort.Strings(names)
	tables, err := parseNames(names)
	if err != nil {
		return nil, err
	}
	generation := map[string]int64{}
	for _, n := range names {
		t, _ := parseTableName(n)
		generation[t.ident()] = keep[n]
	}
	tx, err := im.pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.Background())
	deleted := map[string]int64{}
	for _, t := range tables {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockKey(t)); err != nil {
			return nil, during(err, "locking table %s", t.ident())
		}
		var exists, hasColumn bool
		err := tx.QueryRow(ctx, `
			SELECT to_regclass($1) IS NOT NULL,
			       EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2 AND NOT attisdropped)`,
			t.ident(), GenerationColumn).Scan(&exists, &hasColumn)
		if err != nil {
			return nil, during(err, "reading the columns of %s", t.ident())
		}
		if !exists {
			continue
		}
		sql := "DELETE FROM " + t.ident()
		var args []any
		if hasColumn {
			sql += " WHERE " + pgx.Identifier{GenerationColumn}.Sanitize() + " IS DISTINCT FROM $1"
			args = append(args, generation[t.ident()])
		}
		tag, err := tx.Exec(ctx, sql, args...)
		if err != nil {
			return nil, during(explain(err), "deleting other generations from %s", t.ident())
		}
		deleted[t.api] = tag.RowsAffected()
	}
	return deleted, during(tx.Commit(ctx), "committing the deletes")
}
