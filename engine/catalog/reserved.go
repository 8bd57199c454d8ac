package catalog

import "strings"

// EngineSchema is the schema holding the engine's own tables (the
// importer's idempotency keys).
const EngineSchema = "shapelog"

// ReservedSchema says why schema may not hold tables the APIs write or
// serve (a phrase to follow "schema X is reserved: "), or "" when it may.
// Reserved are the engine's own schema and PostgreSQL's system schemas:
// information_schema and every schema whose name starts with pg_
// (pg_catalog, pg_toast, pg_temp, pg_temp_N, pg_toast_temp_N…). Names are
// compared as PostgreSQL compares quoted identifiers: exactly.
func ReservedSchema(schema string) string {
	switch {
	case schema == EngineSchema:
		return "it holds the engine's own tables"
	case schema == "information_schema":
		return "it is PostgreSQL's SQL-standard system catalog"
	case strings.HasPrefix(schema, "pg_"):
		return "names starting with pg_ belong to PostgreSQL's system catalogs and temporary tables"
	}
	return ""
}
