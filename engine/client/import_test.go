package client

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestImportRequestMarshalJSON(t *testing.T) {
	req := ImportRequest{Messages: []Message{
		{TableName: "a", Data: json.RawMessage(`{"x":1}`)},
		{TableName: "a", Data: json.RawMessage(`{"x":2}`)},
		{TableName: `s."b"`, Data: nil},
		{TableName: "a", Data: json.RawMessage(`{"x":3}`)},
	}}
	b, err := req.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	want := map[string]any{"tables": map[string]any{}, "messages": []any{
		map[string]any{"tableName": "a", "data": map[string]any{"x": 1.0}},
		map[string]any{"tableName": "a", "data": map[string]any{"x": 2.0}},
		map[string]any{"tableName": `s."b"`, "data": nil},
		map[string]any{"tableName": "a", "data": map[string]any{"x": 3.0}},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %s", b)
	}
}

// A reset Records builds the next body from scratch in the same buffers.
func TestRecordsReset(t *testing.T) {
	var r Records
	add := func(table, data string) {
		r.Add(table, func(b []byte) []byte { return append(b, data...) })
	}
	r.Declare("old", TableSpec{})
	add("old", `{"x":1}`)
	r.Reset()
	r.Declare("new", TableSpec{PrimaryKey: [][]string{{"id"}}})
	add("new", `{"id":1}`)
	add("new", "")
	head, err := r.head()
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	body := append(append(head, r.messages...), "]}"...)
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	want := map[string]any{
		"tables": map[string]any{"new": map[string]any{"primaryKey": []any{[]any{"id"}}, "jsonSchema": nil}},
		"messages": []any{
			map[string]any{"tableName": "new", "data": map[string]any{"id": 1.0}},
			map[string]any{"tableName": "new", "data": nil},
		}}
	if !reflect.DeepEqual(got, want) || r.Len() != 2 || r.Table(1) != "new" {
		t.Errorf("got %s (%d records)", body, r.Len())
	}
}
