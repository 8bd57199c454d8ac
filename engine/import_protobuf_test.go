package engine_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/shapelog/shapelog/engine/client"
	"github.com/shapelog/shapelog/engine/recordpb"
	"github.com/shapelog/shapelog/internal/pgtest"
)

// speedRecord encodes an Airbyte record as a data channel carries it:
// stream, emission time and one value per field (id, name, seen, deleted).
func speedRecord(id int64, name string, seen time.Time, deleted bool) []byte {
	var b []byte
	b = protowire.AppendTag(b, recordpb.RecordStream, protowire.BytesType)
	b = protowire.AppendString(b, "users")
	b = protowire.AppendTag(b, recordpb.RecordEmittedAtMs, protowire.VarintType)
	b = protowire.AppendVarint(b, 1700000000000)
	b = recordpb.AppendInteger(b, id)
	if name == "" {
		b = recordpb.AppendNull(b)
	} else {
		b = recordpb.AppendBytesKind(b, recordpb.KindString, []byte(name))
	}
	b = recordpb.AppendTimestampWithZone(b, seen.Unix(), uint32(seen.Nanosecond()), 3600)
	if deleted {
		b = recordpb.AppendBytesKind(b, recordpb.KindString, []byte("2024-01-01T00:00:00Z"))
	} else {
		b = recordpb.AppendNull(b)
	}
	return b
}

// speedMeta appends the destination's metadata columns.
func speedMeta(rawID string) func([]byte) []byte {
	return func(dst []byte) []byte {
		dst = recordpb.AppendBytesKind(dst, recordpb.KindString, []byte(rawID))
		dst = recordpb.AppendInteger(dst, 7)
		return recordpb.AppendBytesKind(dst, recordpb.KindJSON, []byte(`{"changes":[]}`))
	}
}

var speedSpec = client.TableSpec{PrimaryKey: [][]string{{"id"}}, JSONSchema: json.RawMessage(`{"type":"object","properties":{
	"id":{"type":"integer"},"name":{"type":["null","string"]},
	"seen":{"type":"string","format":"date-time","airbyte_type":"timestamp_with_timezone"},
	"_ab_cdc_deleted_at":{"type":["null","string"]},
	"_airbyte_raw_id":{"type":"string"},"_airbyte_generation_id":{"type":"integer"},"_airbyte_meta":{"type":"object"}}}`)}

var speedFields = []string{"id", "name", "seen", "_ab_cdc_deleted_at", "_airbyte_raw_id", "_airbyte_generation_id", "_airbyte_meta"}

// TestImportProtobufOverHTTP: protobuf bodies built as the destination
// builds them, sent by the client (through a retry after a lost
// response), deduplicated; its refusals as 400s naming what is wrong; the
// JSON content type unchanged.
func TestImportProtobufOverHTTP(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	e := startEngine(t, dbURL)
	ctx := context.Background()

	// A proxy that loses the engine's response while lose is set.
	target, _ := url.Parse(e.URL())
	var calls atomic.Int64
	var lose atomic.Bool
	proxy := httputil.NewSingleHostReverseProxy(target)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if lose.CompareAndSwap(true, false) {
			proxy.ServeHTTP(&discardWriter{header: http.Header{}}, r) // the engine commits...
			c, _, _ := w.(http.Hijacker).Hijack()
			c.Close() // ...and the response is lost
			return
		}
		proxy.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	c := apiClient(t, "http://"+ln.Addr().String())

	seen := time.Date(2024, 5, 6, 7, 8, 9, 123456000, time.UTC)
	var b client.ProtoBatch
	users := b.Declare("users", speedSpec, speedFields)
	for i := int64(1); i <= 3; i++ {
		b.AddRecordBytes(users, speedRecord(i, fmt.Sprintf("user %d", i), seen, false), speedMeta(fmt.Sprint("raw", i)))
	}
	lose.Store(true)
	if err := c.ImportProtobuf(ctx, b.Bytes(), ""); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 2 {
		t.Fatalf("%d calls, want the lost one and its retry", calls.Load())
	}
	b.Reset()
	users = b.Declare("users", speedSpec, speedFields)
	b.AddRecordBytes(users, speedRecord(2, "", seen, true), speedMeta("raw4"))
	b.AddRecordBytes(users, speedRecord(3, "user 3'", seen.Add(time.Hour), false), speedMeta("raw5"))
	other := b.Declare("other", client.TableSpec{}, []string{"x"})
	b.AddRecordBytes(other, nil, func(dst []byte) []byte { return recordpb.AppendNumber(dst, 1.5) })
	if b.Len() != 3 || b.Table(2) != "other" {
		t.Fatalf("%d records, the last of %s", b.Len(), b.Table(2))
	}
	if err := c.ImportProtoBatch(ctx, &b, ""); err != nil {
		t.Fatal(err)
	}
	got := rowsOf(t, conn, `SELECT id, name, seen AT TIME ZONE 'UTC', _airbyte_raw_id, _airbyte_generation_id, _airbyte_meta::text FROM users ORDER BY id`)
	want := []string{"1|user 1|2024-05-06 07:08:09.123456 +0000 UTC|raw1|7|{\"changes\": []}", "3|user 3'|2024-05-06 08:08:09.123456 +0000 UTC|raw5|7|{\"changes\": []}"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("users:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := rowsOf(t, conn, `SELECT x::text FROM other`); len(got) != 1 || got[0] != "1.5" {
		t.Errorf("other: %v", got)
	}

	// Refusals: a value of the wrong kind names the message and field.
	b.Reset()
	users = b.Declare("users", speedSpec, speedFields)
	b.AddRecordBytes(users, speedRecord(9, "x", seen, false), speedMeta("raw9"))
	b.AddRecordBytes(users, speedRecord(10, "y", seen, false), func(dst []byte) []byte {
		return recordpb.AppendBytesKind(dst, recordpb.KindString, []byte("raw10")) // two values short
	})
	err = c.ImportProtobuf(ctx, b.Bytes(), "")
	wantCode(t, err, http.StatusBadRequest, "InvalidRecord")
	if ce := err.(*client.Error); !strings.Contains(ce.Message, "message 1 (table users) has 5 values") {
		t.Errorf("message: %s", ce.Message)
	}
	post := func(contentType string, body []byte) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, e.URL()+"/api/streaming_import/import_airbyte_records", bytes.NewReader(body))
		req.Header.Set("Authorization", "Convex "+testKey)
		req.Header.Set("Content-Type", contentType)
		resp, out := roundTrip(t, req)
		return resp.StatusCode, string(out)
	}
	var valid client.ProtoBatch
	valid.AddRecordBytes(valid.Declare("users", speedSpec, speedFields), speedRecord(12, "v", seen, false), speedMeta("raw12"))
	b.Reset()
	users = b.Declare("users", speedSpec, speedFields)
	b.AddRecordBytes(users, speedRecord(11, "z", seen, false), func(dst []byte) []byte {
		dst = recordpb.AppendInteger(dst, 11) // _airbyte_raw_id
		dst = recordpb.AppendInteger(dst, 7)
		return recordpb.AppendNull(dst)
	})
	for _, c := range []struct {
		contentType string
		body        []byte
		code, want  string
	}{
		{"application/x-protobuf", b.Bytes(), "InvalidRecord", `message 0 (table users), field \"_airbyte_raw_id\": the value is an integer`},
		{"application/x-protobuf", append(valid.Bytes(), 2, 0x2a, 9), "BadProtobufBody", "frame 2 (message 1): malformed ImportRecord"},
		{"application/x-protobuf; charset=binary", nil, "BadProtobufBody", "The protobuf body is empty"},
		{"application/json", b.Bytes(), "BadJsonBody", "Failed to parse the JSON body"},
		{"text/plain", b.Bytes(), "BadJsonBody", "Expected request with `Content-Type: application/json`"},
	} {
		status, out := post(c.contentType, c.body)
		if status != http.StatusBadRequest || !strings.Contains(out, `"code":"`+c.code+`"`) || !strings.Contains(out, c.want) {
			t.Errorf("%s: %d %s, want 400 %s mentioning %s", c.contentType, status, out, c.code, c.want)
		}
	}
	// A body cut short by its client.
	body := valid.Bytes()
	raw, err := net.Dial("tcp", strings.TrimPrefix(e.URL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	fmt.Fprintf(raw, "POST /api/streaming_import/import_airbyte_records HTTP/1.1\r\nHost: x\r\nAuthorization: Convex %s\r\nContent-Type: application/x-protobuf\r\nContent-Length: %d\r\n\r\n%s", testKey, len(body)+100, body)
	_ = raw.(*net.TCPConn).CloseWrite()
	_ = raw.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(raw), nil)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(out), "BadProtobufBody") || !strings.Contains(string(out), "ended within frame 2") {
		t.Errorf("body cut short: %d %s", resp.StatusCode, out)
	}
	if got := rowsOf(t, conn, `SELECT count(*) FROM users`); got[0] != "2" {
		t.Errorf("%s rows after the refusals, want 2", got[0])
	}
}
