package client

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestDecodePage(t *testing.T) {
	body := `{"values":[{"a":"x\"y","b":[1,{"c":"]}"}]},{"s":"\\"},{"u":"✓ \u2713","e":{}},[],"str",12.5e3,null],` +
		"\n" + `"snapshot": 42, "cursor": "{\"snapshot\":\"ab\"}", "hasMore": true, "ignored": {"x": [1,2]}}`
	var p SnapshotPage
	if err := decodePage(strings.NewReader(body), int64(len(body)), &p.Values, map[string]any{"snapshot": &p.Snapshot, "cursor": &p.Cursor, "hasMore": &p.HasMore}); err != nil {
		t.Fatal(err)
	}
	want := []string{`{"a":"x\"y","b":[1,{"c":"]}"}]}`, `{"s":"\\"}`, `{"u":"✓ \u2713","e":{}}`, `[]`, `"str"`, `12.5e3`, `null`}
	if len(p.Values) != len(want) {
		t.Fatalf("got %d values: %q", len(p.Values), p.Values)
	}
	for i, v := range p.Values {
		if string(v) != want[i] || !json.Valid(v) {
			t.Errorf("value %d = %s, want %s", i, v, want[i])
		}
	}
	if p.Snapshot != 42 || p.Cursor == nil || *p.Cursor != `{"snapshot":"ab"}` || !p.HasMore {
		t.Fatalf("scalars: %+v", p)
	}
	for _, bad := range []string{``, `[]`, `{"values":[1,}`, `{"values":["open]}`, `{"values":[]}`, `{"values":[{"a":1}]`, `{"values":[], "snapshot": "x", "cursor": null, "hasMore": false}`} {
		var q SnapshotPage
		if err := decodePage(strings.NewReader(bad), -1, &q.Values, map[string]any{"snapshot": &q.Snapshot, "cursor": &q.Cursor, "hasMore": &q.HasMore}); err == nil {
			t.Errorf("%q decoded without error", bad)
		}
	}
}
