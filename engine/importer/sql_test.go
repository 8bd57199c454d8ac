package importer

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// golden compares got with testdata/name.golden, or with -update writes it.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to create it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("%s differs from %s:\n--- got\n%s\n--- want\n%s", t.Name(), path, got, want)
	}
}

// sqlCases renders each statement under a heading, one file per builder.
func sqlCases(cases ...[2]string) string {
	var b strings.Builder
	for _, c := range cases {
		b.WriteString("-- " + c[0] + "\n" + c[1] + ";\n\n")
	}
	return b.String()
}

var (
	sqlTable  = tableName{api: `s."odd ""name"""`, schema: "s", name: `odd "name"`}
	sqlCols   = []column{{name: "id", typ: "bigint", typed: true}, {name: "Value", typ: "text", typed: true}, {name: "doc", typ: "jsonb"}}
	sqlNames  = []string{"id", "Value", "doc"}
	plainKey  = []keyPath{{"id"}}
	nestedKey = []keyPath{{"doc", "user", "it's"}, {"id"}}
)

func TestMergeSQLGolden(t *testing.T) {
	table := sqlTable.ident()
	golden(t, "merge", sqlCases(
		[2]string{"merge: one key column, a column the records lack", mergeSQL(table, plainKey, sqlNames, []string{"gone"})},
		[2]string{"merge: a nested key", mergeSQL(table, nestedKey, sqlNames, nil)},
		[2]string{"merge: only key columns (nothing to update)", mergeSQL(table, plainKey, []string{"id"}, nil)},
		[2]string{"upsert: one key column, a column the records lack", upsertSQL(table, plainKey, sqlNames, []string{"gone"})},
		[2]string{"upsert: a nested key", upsertSQL(table, nestedKey, sqlNames, nil)},
		[2]string{"upsert: only key columns", upsertSQL(table, plainKey, []string{"id"}, nil)},
		[2]string{"insert", insertSQL(table, sqlNames)},
	))
}

func TestLoadSQLGolden(t *testing.T) {
	table := sqlTable.ident()
	golden(t, "load", sqlCases(
		[2]string{"create table", createTableSQL(table, sqlCols)},
		[2]string{"create table without columns", createTableSQL(table, nil)},
		[2]string{"staging table", stageTableSQL(sqlCols)},
		[2]string{"copy into the table", copySQL(table, sqlNames, false)},
		[2]string{"copy into the staging table", copySQL(table, sqlNames, true)},
	))
}

func TestDDLSQLGolden(t *testing.T) {
	table := sqlTable.ident()
	golden(t, "ddl", sqlCases(
		[2]string{"add a column", addColumnSQL(table, `new "col"`, "numeric")},
		[2]string{"add a column to the staging table", addColumnSQL(stageTable, "x", "text[]")},
		[2]string{"widen to jsonb", alterTypeSQL(table, "Value", "text", "jsonb", false)},
		[2]string{"bytea back to its base64", alterTypeSQL(table, "Value", "bytea", "text", false)},
		[2]string{"a provisional column's type", alterTypeSQL(table, "id", "text", "bigint", true)},
		[2]string{"widen by a cast", alterTypeSQL(table, "id", "integer", "numeric", false)},
		[2]string{"create the key index", createKeyIndexSQL(sqlTable, indexDef(nestedKey), false)},
		[2]string{"create the key index of a long table name", createKeyIndexSQL(tableName{schema: "public", name: strings.Repeat("t", 63)}, indexDef(plainKey), false)},
		[2]string{"create the key index concurrently", createKeyIndexSQL(sqlTable, indexDef(plainKey), true)},
		[2]string{"drop the key index", dropKeyIndexSQL(sqlTable, false)},
		[2]string{"drop the key index concurrently", dropKeyIndexSQL(sqlTable, true)},
	))
}
