package importer

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"testing"
	"testing/iotest"
)

// FuzzParseRequest feeds arbitrary bodies to parseRequest, whole or one
// byte per read. It must not panic; it must refuse with a 400 *Error
// (nothing else can fail reading from memory); and a body it takes must be
// JSON that encoding/json reads with the same number of messages.
func FuzzParseRequest(f *testing.F) {
	tables := `"tables":{"t":{"primaryKey":[["id"]],"jsonSchema":{"type":"object","properties":{"id":{"type":"integer"},"v":{"type":"string"}}}},` +
		`"u":{"primaryKey":null,"jsonSchema":null}}`
	for _, s := range []string{
		`{` + tables + `,"messages":[{"tableName":"t","data":{"id":1,"v":"a"}},{"tableName":"u","data":{"x":[1,{"y":null}]}}]}`,
		`{"messages":[{"data":{"id":2},"tableName":"t"}],` + tables + `}`,
		` { "skip" : {"x":[1,2,"]\"}"]}, "messages" : [ {"tableName":"u","data":{"s":"a\"b,}]","n":-1.5e3}} ] , ` + tables + ` } `,
		`{` + tables + `,"messages":[{"tableName":"t","data":{"id":1.5}}]}`,
		`{` + tables + `,"messages":[{"tableName":"t","data":{"id":1,"v":"` + "\xff" + `"}}]}`,
		`{` + tables + `,"messages":[{"tableName":"nope","data":{}}]}`,
		`{"tables":{},"messages":[],"tables":{}}`,
		`{"tables":{"t":{"primaryKey":[["id"]],"jsonSchema":{"type":"object","properties":{"id":{"type":"integer"}}}}},"messages":[{"tableName":"t","data":{"id":1}},{"tableName":"t","data":{"id":1}}]}`,
		``, `{`, `[]`, `{"tables":{}} trailing`, `{"tables":{},"messages":[1]}`,
	} {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, body []byte, oneByte bool) {
		req := parseFuzzed(t, body, oneByte, parseRequest)
		if req == nil {
			return
		}
		defer req.close()
		var doc struct {
			Messages []json.RawMessage `json:"messages"`
		}
		if err := json.Unmarshal(body, &doc); err != nil {
			t.Fatalf("%q taken; encoding/json: %v", body, err)
		}
		if req.n != len(doc.Messages) {
			t.Fatalf("%q: %d messages; encoding/json reads %d", body, req.n, len(doc.Messages))
		}
	})
}

// parseFuzzed parses a fuzzed body with parse, a byte at a time when
// oneByte, and returns the request, or nil when it was refused, which must
// be with a 400.
func parseFuzzed(t *testing.T, body []byte, oneByte bool, parse func(io.Reader) (*request, error)) *request {
	var r io.Reader = bytes.NewReader(body)
	if oneByte {
		r = iotest.OneByteReader(r)
	}
	req, err := parse(r)
	if err != nil {
		var ie *Error
		if !errors.As(err, &ie) || ie.Status != http.StatusBadRequest {
			t.Fatalf("%q: %T %v", body, err, err)
		}
		return nil
	}
	return req
}
