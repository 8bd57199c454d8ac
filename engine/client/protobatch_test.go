package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shapelog/shapelog/engine/recordpb"
)

// readProtoBody reads a protobuf import body with the generated code.
func readProtoBody(t *testing.T, body []byte) (*recordpb.ImportHeader, []*recordpb.ImportRecord) {
	t.Helper()
	r := bufio.NewReader(bytes.NewReader(body))
	frame, err := recordpb.ReadFrame(r, nil, len(body))
	if err != nil {
		t.Fatal(err)
	}
	var h recordpb.ImportHeader
	if err := proto.Unmarshal(frame, &h); err != nil {
		t.Fatal(err)
	}
	var recs []*recordpb.ImportRecord
	for {
		frame, err = recordpb.ReadFrame(r, nil, len(body))
		if err == io.EOF {
			return &h, recs
		}
		if err != nil {
			t.Fatal(err)
		}
		var rec recordpb.ImportRecord
		if err := proto.Unmarshal(frame, &rec); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, &rec)
	}
}

// TestProtoBatch: the body is a header declaring the tables and one
// ImportRecord per record, the record's bytes as they were, the extra
// values after its own and its table; Reset starts afresh.
func TestProtoBatch(t *testing.T) {
	record, err := proto.Marshal(&recordpb.Record{StreamName: "s", EmittedAtMs: 5, PartitionId: "p",
		Data: []*recordpb.Value{{Kind: &recordpb.Value_Integer{Integer: 1}}, {Kind: &recordpb.Value_String_{String_: "a"}}}})
	if err != nil {
		t.Fatal(err)
	}
	extra := func(dst []byte) []byte { return recordpb.AppendBytesKind(dst, recordpb.KindString, []byte("raw")) }
	var b ProtoBatch
	for round := 0; round < 2; round++ {
		a := b.Declare("a", TableSpec{PrimaryKey: [][]string{{"id"}}, JSONSchema: json.RawMessage(`{"type":"object"}`)}, []string{"id", "v", "raw"})
		long := b.Declare(`s."long"`, TableSpec{}, []string{"x"})
		if again := b.Declare("a", TableSpec{}, []string{"id", "v", "raw"}); again != a || a != 0 || long != 1 {
			t.Fatalf("indexes %d %d %d", a, long, again)
		}
		b.AddRecordBytes(a, record, extra)
		big := bytes.Repeat([]byte("x"), 300)
		b.AddRecordBytes(long, nil, func(dst []byte) []byte { return recordpb.AppendBytesKind(dst, recordpb.KindString, big) })
		b.AddRecordBytes(a, record, extra)
		if i, ok := b.Declared(`s."long"`); !ok || i != 1 || b.Len() != 3 || b.Table(1) != `s."long"` || b.Size() >= len(b.Bytes()) {
			t.Fatalf("declared %d %v, %d records, table %s, size %d", i, ok, b.Len(), b.Table(1), b.Size())
		}
		h, recs := readProtoBody(t, b.Bytes())
		if len(h.Tables) != 2 || h.Tables[0].Name != "a" || !reflect.DeepEqual(h.Tables[0].Fields, []string{"id", "v", "raw"}) ||
			string(h.Tables[0].Declaration) != `{"primaryKey":null,"jsonSchema":null}` || h.Tables[1].Name != `s."long"` {
			t.Fatalf("header %v", h)
		}
		if len(recs) != 3 || recs[0].Table != 0 || recs[1].Table != 1 || recs[2].Table != 0 {
			t.Fatalf("records %v", recs)
		}
		if d := recs[0].Data; len(d) != 3 || d[0].GetInteger() != 1 || d[1].GetString_() != "a" || d[2].GetString_() != "raw" {
			t.Fatalf("record 0: %v", d)
		}
		if d := recs[1].Data; len(d) != 1 || len(d[0].GetString_()) != 300 {
			t.Fatalf("record 1: %v", d)
		}
		var whole recordpb.Record // the record's own fields are there as they were
		if err := proto.Unmarshal(b.records[1:1+len(record)], &whole); err != nil || whole.StreamName != "s" || whole.PartitionId != "p" {
			t.Fatalf("record bytes: %v %v", &whole, err)
		}
		b.Reset()
		if b.Len() != 0 || b.Size() != 0 {
			t.Fatal("Reset left records")
		}
		if _, ok := b.Declared("a"); ok {
			t.Fatal("Reset left declarations")
		}
		if h, recs := readProtoBody(t, b.Bytes()); len(h.Tables) != 0 || len(recs) != 0 {
			t.Fatalf("empty batch: %v %v", h, recs)
		}
	}
}

// TestImportProtobufRetries: a protobuf body goes with its content type,
// and is sent again, whole, with the same idempotency key when retried.
func TestImportProtobufRetries(t *testing.T) {
	var mu sync.Mutex
	var bodies [][]byte
	var keys []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if ct := r.Header.Get("Content-Type"); ct != ProtobufContentType || r.ContentLength != int64(len(b)) {
			t.Errorf("Content-Type %q, Content-Length %d for %d bytes", ct, r.ContentLength, len(b))
		}
		bodies, keys = append(bodies, b), append(keys, r.Header.Get("Idempotency-Key"))
		if len(bodies)%2 == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	c, err := New(srv.URL, "k", Options{RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var b ProtoBatch
	b.AddRecordBytes(b.Declare("t", TableSpec{}, []string{"x"}), recordpb.AppendInteger(nil, 5), nil)
	if err := c.ImportProtobuf(context.Background(), b.Bytes(), ""); err != nil {
		t.Fatal(err)
	}
	if err := c.ImportProtoBatch(context.Background(), &b, "mine"); err != nil {
		t.Fatal(err)
	}
	if len(bodies) != 4 || keys[0] == "" || keys[0] != keys[1] || keys[2] != "mine" || keys[3] != "mine" {
		t.Fatalf("%d calls, keys %q", len(bodies), keys)
	}
	for _, body := range bodies {
		if !bytes.Equal(body, b.Bytes()) {
			t.Fatalf("sent %x, want %x", body, b.Bytes())
		}
	}
}
