package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
)

// SnapshotRangesRequest asks list_snapshot_ranges to start a snapshot of
// one table read in key ranges.
type SnapshotRangesRequest struct {
	TableName string
	// Ranges is how many ranges to split the table into (1 to 64); 0 = 1.
	Ranges int
	// Snapshot takes the snapshot at this ts (nil: now).
	Snapshot *int64
}

// SnapshotRanges is a snapshot of one table in key ranges: each cursor,
// passed to list_snapshot with the snapshot and the table's name, reads one
// range to its end. There may be fewer cursors than ranges asked for.
type SnapshotRanges struct {
	Snapshot int64    `json:"snapshot"`
	Cursors  []string `json:"cursors"`
}

// ListSnapshotRanges starts a snapshot of one table and returns cursors
// reading it in disjoint key ranges, to read concurrently (an extension of
// the engine, not in Convex's API).
func (c *Client) ListSnapshotRanges(ctx context.Context, req SnapshotRangesRequest) (*SnapshotRanges, error) {
	q := url.Values{"tableName": {req.TableName}}
	if req.Ranges > 0 {
		q.Set("ranges", strconv.Itoa(req.Ranges))
	}
	if req.Snapshot != nil {
		q.Set("snapshot", strconv.FormatInt(*req.Snapshot, 10))
	}
	var out SnapshotRanges
	if err := c.do(ctx, http.MethodGet, "/api/list_snapshot_ranges", q, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
