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
