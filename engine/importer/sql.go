package importer

import (
	"strings"

	"github.com/jackc/pgx/v5"
)

// The SQL the importer runs, built by pure functions of their inputs (see
// sql_test.go's golden files). table is a qualified, quoted table name
// (tableName.ident); column names are given unquoted.

// stageTable is the temporary table a dedup stream's records are copied
// into before the merge.
const stageTable = "_shapelog_stage"

// ident quotes one identifier.
func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

// identList is names quoted and joined with commas.
func identList(names []string) string {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = ident(n)
	}
	return strings.Join(quoted, ", ")
}

// columnNames are the names of cols.
func columnNames(cols []column) []string {
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.name
	}
	return names
}

// columnDefs are cols as a CREATE TABLE's column definitions.
func columnDefs(cols []column) []string {
	defs := make([]string, len(cols))
	for i, c := range cols {
		defs[i] = ident(c.name) + " " + c.typ
	}
	return defs
}

// createTableSQL creates a table with cols.
func createTableSQL(table string, cols []column) string {
	return "CREATE TABLE " + table + " (" + strings.Join(columnDefs(cols), ", ") + ")"
}

// stageTableSQL creates the staging table for records with cols: each
// record's sequence in the request and whether it deletes, then its values.
func stageTableSQL(cols []column) string {
	defs := append([]string{"_shapelog_seq bigint", "_shapelog_deleted boolean"}, columnDefs(cols)...)
	return "CREATE TEMP TABLE " + stageTable + " (" + strings.Join(defs, ", ") + ") ON COMMIT DROP"
}

// copySQL copies rows of cols into table, or with staged into the staging
// table, preceded by the sequence and deleted flag.
func copySQL(table string, cols []string, staged bool) string {
	if staged {
		return "COPY " + stageTable + " (_shapelog_seq, _shapelog_deleted, " + identList(cols) + ") FROM STDIN"
	}
	return "COPY " + table + " (" + identList(cols) + ") FROM STDIN"
}

// addColumnSQL adds a column of type typ.
func addColumnSQL(table, col, typ string) string {
	return "ALTER TABLE " + table + " ADD COLUMN " + ident(col) + " " + typ
}

// alterTypeSQL changes a column's type from from to to, converting its
// values: to jsonb as JSON, bytea back to the base64 text it was imported
// from, a provisional column (of an empty table) through text, anything
// else by a cast.
func alterTypeSQL(table, col, from, to string, provisional bool) string {
	c := ident(col)
	var using string
	switch {
	case to == typeJSONB:
		using = "to_jsonb(" + c + ")"
	case to == typeText && normalize(from) == typeBytea:
		using = "translate(encode(" + c + ", 'base64'), E'\\n', '')"
	case provisional:
		using = c + "::text::" + to
	default:
		using = c + "::" + to
	}
	return "ALTER TABLE " + table + " ALTER COLUMN " + c + " TYPE " + to + " USING " + using
}

// createKeyIndexSQL builds t's key index on def (see indexDef), at once
// or without blocking writers (concurrently).
func createKeyIndexSQL(t tableName, def string, concurrently bool) string {
	how := ""
	if concurrently {
		how = "CONCURRENTLY "
	}
	return "CREATE UNIQUE INDEX " + how + ident(indexName(t)) + " ON " + t.ident() + " (" + def + ")"
}

// dropKeyIndexSQL drops t's key index, at once or, if it exists, without
// blocking writers (concurrently).
func dropKeyIndexSQL(t tableName, concurrently bool) string {
	how := ""
	if concurrently {
		how = "CONCURRENTLY IF EXISTS "
	}
	return "DROP INDEX " + how + pgx.Identifier{t.schema, indexName(t)}.Sanitize()
}

// insertSQL inserts the staged records as they are.
func insertSQL(table string, cols []string) string {
	list := identList(cols)
	return "INSERT INTO " + table + " (" + list + ") SELECT " + list + " FROM " + stageTable
}

// mergeSQL upserts the newest record per key and deletes the keys whose
// newest record is a CDC delete, in one statement. A record replaces the
// whole row, as the newest version of a document does: the table's columns
// the records do not carry (others) become NULL.
func mergeSQL(table string, key []keyPath, cols, others []string) string {
	return mergeStatement(table, key, cols, others, false)
}

// upsertSQL is mergeSQL for staged records without deletes or repeated
// keys: a plain upsert.
func upsertSQL(table string, key []keyPath, cols, others []string) string {
	return mergeStatement(table, key, cols, others, true)
}

func mergeStatement(table string, key []keyPath, cols, others []string, plain bool) string {
	keys := make([]string, len(key))
	match := make([]string, len(key))
	target := make([]string, len(key))
	keyCols := map[string]bool{}
	for i, p := range key {
		keys[i] = p.exprOn("")
		match[i] = p.exprOn("t") + " = " + p.exprOn("l")
		target[i] = keys[i]
		if len(p) > 1 {
			target[i] = "(" + keys[i] + ")"
		} else {
			keyCols[columnFor(p[0])] = true
		}
	}
	var sets []string
	for _, c := range cols {
		if !keyCols[c] {
			sets = append(sets, ident(c)+" = EXCLUDED."+ident(c))
		}
	}
	for _, c := range others {
		sets = append(sets, ident(c)+" = NULL")
	}
	conflict := "DO NOTHING"
	if len(sets) > 0 {
		conflict = "DO UPDATE SET " + strings.Join(sets, ", ")
	}
	list := identList(cols)
	keyList := strings.Join(keys, ", ")
	if plain {
		return "INSERT INTO " + table + " (" + list + ") SELECT " + list + " FROM " + stageTable + " " +
			"ON CONFLICT (" + strings.Join(target, ", ") + ") " + conflict
	}
	return "WITH l AS (SELECT DISTINCT ON (" + keyList + ") * FROM " + stageTable + " ORDER BY " + keyList + ", _shapelog_seq DESC), " +
		"d AS (DELETE FROM " + table + " t USING l WHERE l._shapelog_deleted AND " + strings.Join(match, " AND ") + ") " +
		"INSERT INTO " + table + " (" + list + ") SELECT " + list + " FROM l WHERE NOT l._shapelog_deleted " +
		"ON CONFLICT (" + strings.Join(target, ", ") + ") " + conflict
}
