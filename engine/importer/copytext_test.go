package importer

import "testing"

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
	} {
		got, err := copyText(nil, field{kind: c.kind, value: []byte(c.value)}, c.typ)
		if err != nil || string(got) != c.want {
			t.Errorf("copyText(%c %q, %s) = %q, %v; want %q", c.kind, c.value, c.typ, got, err, c.want)
		}
	}
}
