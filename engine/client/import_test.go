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
