package client

import (
	"encoding/json"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

func TestStreamPage(t *testing.T) {
	body := `{"values":[{"a":"x\"y","b":[1,{"c":"]}"}]},{"s":"\\"},{"u":"✓ \u2713","e":{}},[],"str",12.5e3,null],` +
		"\n" + `"snapshot": 42, "cursor": "{\"snapshot\":\"ab\"}", "hasMore": true, "ignored": {"x": [1,2]}}`
	decode := func(r io.Reader, p *SnapshotPage) error {
		var docs collected
		err := streamPage(r, &pageOut{each: docs.add, scalars: map[string]any{"snapshot": &p.Snapshot, "cursor": &p.Cursor, "hasMore": &p.HasMore}})
		p.Values = docs.values()
		return err
	}
	var p SnapshotPage
	if err := decode(strings.NewReader(body), &p); err != nil {
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
	// The same page arriving a byte at a time (values, numbers and keys
	// split anywhere), and a document larger than the scanner's buffer.
	var q SnapshotPage
	if err := decode(iotest.OneByteReader(strings.NewReader(body)), &q); err != nil || !reflect.DeepEqual(p, q) {
		t.Fatalf("byte by byte: %v, %+v", err, q)
	}
	// Read a byte at a time, a document scanned anew after every read
	// would take minutes.
	big := `{"k":"` + strings.Repeat("é", 500_000) + `"}`
	var r SnapshotPage
	if err := decode(iotest.OneByteReader(strings.NewReader(`{"snapshot":1,"cursor":null,"hasMore":false,"values":[`+big+`,7]}`)), &r); err != nil ||
		len(r.Values) != 2 || string(r.Values[0]) != big || string(r.Values[1]) != "7" || r.Snapshot != 1 {
		t.Fatalf("large document: %v, %d values", err, len(r.Values))
	}
	for _, bad := range []string{``, `[]`, `{"values":[1,}`, `{"values":["open]}`, `{"values":[]}`, `{"values":[{"a":1}]`, `{"values":[], "snapshot": "x", "cursor": null, "hasMore": false}`} {
		var q SnapshotPage
		if err := decode(strings.NewReader(bad), &q); err == nil {
			t.Errorf("%q decoded without error", bad)
		}
	}
}
