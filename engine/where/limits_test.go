package where_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/shapelog/shapelog/engine/catalog"
	"github.com/shapelog/shapelog/engine/where"
)

var limitCols = []catalog.Column{
	{Name: "id", Type: &catalog.Type{Name: "integer", Kind: catalog.KindInt4}},
	{Name: "title", Type: &catalog.Type{Name: "text", Kind: catalog.KindText}},
}

// atLimits are clauses just within each bound; overLimits the same one
// step over it, with the error expected.
var (
	atLimits = []string{
		"title = '" + strings.Repeat("a", where.MaxLength-10) + "'",                    // MaxLength bytes
		"id IN (0" + strings.Repeat(", 1", where.MaxNodes-3) + ")",                     // MaxNodes nodes
		"id = 0" + strings.Repeat(" OR id = 1", (where.MaxNodes-1)/3-1),                // 1,999 nodes
		strings.Repeat("NOT ", where.MaxDepth-2) + "id = 1",                            // MaxDepth levels
		"id = 0" + strings.Repeat(" + 1", where.MaxDepth-2),                            // MaxDepth levels, left-deep
		strings.Repeat("(", 4000) + "id = 1" + strings.Repeat(")", 4000),               // parentheses are not nodes
		"title IN ('" + strings.Repeat("x', '", 1000) + "y') AND id IN (1, 2) OR true", // long IN list of strings
	}
	overLimits = []struct{ expr, err string }{
		{"title = '" + strings.Repeat("a", where.MaxLength-9) + "'", "where clause is 8193 bytes long; the limit is 8192"},
		{"id IN (0" + strings.Repeat(", 1", where.MaxNodes-2) + ")", "where clause has 2001 nodes; the limit is 2000"},
		{"id = 0" + strings.Repeat(" OR id = 1", (where.MaxNodes-1)/3), "where clause has 2002 nodes; the limit is 2000"},
		{strings.Repeat("NOT ", where.MaxDepth-1) + "id = 1", "where clause is nested 101 levels deep; the limit is 100"},
		{"id = 0" + strings.Repeat(" + 1", where.MaxDepth-1), "where clause is nested 101 levels deep; the limit is 100"},
		// A 20,000-term OR (470 KB) kept a PostgreSQL backend busy for
		// minutes; 1+1+…+1 this long crashed the process inside pg_query.
		{"id = 0" + strings.Repeat(" OR id = 1", 20000), "where clause is 200006 bytes long; the limit is 8192"},
		{"id = " + strings.Repeat("1+", 100000) + "1", "where clause is 200006 bytes long; the limit is 8192"},
		{"title = '" + strings.Repeat("a", 1<<20) + "'", "where clause is 1048586 bytes long; the limit is 8192"},
		{strings.Repeat("(", 10000) + "id = 1" + strings.Repeat(")", 10000), "where clause is 20006 bytes long; the limit is 8192"},
	}
)

func TestLimits(t *testing.T) {
	for _, expr := range atLimits {
		if _, err := where.Parse(expr, nil, limitCols); err != nil {
			t.Errorf("%.60s… (%d bytes): %v", expr, len(expr), err)
		}
	}
	for _, tc := range overLimits {
		_, err := where.Parse(tc.expr, nil, limitCols)
		var we *where.Error
		if !errors.As(err, &we) || we.Reason != tc.err {
			t.Errorf("%.60s… (%d bytes): error %v, want %q", tc.expr, len(tc.expr), err, tc.err)
		}
	}
	// The depth error points at the first node too deep.
	_, err := where.Parse(strings.Repeat("NOT ", where.MaxDepth-1)+"id = 1", nil, limitCols)
	if want := fmt.Sprintf("At location %d: ", 4*(where.MaxDepth-1)); err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("depth error %v, want it at %q", err, want)
	}
}

func TestParamLimits(t *testing.T) {
	params := map[string]string{}
	for i := range where.MaxParams {
		params[fmt.Sprint(i+1)] = "1"
	}
	if _, err := where.Parse("id = $1 OR id = $1000", params, limitCols); err != nil {
		t.Errorf("%d parameters: %v", len(params), err)
	}
	params["1001"] = "1"
	_, err := where.Parse("id = $1", params, limitCols)
	if err == nil || err.Error() != "At location 0: where clause has 1001 parameters; the limit is 1000" {
		t.Errorf("%d parameters: %v", len(params), err)
	}
	big := strings.Repeat("a", where.MaxParamsLength-1)
	if _, err := where.Parse("title = $1 OR title = $2", map[string]string{"1": big, "2": "b"}, limitCols); err != nil {
		t.Errorf("%d bytes of parameters: %v", where.MaxParamsLength, err)
	}
	_, err = where.Parse("title = $1 OR title = $2", map[string]string{"1": big, "2": "bc"}, limitCols)
	if err == nil || err.Error() != "At location 0: where clause parameters are 65537 bytes long together; the limit is 65536" {
		t.Errorf("%d bytes of parameters: %v", where.MaxParamsLength+1, err)
	}
}

// TestLimitsInPostgres runs the clauses just within the bounds in
// PostgreSQL and checks that Match agrees.
func TestLimitsInPostgres(t *testing.T) {
	ctx, conn, table := fixture(t)
	rows, err := conn.Query(ctx, "SELECT id::text, title FROM w ORDER BY id", pgx.QueryResultFormats{pgx.TextFormatCode})
	if err != nil {
		t.Fatal(err)
	}
	var data [][2][]byte
	for rows.Next() {
		raw := rows.RawValues()
		r := [2][]byte{append([]byte{}, raw[0]...)}
		if raw[1] != nil {
			r[1] = append([]byte{}, raw[1]...)
		}
		data = append(data, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	idCol, titleCol := -1, -1
	for i, c := range table.Columns {
		switch c.Name {
		case "id":
			idCol = i
		case "title":
			titleCol = i
		}
	}
	for _, expr := range atLimits {
		f, err := where.Parse(expr, nil, table.Columns)
		if err != nil {
			t.Errorf("%.60s…: %v", expr, err)
			continue
		}
		want := map[string]bool{}
		var ids []string
		if err := conn.QueryRow(ctx, "SELECT coalesce(array_agg(id::text), '{}') FROM w WHERE "+f.SQL()).Scan(&ids); err != nil {
			t.Errorf("%.60s…: PostgreSQL: %v", expr, err)
			continue
		}
		for _, id := range ids {
			want[id] = true
		}
		for _, r := range data {
			row := make([][]byte, len(table.Columns))
			row[idCol], row[titleCol] = r[0], r[1]
			got, err := f.Match(row)
			if err != nil || got != want[string(r[0])] {
				t.Errorf("%.60s… on row %s: Match %v, %v; PostgreSQL %v", expr, r[0], got, err, want[string(r[0])])
			}
		}
	}
}
