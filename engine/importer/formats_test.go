package importer

import "testing"

func TestAirbyteFormats(t *testing.T) {
	for _, c := range []struct {
		format, value string
		ok            bool
	}{
		{"date", "2024-02-29", true}, {"date", "12024-02-29", true}, {"date", "0044-03-15 BC", true},
		{"date", "2024-2-29", false}, {"date", "2024-02-29T00:00:00", false}, {"date", "", false},
		{"time", "12:30", true}, {"time", "12:30:00.123456", true}, {"time", "12:30:00+02:00", true}, {"time", "12:30:00Z", true},
		{"time", "1230", false}, {"time", "12:30:00 BC", false},
		{"date-time", "2024-01-01T10:00:00", true}, {"date-time", "2024-01-01T10:00:00.5Z", true},
		{"date-time", "2024-01-01 10:00:00+0200", true}, {"date-time", "2024-01-01T10:00:00-11:30 BC", true},
		{"date-time", "2024-01-01", false}, {"date-time", "2024-01-01T10", false}, {"date-time", "yesterday", false},
	} {
		if got := airbyteFormats[c.format](c.value); got != c.ok {
			t.Errorf("%s %q: %v, want %v", c.format, c.value, got, c.ok)
		}
	}
	if !airbyteFormats["date"](42) {
		t.Error("formats apply to strings only")
	}
}
