package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/shapelog/shapelog/engine/recordpb"
)

func exportFrame(t *testing.T, f *recordpb.ExportFrame) []byte {
	t.Helper()
	b, err := proto.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	return recordpb.AppendDelimited(nil, b)
}

// testPage is an answer: Fields, two documents, PageEnd.
func testPage(t *testing.T) (fields, docs, end []byte) {
	fields = exportFrame(t, &recordpb.ExportFrame{Kind: &recordpb.ExportFrame_Fields{Fields: &recordpb.Fields{Table: "t", Names: []string{"a", "b"}}}})
	for i := range 2 {
		docs = append(docs, exportFrame(t, &recordpb.ExportFrame{Kind: &recordpb.ExportFrame_Document{Document: &recordpb.Document{
			Ts: int64(100 + i), Data: []*recordpb.Value{{Kind: &recordpb.Value_Integer{Integer: int64(i)}}, {IsNull: true}},
		}}})...)
	}
	cursor := "next"
	snap := int64(42)
	end = exportFrame(t, &recordpb.ExportFrame{Kind: &recordpb.ExportFrame_End{End: &recordpb.PageEnd{Snapshot: &snap, Cursor: &cursor, HasMore: true}}})
	return fields, docs, end
}

func TestExportFrames(t *testing.T) {
	fields, docs, end := testPage(t)
	var calls atomic.Int64
	var kase atomic.Value // which answer the server gives
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		q := r.URL.Query()
		if r.URL.Path != "/api/list_snapshot" || q.Get("format") != "protobuf" || r.Header.Get("Accept") != "application/x-protobuf" ||
			q.Get("tableName") != "t" || q.Get("snapshot") != "42" || q.Get("cursor") != "c" || q.Get("limit") != "2" {
			t.Errorf("request %s %v", r.URL, r.Header)
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		switch kase.Load().(string) {
		case "cut-before":
			// The first attempt breaks off inside the first frame: retried.
			if n == 1 {
				_, _ = w.Write(fields[:3])
				return
			}
		case "cut-after":
			// Breaks off after a document: an error, not retried.
			_, _ = w.Write(append(fields, docs...))
			return
		case "abort":
			_, _ = w.Write(append(fields, docs...))
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		case "huge":
			_, _ = w.Write(protowire.AppendVarint(nil, 300<<20))
			return
		case "unavailable":
			if n == 1 {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write([]byte(`{"code":"DatabaseUnavailable","message":"later"}`))
				return
			}
		case "bad":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"code":"InvalidListSnapshotCursor","message":"bad cursor"}`))
			return
		case "json":
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"values":[]}`))
			return
		}
		_, _ = w.Write(append(append(fields, docs...), end...))
	}))
	defer srv.Close()
	c, err := New(srv.URL+"/", "k", Options{RetryWaitMin: time.Millisecond, RetryWaitMax: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	query := func() ExportQuery {
		snap, cursor := int64(42), "c"
		return ExportQuery{TableName: "t", Snapshot: &snap, Cursor: &cursor, Limit: 2}
	}
	read := func(k string) (*recordpb.PageEnd, []string, error) {
		calls.Store(0)
		kase.Store(k)
		var got []string
		end, err := c.ExportFrames(context.Background(), "list_snapshot", query(), func(f *recordpb.Fields) error {
			got = append(got, "fields:"+f.Table+":"+strings.Join(f.Names, ","))
			return nil
		}, func(doc []byte) error {
			d, err := recordpb.ScanDocument(doc)
			if err != nil {
				return err
			}
			got = append(got, fmt.Sprintf("doc:%d", d.Ts-100))
			return nil
		})
		return end, got, err
	}
	end2, got, err := read("")
	if err != nil || end2.GetSnapshot() != 42 || end2.GetCursor() != "next" || !end2.GetHasMore() || strings.Join(got, " ") != "fields:t:a,b doc:0 doc:1" || calls.Load() != 1 {
		t.Fatalf("page: %v %v %q, %d calls", end2, err, got, calls.Load())
	}
	if _, got, err = read("cut-before"); err != nil || len(got) != 3 || calls.Load() != 2 {
		t.Fatalf("cut before anything was passed on: %v %q, %d calls; want a retry", err, got, calls.Load())
	}
	if _, got, err = read("unavailable"); err != nil || len(got) != 3 || calls.Load() != 2 {
		t.Fatalf("503: %v %q, %d calls; want a retry", err, got, calls.Load())
	}
	for _, kase := range []string{"cut-after", "abort"} {
		if _, got, err = read(kase); !errors.Is(err, io.ErrUnexpectedEOF) || len(got) != 3 || calls.Load() != 1 {
			t.Fatalf("%s: %v %q, %d calls; want an unexpected EOF and no retry", kase, err, got, calls.Load())
		}
	}
	if _, _, err = read("huge"); !errors.Is(err, recordpb.ErrFrameTooLarge) || calls.Load() != 1 {
		t.Fatalf("huge frame: %v, %d calls", err, calls.Load())
	}
	var ce *Error
	if _, _, err = read("bad"); !errors.As(err, &ce) || ce.Code != "InvalidListSnapshotCursor" || calls.Load() != 1 {
		t.Fatalf("400: %v, %d calls", err, calls.Load())
	}
	if _, _, err = read("json"); err == nil || !strings.Contains(err.Error(), "application/json") {
		t.Fatalf("a JSON answer: %v", err)
	}
	// A callback's error ends the page, as it is.
	stop := errors.New("stop")
	kase.Store("")
	if _, err := c.ExportFrames(context.Background(), "list_snapshot", query(), nil, func([]byte) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("callback error: %v", err)
	}
	if _, err := c.ExportFrames(context.Background(), "json_schemas", ExportQuery{}, nil, nil); err == nil {
		t.Fatal("an unknown endpoint was accepted")
	}
}
