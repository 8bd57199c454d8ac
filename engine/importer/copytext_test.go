package importer

import (
	"bytes"
	"encoding/base64"
	"io"
	"strings"
	"testing"
)

func TestIntegralText(t *testing.T) {
	for in, want := range map[string]string{
		"1.0": "1", "-2.000": "-2", "2e3": "2000", "1.5e1": "15", "-0.0": "-0", "9223372036854775807.0": "9223372036854775807",
		"1.5": "1.5", "1e-3": "1e-3", "1.0000000000000000000000000000000000000000000000000000000000000000000000000000000000001": "1.0000000000000000000000000000000000000000000000000000000000000000000000000000000000001",
		"1e30": "1e30", // out of bigint's range: PostgreSQL says so
	} {
		if got := string(integralText([]byte(in))); got != want {
			t.Errorf("%s -> %s, want %s", in, got, want)
		}
	}
	if err := newRowWriter(io.Discard).value(field{kind: kindString, value: []byte("a\x00")}, "text"); err != errNUL {
		t.Errorf("a NUL in text: %v", err)
	}
}

func TestCopyText(t *testing.T) {
	for _, c := range []struct {
		kind       byte
		value, typ string
		want       string
	}{
		{kindNull, "", "text", `\N`},
		{kindString, "plain", "text", "plain"},
		{kindString, "a\\b\nc\rd\te", "text", `a\\b\nc\rd\te`},
		{kindString, "\t", "text", `\t`},
		{kindString, "x\x01y", "text", "x\x01y"},
		{kindString, `q"\`, "jsonb", `"q\\"\\\\"`},
		{kindString, "aGk=", "bytea", `\\x6869`},
		{kindNumber, "1.5", "numeric", "1.5"},
		{kindNumber, "2e3", "bigint", "2000"},
		{kindNumber, "2e3", "numeric", "2e3"},
		{kindNumber, "-7", "integer", "-7"},
		{kindBool, "t", "boolean", "t"},
		{kindBool, "f", "text", "false"},
		{kindJSON, `{"a":"\n"}`, "jsonb", `{"a":"\\n"}`},
		{kindJSON, `[1,2]`, "integer[]", `{1,2}`},
		{kindString, "a\x01\"é\t", "json", `"a\\u0001\\"é\\t"`},
		{kindString, "aGk", "bytea", `\\x6869`},
		// Values longer than the writer's buffer, escapes across its flushes.
		{kindString, strings.Repeat("ab\n\\", 100000), "text", strings.Repeat(`ab\n\\`, 100000)},
		{kindString, strings.Repeat("a\"\n", 100000), "jsonb", `"` + strings.Repeat(`a\\"\\n`, 100000) + `"`},
		{kindString, base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0, 0xff}, 100000)), "bytea", `\\x` + strings.Repeat("00ff", 100000)},
	} {
		var got bytes.Buffer
		rw := newRowWriter(&got)
		err := rw.value(field{kind: c.kind, value: []byte(c.value)}, c.typ)
		if err == nil {
			err = rw.flush()
		}
		if err != nil || got.String() != c.want {
			t.Errorf("value(%c %q, %s) = %q, %v; want %q", c.kind, c.value, c.typ, got.String(), err, c.want)
		}
	}
	if err := newRowWriter(io.Discard).value(field{kind: kindString, value: []byte("a\x00")}, "text"); err != errNUL {
		t.Errorf("a NUL in text: %v", err)
	}
}
