package snapshot

import (
	"context"
	"fmt"
	"math/big"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/shapelog/shapelog/engine/catalog"
)

// keyOrder compares primary keys the way the table's index orders them.
// Integer keys, uuids and text under the C collation compare in Go; any
// other key is compared by PostgreSQL, whose order (collations, numeric,
// dates) Go cannot reproduce.
type keyOrder struct {
	native []func(a, b string) int // per key column; nil when PostgreSQL must compare
	types  []string                // format_type() of each key column, for PostgreSQL
	colls  []string                // COLLATE clause of each key column ("" for none)
}

// loadKeyOrder reads how t's key columns compare.
func loadKeyOrder(ctx context.Context, q *pgxpool.Pool, t *catalog.Table) (*keyOrder, error) {
	names := keyColumnNames(t)
	rows, err := q.Query(ctx, `
		SELECT a.attname, format_type(a.atttypid, a.atttypmod), bt.typname,
		       coalesce(quote_ident(cn.nspname) || '.' || quote_ident(co.collname), ''),
		       coalesce(co.collname = 'default' AND (SELECT datcollate IN ('C', 'POSIX') AND datlocprovider = 'c' FROM pg_database WHERE datname = current_database())
		                OR co.collname IN ('C', 'POSIX'), false)
		FROM pg_attribute a
		JOIN pg_type ty ON ty.oid = a.atttypid
		JOIN pg_type bt ON bt.oid = CASE WHEN ty.typtype = 'd' THEN ty.typbasetype ELSE ty.oid END
		LEFT JOIN pg_collation co ON co.oid = a.attcollation
		LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
		WHERE a.attrelid = $1 AND a.attname = ANY($2) AND NOT a.attisdropped`, t.OID, names)
	if err != nil {
		return nil, err
	}
	type col struct {
		typ, base, coll string
		bytewise        bool
	}
	found := map[string]col{}
	for rows.Next() {
		var name string
		var c col
		if err := rows.Scan(&name, &c.typ, &c.base, &c.coll, &c.bytewise); err != nil {
			return nil, err
		}
		found[name] = c
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	o := &keyOrder{}
	for _, name := range names {
		c, ok := found[name]
		if !ok {
			return nil, fmt.Errorf("key column %q of %s.%s is gone", name, t.Schema, t.Name)
		}
		var cmp func(a, b string) int
		switch c.base {
		case "int2", "int4", "int8":
			cmp = compareIntegers
		case "uuid":
			cmp = strings.Compare // fixed-width lowercase hex: byte order is uuid order
		case "text", "varchar":
			if c.bytewise {
				cmp = strings.Compare
			}
		}
		o.native = append(o.native, cmp)
		o.types = append(o.types, c.typ)
		coll := ""
		if c.coll != "" {
			coll = " COLLATE " + c.coll
		}
		o.colls = append(o.colls, coll)
	}
	return o, nil
}

func compareIntegers(a, b string) int {
	x, errA := strconv.ParseInt(a, 10, 64)
	y, errB := strconv.ParseInt(b, 10, 64)
	if errA != nil || errB != nil { // cannot happen for int columns; order them anyway
		var bx, by big.Int
		bx.SetString(a, 10)
		by.SetString(b, 10)
		return bx.Cmp(&by)
	}
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

func (o *keyOrder) isNative() bool {
	for _, c := range o.native {
		if c == nil {
			return false
		}
	}
	return true
}

// compare orders two keys natively (only when isNative).
func (o *keyOrder) compare(a, b []string) int {
	for i, c := range o.native {
		if r := c(a[i], b[i]); r != 0 {
			return r
		}
	}
	return 0
}

// inRange reports, for each key, whether after < key <= last (a nil bound
// is open).
func (o *keyOrder) inRange(ctx context.Context, pool *pgxpool.Pool, keys [][]string, after, last []string) ([]bool, error) {
	out := make([]bool, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	if o.isNative() {
		for i, k := range keys {
			out[i] = (after == nil || o.compare(k, after) > 0) && (last == nil || o.compare(k, last) <= 0)
		}
		return out, nil
	}
	n := len(o.types)
	cols := make([][]string, n)
	for _, k := range keys {
		for j := range n {
			cols[j] = append(cols[j], k[j])
		}
	}
	args := make([]any, 0, 3*n)
	var unnest, names, row []string
	for j := range n {
		args = append(args, cols[j])
		unnest = append(unnest, fmt.Sprintf("$%d::text[]", len(args)))
		names = append(names, fmt.Sprintf("k%d", j))
		row = append(row, fmt.Sprintf("k%d::%s%s", j, o.types[j], o.colls[j]))
	}
	bound := func(vals []string) string {
		var parts []string
		for j, v := range vals {
			args = append(args, v)
			parts = append(parts, fmt.Sprintf("$%d::text::%s%s", len(args), o.types[j], o.colls[j]))
		}
		return "ROW(" + strings.Join(parts, ", ") + ")"
	}
	q := "SELECT u.i FROM unnest(" + strings.Join(unnest, ", ") + ") WITH ORDINALITY AS u(" + strings.Join(names, ", ") + ", i) WHERE true"
	if after != nil {
		q += " AND ROW(" + strings.Join(row, ", ") + ") > " + bound(after)
	}
	if last != nil {
		q += " AND ROW(" + strings.Join(row, ", ") + ") <= " + bound(last)
	}
	rows, err := pool.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var i int64
		if err := rows.Scan(&i); err != nil {
			return nil, err
		}
		out[i-1] = true
	}
	return out, rows.Err()
}
