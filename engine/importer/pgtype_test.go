package importer

import (
	"encoding/json"
	"testing"
)

func TestDeclaredTypeHonoursCompatiblePgTypes(t *testing.T) {
	for schema, want := range map[string]string{
		`{"type":"integer","$pgType":"smallint"}`:                        "smallint",
		`{"type":["integer","null"],"$pgType":"integer"}`:                "integer",
		`{"type":"number","$pgType":"double precision"}`:                 "double precision",
		`{"type":"number","$pgType":"integer"}`:                          typeNumeric, // numbers may have fractions
		`{"type":"string","$pgType":"uuid"}`:                             "uuid",
		`{"type":"string","$pgType":"interval"}`:                         "interval",
		`{"type":"string","$pgType":"character"}`:                        typeText, // char(1) would truncate
		`{"type":"string","$pgType":"mood"}`:                             typeText, // an enum B may not have
		`{"type":"array","$pgType":"integer[]"}`:                         "integer[]",
		`{"type":["array","null"],"$pgType":"text[]"}`:                   "text[]",
		`{"type":"array","$pgType":"mood[]"}`:                            typeJSONB,
		`{"$pgType":"json"}`:                                             "json",
		`{"type":"string","format":"date","$pgType":"date"}`:             typeDate,
		`{"type":["string","integer"],"$pgType":"text"}`:                 typeJSONB,
		`{"type":"boolean","$pgType":"boolean"}`:                         typeBoolean,
		`{"type":"string","$pgType":"'; DROP TABLE x; --"}`:              typeText,
		`{"type":"string","contentEncoding":"base64","$pgType":"bytea"}`: typeBytea,
	} {
		var s any
		if err := json.Unmarshal([]byte(schema), &s); err != nil {
			t.Fatal(err)
		}
		if got := declaredType(s); got != want {
			t.Errorf("%s -> %s, want %s", schema, got, want)
		}
	}
}
