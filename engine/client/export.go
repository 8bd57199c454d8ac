package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/shapelog/shapelog/engine/recordpb"
)

// ExportQuery asks for one page of list_snapshot or document_deltas.
type ExportQuery struct {
	TableName string // "" = every published table
	// Snapshot is list_snapshot's snapshot, from the first page, on later
	// pages.
	Snapshot *int64
	// Cursor is list_snapshot's cursor from the page before, or
	// document_deltas' cursor (a ts in decimal; required there).
	Cursor *string
	// Limit is the page size; 0 = the server's default.
	Limit int
}

// MaxExportFrame bounds one frame of an export answer in protobuf: a
// document (one row) or a table's field names.
const MaxExportFrame = 256 << 20

// ExportFrames reads one page of endpoint ("list_snapshot" or
// "document_deltas") in protobuf frames (format=protobuf): onFields gets
// each Fields frame, the names of the values of the documents after it;
// onDocument each Document frame's bytes (an encoded recordpb.Document, for
// recordpb.ScanDocument; valid only during the call). It returns the
// page's PageEnd: the snapshot (list_snapshot), the cursor to continue from
// (absent: none) and whether more pages follow.
//
// The page streams through in the memory of its largest frame. Requests
// are retried as the JSON page calls' are (connection errors, 429, 5xx),
// and so is a body that breaks off before anything was passed to the
// callbacks; after that a failure is returned, as is a body that ends
// without its PageEnd frame, so a cut-off page is never taken for a whole
// one.
func (c *Client) ExportFrames(ctx context.Context, endpoint string, q ExportQuery, onFields func(f *recordpb.Fields) error, onDocument func(doc []byte) error) (*recordpb.PageEnd, error) {
	switch endpoint {
	case "list_snapshot", "document_deltas":
	default:
		return nil, fmt.Errorf("ExportFrames: unknown endpoint %q (want list_snapshot or document_deltas)", endpoint)
	}
	query := url.Values{"format": {"protobuf"}}
	if q.TableName != "" {
		query.Set("tableName", q.TableName)
	}
	if q.Snapshot != nil {
		query.Set("snapshot", strconv.FormatInt(*q.Snapshot, 10))
	}
	if q.Cursor != nil {
		query.Set("cursor", *q.Cursor)
	}
	if q.Limit > 0 {
		query.Set("limit", strconv.Itoa(q.Limit))
	}
	u := *c.base
	u.Path += "/api/" + endpoint
	u.RawQuery = query.Encode()
	for attempt := 0; ; attempt++ {
		f := frameReader{onFields: onFields, onDocument: onDocument}
		end, err := f.page(ctx, c, u.String())
		var be *bodyError
		if err == nil || f.delivered || !errors.As(err, &be) || attempt >= c.pages.RetryMax || ctx.Err() != nil {
			if err != nil {
				return nil, fmt.Errorf("reading /api/%s in protobuf: %w", endpoint, err)
			}
			return end, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(c.pages.Backoff(c.pages.RetryWaitMin, c.pages.RetryWaitMax, attempt, nil)):
		}
	}
}

// bodyError is a failure to read an answer's body (the connection broke,
// or the body ended early): worth a retry if nothing was passed on yet.
type bodyError struct{ err error }

func (e *bodyError) Error() string { return e.err.Error() }
func (e *bodyError) Unwrap() error { return e.err }

// frameReader reads one answer's frames.
type frameReader struct {
	onFields   func(*recordpb.Fields) error
	onDocument func([]byte) error
	delivered  bool // a callback was called
	fields     bool // a Fields frame came
	readErr    error
}

// wrap records the errors of reading r, to tell a broken body from
// malformed frames.
func (f *frameReader) wrap(r io.Reader) io.Reader {
	return readerFunc(func(p []byte) (int, error) {
		n, err := r.Read(p)
		if err != nil {
			f.readErr = err
		}
		return n, err
	})
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func (f *frameReader) page(ctx context.Context, c *Client, target string) (*recordpb.PageEnd, error) {
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Convex "+c.key)
	req.Header.Set("Convex-Client", c.name)
	req.Header.Set("Accept", "application/x-protobuf")
	resp, err := c.pages.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, decodeError(resp)
	}
	if ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); ct != "application/x-protobuf" {
		return nil, fmt.Errorf("the engine answered %q, not application/x-protobuf (does it export in protobuf?)", resp.Header.Get("Content-Type"))
	}
	r := bufio.NewReaderSize(f.wrap(newIdleTimeoutBody(resp.Body, c.timeout)), 64<<10)
	var (
		end *recordpb.PageEnd
		buf []byte
	)
	for {
		frame, err := recordpb.ReadFrame(r, buf, MaxExportFrame)
		switch {
		case err == io.EOF && end == nil:
			return nil, &bodyError{fmt.Errorf("the answer ended without its PageEnd frame: %w", io.ErrUnexpectedEOF)}
		case err == io.EOF:
			return end, nil
		case err != nil && f.readErr != nil && !errors.Is(err, recordpb.ErrFrameTooLarge):
			return nil, &bodyError{err}
		case err != nil:
			return nil, err
		case end != nil:
			return nil, errors.New("a frame after the PageEnd frame")
		}
		buf = frame
		if end, err = f.frame(frame); err != nil {
			return nil, err
		}
	}
}

// frame handles one ExportFrame, and returns its PageEnd if it is one.
func (f *frameReader) frame(b []byte) (*recordpb.PageEnd, error) {
	var end *recordpb.PageEnd
	err := recordpb.EachField(b, func(num protowire.Number, typ protowire.Type, raw []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 1: // fields
			var fields recordpb.Fields
			if err := proto.Unmarshal(raw, &fields); err != nil {
				return fmt.Errorf("malformed Fields frame: %w", err)
			}
			f.fields, f.delivered = true, true
			if f.onFields != nil {
				return f.onFields(&fields)
			}
		case 2: // document
			if !f.fields {
				return errors.New("a Document frame before any Fields frame")
			}
			f.delivered = true
			if f.onDocument != nil {
				return f.onDocument(raw)
			}
		case 3: // end
			end = &recordpb.PageEnd{}
			if err := proto.Unmarshal(raw, end); err != nil {
				return fmt.Errorf("malformed PageEnd frame: %w", err)
			}
		}
		return nil
	})
	return end, err
}
