package importer

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/shapelog/shapelog/engine/catalog"
)

// checkTable is the table CheckWrite creates, and rolls back, in each
// schema.
const checkTable = "_shapelog_write_check"

// CheckWrite proves that imports can write into the tables of each API
// schema name, as an import would: it creates the schema if needed, a
// table in it, and a row, in one transaction that it then rolls back, so
// nothing is left behind (no table a source would discover). A missing
// privilege is PostgreSQL's 42501, which the HTTP layer answers with 403.
func (im *Importer) CheckWrite(ctx context.Context, schemas []string) error {
	tx, err := im.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	for _, schema := range schemas {
		if why := catalog.ReservedSchema(schema); why != "" {
			return badRequest("InvalidTableName", "Schema %q is not one imports write to: it is reserved: %s", schema, why)
		}
		t, err := parseTableName(catalog.APIName(schema, checkTable))
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{t.schema}.Sanitize()); err != nil {
			return during(explain(err), "creating schema %s", t.schema)
		}
		if _, err := tx.Exec(ctx, "CREATE TABLE "+t.ident()+" (id int PRIMARY KEY)"); err != nil {
			return during(explain(err), "creating a table in schema %s", t.schema)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO "+t.ident()+" VALUES (1)"); err != nil {
			return during(explain(err), "inserting into a table of schema %s", t.schema)
		}
	}
	return nil // rolled back
}
