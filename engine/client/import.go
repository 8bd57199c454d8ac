package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"

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

// ImportAirbyteRecords writes one batch in one transaction. The idempotency
// key (NewIdempotencyKey when empty) goes with every retry, so a batch whose
// response was lost after it committed is not applied twice.
func (c *Client) ImportAirbyteRecords(ctx context.Context, req ImportRequest, idempotencyKey string) error {
	if idempotencyKey == "" {
		idempotencyKey = NewIdempotencyKey()
	}
	body, err := req.MarshalJSON()
	if err != nil {
		return err
	}
	h := http.Header{"Idempotency-Key": {idempotencyKey}}
	return c.do(ctx, http.MethodPost, "/api/streaming_import/import_airbyte_records", nil, rawBody(body), h, nil)
}

// MarshalJSON writes the request with the records' JSON as it is: records
// are trusted to be valid JSON (the engine validates them anyway), which
// saves re-encoding every record on the client.
func (r ImportRequest) MarshalJSON() ([]byte, error) {
	tables := r.Tables
	if tables == nil {
		tables = map[string]TableSpec{}
	}
	t, err := json.Marshal(tables)
	if err != nil {
		return nil, err
	}
	size := len(t) + 32
	for _, m := range r.Messages {
		size += len(m.TableName) + len(m.Data) + 32
	}
	b := make([]byte, 0, size)
	b = append(b, `{"tables":`...)
	b = append(b, t...)
	b = append(b, `,"messages":[`...)
	var lastName string
	var name []byte
	for i, m := range r.Messages {
		if i > 0 {
			b = append(b, ',')
		}
		if name == nil || m.TableName != lastName { // batches are mostly one table
			name, _ = json.Marshal(m.TableName)
			lastName = m.TableName
		}
		b = append(b, `{"tableName":`...)
		b = append(b, name...)
		b = append(b, `,"data":`...)
		if len(m.Data) == 0 {
			b = append(b, "null"...)
		} else {
			b = append(b, m.Data...)
		}
		b = append(b, '}')
	}
	return append(b, "]}"...), nil
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
