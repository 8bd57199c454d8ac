package catalog

import (
	"fmt"
	"strings"
	"testing"
)

func TestLoadTables(t *testing.T) {
	ctx, conn := connect(t)
	for _, sql := range []string{
		`CREATE TABLE y (id int)`,
		`CREATE SCHEMA "MixedCase"`,
		`CREATE TABLE "MixedCase"."Weird ""Name""" ("Id" int PRIMARY KEY, "b.c" text)`,
		`CREATE TABLE "x""; DROP TABLE y; --" (id int PRIMARY KEY)`,
		`CREATE TABLE comp (a int, b text, c int NOT NULL, PRIMARY KEY (b, a))`,
		`CREATE TABLE nopk (z int, a text, m int)`,
		`CREATE TABLE dropped (id int PRIMARY KEY, gone int, kept text)`,
		`ALTER TABLE dropped DROP COLUMN gone`,
		`ALTER TABLE dropped REPLICA IDENTITY FULL`,
		`CREATE TABLE "a.b" (id int PRIMARY KEY)`,
		`CREATE TABLE parted (id int PRIMARY KEY) PARTITION BY RANGE (id)`,
		`CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (10)`,
		`CREATE VIEW v AS SELECT 1 AS one`,
		`CREATE MATERIALIZED VIEW mv AS SELECT 1 AS one`,
		`CREATE SCHEMA other`,
		`CREATE TABLE other.t2 (id int)`,
		`CREATE TABLE other.t1 (id int)`,
	} {
		mustExec(t, ctx, conn, sql)
	}
	types := NewTypes()
	names := func(tables []*Table) string {
		var s []string
		for _, t := range tables {
			s = append(s, t.Schema+"."+t.Name)
		}
		return strings.Join(s, " | ")
	}
	byName := func(tables []*Table, name string) *Table {
		for _, t := range tables {
			if t.Name == name {
				return t
			}
		}
		t.Fatalf("table %q missing from %s", name, names(tables))
		return nil
	}

	all, err := LoadTables(ctx, conn, types, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(all), `public.a.b | public.comp | public.dropped | public.nopk | public.parted | public.x"; DROP TABLE y; -- | public.y`; got != want {
		t.Errorf("default filter:\n got %s\nwant %s", got, want)
	}

	comp := byName(all, "comp")
	if got := columnNames(comp); got != "a:integer:true:1 b:text:true:2 c:integer:true:3" {
		t.Errorf("comp columns: %s", got)
	}
	if fmt.Sprint(comp.Key) != "[1 0]" || fmt.Sprint(comp.KeyColumns()) != "[1 0]" {
		t.Errorf("comp key %v, key columns %v; want [1 0] (b, a)", comp.Key, comp.KeyColumns())
	}
	if comp.ReplicaIdentity != 'd' {
		t.Errorf("comp replica identity %q", comp.ReplicaIdentity)
	}

	nopk := byName(all, "nopk")
	if len(nopk.Key) != 0 || fmt.Sprint(nopk.KeyColumns()) != "[1 2 0]" {
		t.Errorf("nopk key %v, key columns %v; want [] and [1 2 0] (a, m, z)", nopk.Key, nopk.KeyColumns())
	}
	if got := columnNames(nopk); got != "z:integer:false:1 a:text:false:2 m:integer:false:3" {
		t.Errorf("nopk columns: %s", got)
	}

	dropped := byName(all, "dropped")
	if got := columnNames(dropped); got != "id:integer:true:1 kept:text:false:3" {
		t.Errorf("dropped columns: %s", got)
	}
	if fmt.Sprint(dropped.Key) != "[0]" || dropped.ReplicaIdentity != 'f' {
		t.Errorf("dropped: key %v, replica identity %q", dropped.Key, dropped.ReplicaIdentity)
	}
	if parted := byName(all, "parted"); fmt.Sprint(parted.Key) != "[0]" {
		t.Errorf("parted key %v", parted.Key)
	}

	mixed, err := LoadTables(ctx, conn, types, Filter{Schemas: []string{"MixedCase"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(mixed); got != `MixedCase.Weird "Name"` {
		t.Fatalf("MixedCase schema: %s", got)
	}
	if got := columnNames(mixed[0]); got != "Id:integer:true:1 b.c:text:false:2" || fmt.Sprint(mixed[0].Key) != "[0]" {
		t.Errorf("MixedCase columns %s, key %v", got, mixed[0].Key)
	}

	evil := `x"; DROP TABLE y; --`
	sel, err := LoadTables(ctx, conn, types, Filter{Tables: []string{
		`"MixedCase"."Weird ""Name"""`,
		APIName("public", evil),
		"comp",
		"public.nopk",
		`"a.b"`,
		"public.parted_1", // a partition, named explicitly
		"other.t2",
		"comp", // twice
	}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(sel), `MixedCase.Weird "Name" | other.t2 | public.a.b | public.comp | public.nopk | public.parted_1 | public.x"; DROP TABLE y; --`; got != want {
		t.Errorf("tables filter:\n got %s\nwant %s", got, want)
	}

	both, err := LoadTables(ctx, conn, types, Filter{Schemas: []string{"other", "nosuchschema"}, Tables: []string{"comp"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(both); got != "other.t1 | other.t2 | public.comp" {
		t.Errorf("schemas + tables: %s", got)
	}

	for _, name := range []string{"nosuch", "other.nosuch", "v", "mv", `"MixedCase"."weird ""name"""`} {
		_, err := LoadTables(ctx, conn, types, Filter{Tables: []string{"comp", name}})
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("unknown table %s: error %v should name it", name, err)
		}
	}
	if _, err := LoadTables(ctx, conn, types, Filter{Tables: []string{`a"b`}}); err == nil || !strings.Contains(err.Error(), `a"b`) {
		t.Errorf("bad table name: %v", err)
	}

	one, err := LoadTable(ctx, conn, types, comp.OID)
	if err != nil {
		t.Fatal(err)
	}
	if one.Schema != "public" || one.Name != "comp" || columnNames(one) != columnNames(comp) || fmt.Sprint(one.Key) != "[1 0]" {
		t.Errorf("LoadTable: %+v", one)
	}
	if _, err := LoadTable(ctx, conn, types, 4000000000); err == nil {
		t.Error("LoadTable of a missing OID: no error")
	}
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('y') IS NOT NULL").Scan(&exists); err != nil || !exists {
		t.Errorf("table y is gone (%v)", err)
	}
}

func columnNames(t *Table) string {
	var s []string
	for _, c := range t.Columns {
		s = append(s, fmt.Sprintf("%s:%s:%v:%d", c.Name, c.Type.Name, c.NotNull, c.Position))
	}
	return strings.Join(s, " ")
}

func tableOf(schema, name string, key []int, cols ...string) *Table {
	t := &Table{Schema: schema, Name: name, Key: key}
	for _, c := range cols {
		t.Columns = append(t.Columns, Column{Name: c, Type: &Type{Kind: KindText}})
	}
	return t
}

func vals(vs ...any) [][]byte {
	out := make([][]byte, len(vs))
	for i, v := range vs {
		if v != nil {
			out[i] = []byte(v.(string))
		}
	}
	return out
}

func TestAppendKey(t *testing.T) {
	cases := []struct {
		table  *Table
		values [][]byte
		want   string
	}{
		// The Electric reference's example.
		{tableOf("public", "items", []int{0, 1}, "id", "n"), vals("a/b", "2"), `"public"."items"/"a//b"/"2"`},
		// Electric's Changes.build_key doctests.
		{tableOf("hello", "world", []int{0, 1}, "a", "c"), vals("b", "d"), `"hello"."world"/"b"/"d"`},
		{tableOf("hello", "world", []int{1, 0}, "a", "c"), vals("b", "d"), `"hello"."world"/"d"/"b"`},
		{tableOf("hello", "world", []int{0, 1}, "a", "c"), vals("test/test", "test"), `"hello"."world"/"test//test"/"test"`},
		{tableOf("hello", "world", []int{0, 1}, "a", "c"), vals("test", "test/test"), `"hello"."world"/"test"/"test//test"`},
		{tableOf("hello", "world", nil, "c", "a"), vals("d", "b"), `"hello"."world"/"b"/"d"`},
		{tableOf("hello", "world", nil, "a", "b", "c"), vals("1", nil, "2"), `"hello"."world"/"1"/_/"2"`},
		{tableOf("hello", "world", nil, "a", "b", "c"), vals("1", "", "2"), `"hello"."world"/"1"/""/"2"`},
		{tableOf(`a"."b`, "c", nil, "a"), vals(""), `"a".."b"."c"/""`},
		{tableOf("a", `b"."c`, nil, "a"), vals(""), `"a"."b".."c"/""`},
		{tableOf("a", "b", nil, "a", "b"), vals("", ""), `"a"."b"/""/""`},
		{tableOf("a", `b"/"`, nil, "a"), vals(""), `"a"."b"//""/""`},
		// NULL key value; only key columns are read.
		{tableOf("public", "t", []int{1}, "x", "id"), vals("ignored", nil), `"public"."t"/_`},
		// No primary key: all columns sorted by name, byte order.
		{tableOf("public", "t", nil, "z", "B", "a", "é"), vals("1", "2", "3", "4"), `"public"."t"/"2"/"3"/"1"/"4"`},
		// Missing values count as NULL; no values give the table's key.
		{tableOf("public", "t", []int{0, 2}, "a", "b", "c"), vals("1"), `"public"."t"/"1"/_`},
		{tableOf("s.x", "t/u", []int{0}, "a"), nil, `"s..x"."t//u"`},
	}
	for _, c := range cases {
		if got := string(c.table.AppendKey([]byte("k:"), c.values)); got != "k:"+c.want {
			t.Errorf("AppendKey(%s.%s, %q) = %s, want k:%s", c.table.Schema, c.table.Name, c.values, got, c.want)
		}
	}

	wide := tableOf("public", "wide", nil)
	row := make([][]byte, 100)
	for i := range row {
		wide.Columns = append(wide.Columns, Column{Name: fmt.Sprintf("c%03d", 99-i)})
		row[i] = []byte(fmt.Sprint(i))
	}
	key := string(wide.AppendKey(nil, row))
	if !strings.HasPrefix(key, `"public"."wide"/"99"/"98"/`) || !strings.HasSuffix(key, `/"1"/"0"`) {
		t.Errorf("wide no-PK key: %s", key)
	}

	narrow := tableOf("public", "t", nil, "z", "b", "a", "m")
	v := vals("1", "2", "3", nil)
	dst := make([]byte, 0, 128)
	if n := testing.AllocsPerRun(100, func() { dst = narrow.AppendKey(dst[:0], v) }); n != 0 {
		t.Errorf("AppendKey without a primary key: %v allocations, want 0", n)
	}
}
