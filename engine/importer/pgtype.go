package importer

import (
	"slices"
	"strings"
)

// pgTypeKeyword is the JSON Schema annotation naming a field's original
// PostgreSQL type (format_type output). shapelog's source connector passes
// on what the engine's json_schemas says, so a PostgreSQL → PostgreSQL
// sync recreates each column with its own type instead of the nearest
// Airbyte one (integer → bigint, number → numeric, …).
const pgTypeKeyword = "$pgType"

// faithfulTypes are the types a $pgType may ask for, by the JSON type its
// values arrive as: only types whose input accepts those values as they
// are (arrays, enums, domains and types with a typmod-less pitfall such as
// character = char(1) keep the mapped type).
var faithfulTypes = map[string]map[string]bool{
	"integer": {"smallint": true, "integer": true, "bigint": true, "numeric": true, "real": true, "double precision": true},
	"number":  {"numeric": true, "real": true, "double precision": true},
	"string": {"text": true, "character varying": true, "uuid": true, "interval": true, "inet": true, "cidr": true,
		"macaddr": true, "macaddr8": true, "date": true, "time without time zone": true, "time with time zone": true,
		"timestamp without time zone": true, "timestamp with time zone": true, "bytea": true, "xml": true},
	"boolean": {"boolean": true},
}

// declaredType is the column type for a declared field: its $pgType when
// that type takes the field's values, else the Airbyte mapping.
func declaredType(schema any) string {
	mapped := columnType(schema)
	s, ok := schema.(map[string]any)
	if !ok {
		return mapped
	}
	pg, _ := s[pgTypeKeyword].(string)
	switch {
	case pg == "":
		return mapped
	case pg == "json" || pg == "jsonb":
		return pg
	case strings.HasSuffix(pg, "[]") && slices.Equal(jsonTypes(s), []string{"array"}) && arrayElementOK(strings.TrimSuffix(pg, "[]")):
		return pg
	}
	for _, t := range jsonTypes(s) {
		if faithfulTypes[t][pg] {
			return pg
		}
	}
	return mapped
}

// arrayElementOK reports whether arrays of elem can be written from JSON
// arrays (see catalog.AppendArrayLiteral).
func arrayElementOK(elem string) bool {
	if elem == "json" || elem == "jsonb" {
		return true
	}
	for _, types := range faithfulTypes {
		if types[elem] {
			return true
		}
	}
	return false
}

// jsonTypes lists the non-null JSON types a schema allows at its top level.
func jsonTypes(s map[string]any) []string {
	var out []string
	switch t := s["type"].(type) {
	case string:
		out = append(out, t)
	case []any:
		for _, x := range t {
			if x, ok := x.(string); ok && x != "null" {
				out = append(out, x)
			}
		}
	}
	if len(out) > 1 {
		return nil // a union: the mapping decides
	}
	return out
}
