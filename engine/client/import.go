package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/shapelog/shapelog/engine/catalog"
)

// TableSpec declares one table of an import: its primary key (nil = append
// only) and the JSON Schema its records follow.
type TableSpec struct {
	PrimaryKey [][]string      `json:"primaryKey"`
	JSONSchema json.RawMessage `json:"jsonSchema"`
}

// Message is one record for a table.
type Message struct {
	TableName string          `json:"tableName"`
	Data      json.RawMessage `json:"data"`
}

// ImportRequest is one import_airbyte_records call: one transaction.
type ImportRequest struct {
	Tables   map[string]TableSpec `json:"tables"`
	Messages []Message            `json:"messages"`
}

// NewIdempotencyKey returns a random key for ImportAirbyteRecords.
func NewIdempotencyKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ImportAirbyteRecords writes one batch in one transaction (see
// ImportRecords).
func (c *Client) ImportAirbyteRecords(ctx context.Context, req ImportRequest, idempotencyKey string) error {
	return c.ImportRecords(ctx, req.records(), idempotencyKey)
}

// ImportRecords writes one batch in one transaction. The idempotency key
// (NewIdempotencyKey when empty) goes with every retry, so a batch whose
// response was lost after it committed is not applied twice.
func (c *Client) ImportRecords(ctx context.Context, r *Records, idempotencyKey string) error {
	if idempotencyKey == "" {
		idempotencyKey = NewIdempotencyKey()
	}
	head, err := r.head()
	if err != nil {
		return err
	}
	parts := [][]byte{head, r.messages, []byte("]}")}
	size := len(head) + len(r.messages) + 2
	body := retryablehttp.ReaderFunc(func() (io.Reader, error) {
		return &sizedReader{io.MultiReader(bytes.NewReader(parts[0]), bytes.NewReader(parts[1]), bytes.NewReader(parts[2])), size}, nil
	})
	h := http.Header{"Idempotency-Key": {idempotencyKey}}
	return c.do(ctx, http.MethodPost, "/api/streaming_import/import_airbyte_records", nil, body, h, nil)
}

// ImportProtobuf writes one batch in one transaction, as ImportRecords
// does (the same retries and idempotency key), from a protobuf body: an
// ImportHeader frame, then ImportRecord frames (see ProtoBatch, which
// builds one).
func (c *Client) ImportProtobuf(ctx context.Context, body []byte, idempotencyKey string) error {
	return c.importProtobuf(ctx, [][]byte{body}, idempotencyKey)
}

// ImportProtoBatch is ImportProtobuf for b's body, sent without copying
// its records into one buffer.
func (c *Client) ImportProtoBatch(ctx context.Context, b *ProtoBatch, idempotencyKey string) error {
	return c.importProtobuf(ctx, [][]byte{b.header(), b.records}, idempotencyKey)
}

func (c *Client) importProtobuf(ctx context.Context, parts [][]byte, idempotencyKey string) error {
	if idempotencyKey == "" {
		idempotencyKey = NewIdempotencyKey()
	}
	size := 0
	for _, p := range parts {
		size += len(p)
	}
	body := retryablehttp.ReaderFunc(func() (io.Reader, error) {
		readers := make([]io.Reader, len(parts))
		for i, p := range parts {
			readers[i] = bytes.NewReader(p)
		}
		return &sizedReader{io.MultiReader(readers...), size}, nil
	})
	h := http.Header{"Idempotency-Key": {idempotencyKey}, "Content-Type": {ProtobufContentType}}
	return c.do(ctx, http.MethodPost, "/api/streaming_import/import_airbyte_records", nil, body, h, nil)
}

// sizedReader tells the HTTP client the body's length.
type sizedReader struct {
	io.Reader
	size int
}

func (s *sizedReader) Len() int { return s.size }

// MarshalJSON writes the request with the records' JSON as it is.
func (r ImportRequest) MarshalJSON() ([]byte, error) {
	rec := r.records()
	head, err := rec.head()
	if err != nil {
		return nil, err
	}
	return append(append(head, rec.messages...), "]}"...), nil
}

func (r ImportRequest) records() *Records {
	size := 0
	for _, m := range r.Messages {
		size += len(m.TableName) + len(m.Data) + 32
	}
	// Sized up front: growing a body of many megabytes by doubling copies
	// it again and again into fresh memory.
	rec := &Records{messages: make([]byte, 0, size), names: make([]string, 0, len(r.Messages))}
	for name, spec := range r.Tables {
		rec.Declare(name, spec)
	}
	for _, m := range r.Messages {
		rec.Add(m.TableName, func(b []byte) []byte { return append(b, m.Data...) })
	}
	return rec
}

// Records is an import_airbyte_records body built one record at a time:
// each record's JSON is written once, straight into the buffer that is
// sent (records are trusted to be valid JSON: the engine validates them
// anyway), and Reset keeps that buffer for the next batch.
type Records struct {
	tables   map[string]TableSpec
	messages []byte   // the messages array's elements
	names    []string // each message's table
	quoted   []byte   // the last table name, as JSON
}

// Declare gives table's primary key and JSON Schema.
func (r *Records) Declare(table string, spec TableSpec) {
	if r.tables == nil {
		r.tables = map[string]TableSpec{}
	}
	r.tables[table] = spec
}

// Add appends a record of table: data appends its JSON object (nothing
// appended stands for null).
func (r *Records) Add(table string, data func([]byte) []byte) {
	if len(r.names) > 0 {
		r.messages = append(r.messages, ',')
	}
	if len(r.names) == 0 || r.names[len(r.names)-1] != table { // batches are mostly one table
		r.quoted, _ = json.Marshal(table)
	}
	r.names = append(r.names, table)
	r.messages = append(r.messages, `{"tableName":`...)
	r.messages = append(r.messages, r.quoted...)
	r.messages = append(r.messages, `,"data":`...)
	n := len(r.messages)
	if r.messages = data(r.messages); len(r.messages) == n {
		r.messages = append(r.messages, "null"...)
	}
	r.messages = append(r.messages, '}')
}

// Len is the number of records.
func (r *Records) Len() int { return len(r.names) }

// Size is the records' size in bytes.
func (r *Records) Size() int { return len(r.messages) }

// Table is the table of record i.
func (r *Records) Table(i int) string { return r.names[i] }

// Reset empties r, keeping its buffers.
func (r *Records) Reset() {
	clear(r.tables)
	r.messages, r.names = r.messages[:0], r.names[:0]
}

// head is the body up to the first message.
func (r *Records) head() ([]byte, error) {
	tables := r.tables
	if tables == nil {
		tables = map[string]TableSpec{}
	}
	t, err := json.Marshal(tables)
	if err != nil {
		return nil, err
	}
	return append(append([]byte(`{"tables":`), t...), `,"messages":[`...), nil
}

// AddPrimaryKeyIndexes starts building the unique indexes dedup relies on,
// creating tables as needed: table -> key fields (each a path).
func (c *Client) AddPrimaryKeyIndexes(ctx context.Context, indexes map[string][][]string) error {
	return c.do(ctx, http.MethodPut, "/api/streaming_import/add_primary_key_indexes", nil, map[string]any{"indexes": indexes}, nil, nil)
}

// PrimaryKeyIndexesReady reports whether the tables' key indexes are built.
func (c *Client) PrimaryKeyIndexesReady(ctx context.Context, tables []string) (bool, error) {
	var out struct {
		IndexesReady bool `json:"indexesReady"`
	}
	err := c.do(ctx, http.MethodGet, "/api/streaming_import/primary_key_indexes_ready", nil, map[string]any{"tables": tables}, nil, &out)
	return out.IndexesReady, err
}

// ClearTables empties tables (creating missing ones) in one transaction.
func (c *Client) ClearTables(ctx context.Context, tables []string) error {
	return c.do(ctx, http.MethodPut, "/api/streaming_import/clear_tables", nil, map[string]any{"tableNames": tables}, nil, nil)
}

// CheckWrite asks the engine to prove that imports can write into each
// schema (create it, a table and a row, all rolled back).
func (c *Client) CheckWrite(ctx context.Context, schemas []string) error {
	return c.do(ctx, http.MethodPut, "/api/streaming_import/check_write", nil, map[string]any{"schemas": schemas}, nil, nil)
}

// DeleteOtherGenerations ends overwrite syncs: it deletes, in one
// transaction, each table's rows whose _airbyte_generation_id is not the
// given generation, and returns how many rows went per table.
func (c *Client) DeleteOtherGenerations(ctx context.Context, keep map[string]int64) (map[string]int64, error) {
	var out struct {
		Deleted map[string]int64 `json:"deleted"`
	}
	err := c.do(ctx, http.MethodPut, "/api/streaming_import/delete_other_generations", nil, map[string]any{"tables": keep}, nil, &out)
	return out.Deleted, err
}

// TableName is the API name of table in schema ("t" in public, "s.t"
// otherwise, quoting parts that contain '.' or '"').
func TableName(schema, table string) string { return catalog.APIName(schema, table) }
