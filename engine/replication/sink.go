package replication

import (
	"context"

	"github.com/shapelog/shapelog/engine/catalog"
	"github.com/shapelog/shapelog/engine/shapelog"
)

// sink is what the streamer writes decoded transactions to: the shape log
// (a *shapelog.Store, through storeSink).
type sink interface {
	// Written is the position of the last transaction written.
	Written() shapelog.Position
	// Durable is the position of the last durable transaction, the one
	// confirmed to PostgreSQL.
	Durable() shapelog.Position
	// Advanced returns a channel closed when Durable next moves.
	Advanced() <-chan struct{}
	// Err reports a failure that must end the stream.
	Err() error
	// SkipTo records that the stream holds nothing for the log below endLSN.
	SkipTo(endLSN uint64)
	// PutRelation records a relation layout and returns its version.
	PutRelation(rel shapelog.Relation) (*shapelog.Relation, error)
	// Begin starts writing a transaction.
	Begin(commitLSN uint64, xid uint32, commitTime int64) txnWriter
}

// txnWriter writes one transaction (a *shapelog.Txn): changes as they
// arrive, then Commit, or Abort when the stream breaks before the COMMIT.
type txnWriter interface {
	Add(c *shapelog.Change) error
	Commit(endLSN uint64) error
	Abort() error
}

// storeSink is the shape log as a sink.
type storeSink struct{ *shapelog.Store }

func (s storeSink) Begin(commitLSN uint64, xid uint32, commitTime int64) txnWriter {
	return s.Store.Begin(commitLSN, xid, commitTime)
}

// resolver describes what RELATION messages name, from the catalog.
type resolver interface {
	// Type returns the type with the given OID as the catalog has it now
	// (not as cached before a schema change: new enum values).
	Type(ctx context.Context, oid uint32) (*catalog.Type, error)
	// Table returns the table with the given OID (for its primary key), or
	// an error wrapping catalog.ErrTableNotFound when it has been dropped.
	Table(ctx context.Context, oid uint32) (*catalog.Table, error)
}

// catalogResolver reads the database's catalog through q.
type catalogResolver struct {
	q     catalog.Querier
	types *catalog.Types
}

func (c catalogResolver) Type(ctx context.Context, oid uint32) (*catalog.Type, error) {
	c.types.Forget(oid)
	return c.types.Lookup(ctx, c.q, oid)
}

func (c catalogResolver) Table(ctx context.Context, oid uint32) (*catalog.Table, error) {
	return catalog.LoadTable(ctx, c.q, c.types, oid)
}
