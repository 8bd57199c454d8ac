package replication

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shapelog/shapelog/engine/catalog"
	"github.com/shapelog/shapelog/engine/shapelog"
)

// relation is a table as the current replication session knows it.
type relation struct {
	stored *shapelog.Relation
	table  *catalog.Table // for building keys
}

// streamer holds one session's decoding state.
type streamer struct {
	r         *Replicator
	conn      *pgconn.PgConn
	sink      sink
	res       resolver
	relations map[uint32]*relation
	txn       txnWriter
	skipping  bool // inside a transaction the log already holds
	inTxn     bool
	change    shapelog.Change
	values    [][]byte
	old       [][]byte
	keyBuf    []byte
	oldKeyBuf []byte

	lastSent   uint64
	nextStatus time.Time
	deadline   time.Time
	// lastReceived is when the server last sent anything; lastKeepalive
	// when it last sent a keepalive (the answer to a status update that
	// requests one).
	lastReceived  time.Time
	lastKeepalive time.Time
}

// ErrTimeout ends a session that received nothing within Config.Timeout.
var ErrTimeout = errors.New("replication timeout")

// newStreamer starts a session's decoding state: changes received on conn
// go to out, and RELATION messages are completed through res.
func newStreamer(r *Replicator, conn *pgconn.PgConn, out sink, res resolver) *streamer {
	now := time.Now()
	return &streamer{r: r, conn: conn, sink: out, res: res, relations: map[uint32]*relation{}, lastReceived: now, lastKeepalive: now}
}

// close ends the session: a transaction cut off before its COMMIT is
// dropped, and PostgreSQL sends it whole again on the next session.
func (s *streamer) close() {
	if s.txn != nil {
		_ = s.txn.Abort()
	}
}

// stream decodes pgoutput messages until the connection or ctx ends.
func (r *Replicator) stream(ctx context.Context, conn *pgconn.PgConn) error {
	s := newStreamer(r, conn, storeSink{r.store}, catalogResolver{q: r.pool, types: r.types})
	defer s.close()
	durableCh := s.sink.Advanced()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.sink.Err(); err != nil {
			return fmt.Errorf("shape log: %w", err)
		}
		now := time.Now()
		select {
		case <-r.poke:
			if err := s.sendStatus(true); err != nil {
				return err
			}
		case <-durableCh:
			durableCh = s.sink.Advanced()
			// Confirm promptly so WAL is released, at most ten times a second.
			if s.nextStatus.Sub(now) > 100*time.Millisecond {
				s.nextStatus = now.Add(100 * time.Millisecond)
			}
		default:
		}
		if !now.Before(s.nextStatus) {
			// Ask for a keepalive unless one came lately: its WAL end
			// measures the lag, and its arrival proves the connection.
			if err := s.sendStatus(now.Sub(s.lastKeepalive) >= r.cfg.StatusInterval); err != nil {
				return err
			}
		}
		// Wake at least every 100ms to serve pokes and status updates,
		// without a context (and its goroutine) per message.
		if s.deadline.Sub(now) < 50*time.Millisecond {
			s.deadline = now.Add(100 * time.Millisecond)
			if err := conn.Conn().SetReadDeadline(s.deadline); err != nil {
				return err
			}
		}
		msg, err := conn.ReceiveMessage(context.Background())
		if err != nil {
			if !pgconn.Timeout(err) {
				return fmt.Errorf("receiving from replication stream: %w", err)
			}
			if silent := time.Since(s.lastReceived); silent >= r.cfg.Timeout {
				return fmt.Errorf("%w: nothing received from PostgreSQL for %s, not even a keepalive (--replication-timeout %s); the connection is presumed dead",
					ErrTimeout, silent.Round(time.Millisecond), r.cfg.Timeout)
			}
			continue
		}
		s.lastReceived = time.Now()
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			if err := s.handleCopyData(ctx, msg.Data); err != nil {
				return err
			}
		case *pgproto3.ErrorResponse:
			return pgconn.ErrorResponseToPgError(msg)
		case *pgproto3.CopyDone:
			return fmt.Errorf("server ended the replication stream")
		}
	}
}

func (s *streamer) sendStatus(replyRequested bool) error {
	pos := pglogrepl.LSN(s.sink.Durable().EndLSN)
	// A dead connection must not block the loop: the write gives up when
	// the session would time out anyway.
	if err := s.conn.Conn().SetWriteDeadline(time.Now().Add(s.r.cfg.Timeout)); err != nil {
		return err
	}
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), s.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pos, WALFlushPosition: pos, WALApplyPosition: pos, ReplyRequested: replyRequested,
	})
	if err != nil {
		return fmt.Errorf("sending standby status: %w", err)
	}
	if uint64(pos) != s.lastSent {
		s.r.log.Debug().Str("lsn", pos.String()).Msg("confirmed")
		s.lastSent = uint64(pos)
	}
	s.nextStatus = time.Now().Add(s.r.cfg.StatusInterval)
	return nil
}

// handleCopyData handles one message of the replication stream. A message
// it does not know ends the session with an error rather than being
// skipped: skipping could lose changes, while the next session resumes
// from the confirmed position and loses nothing; if the server keeps
// sending it, replication stays down and /v1/health shows the error.
func (s *streamer) handleCopyData(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		return errors.New("empty message in the replication stream")
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return err
		}
		s.lastKeepalive = time.Now()
		s.r.lag.observe(uint64(ka.ServerWALEnd), s.sink.Durable().EndLSN, s.lastKeepalive)
		if !s.inTxn {
			// Everything before the server's position has been decoded and
			// sent, so nothing the log needs lies below it.
			s.sink.SkipTo(uint64(ka.ServerWALEnd))
			s.r.setProcessed(uint64(ka.ServerWALEnd))
		}
		if ka.ReplyRequested {
			return s.sendStatus(false)
		}
		return nil
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return err
		}
		return s.handle(ctx, xld.WALData)
	}
	return fmt.Errorf("unknown message type %q in the replication stream", data[0])
}

func (s *streamer) handle(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		return errors.New("empty pgoutput message")
	}
	msg, err := pglogrepl.Parse(data)
	if err != nil {
		return fmt.Errorf("decoding pgoutput message %q: %w", data[0], err)
	}
	switch m := msg.(type) {
	case *pglogrepl.BeginMessage:
		s.inTxn = true
		s.skipping = uint64(m.FinalLSN) <= s.sink.Written().CommitLSN
		if !s.skipping {
			s.txn = s.sink.Begin(uint64(m.FinalLSN), m.Xid, m.CommitTime.UnixNano())
		}
	case *pglogrepl.CommitMessage:
		s.inTxn = false
		end := uint64(m.TransactionEndLSN)
		if s.txn != nil {
			txn := s.txn
			s.txn = nil
			if err := txn.Commit(end); err != nil {
				return fmt.Errorf("writing transaction: %w", err)
			}
		}
		s.skipping = false
		s.r.setProcessed(end)
	case *pglogrepl.RelationMessage:
		return s.handleRelation(ctx, m)
	case *pglogrepl.InsertMessage:
		return s.add(shapelog.OpInsert, m.RelationID, m.Tuple, nil, 0)
	case *pglogrepl.UpdateMessage:
		return s.add(shapelog.OpUpdate, m.RelationID, m.NewTuple, m.OldTuple, m.OldTupleType)
	case *pglogrepl.DeleteMessage:
		return s.add(shapelog.OpDelete, m.RelationID, nil, m.OldTuple, m.OldTupleType)
	case *pglogrepl.TruncateMessage:
		if s.txn == nil {
			return nil
		}
		for _, oid := range m.RelationIDs {
			rel := s.relations[oid]
			if rel == nil {
				continue
			}
			if err := s.txn.Add(&shapelog.Change{Op: shapelog.OpTruncate, Relation: oid, Version: rel.stored.Version}); err != nil {
				return err
			}
		}
	case *pglogrepl.TypeMessage, *pglogrepl.OriginMessage:
		// A user-defined type's name (types are looked up in the catalog
		// with RELATION messages), and the origin of a transaction
		// replicated from elsewhere: nothing for the log.
	default:
		// Logical decoding messages and streamed transactions are only
		// sent when asked for; the engine does not ask.
		return fmt.Errorf("unexpected pgoutput message %q (%s)", data[0], msg.Type())
	}
	return nil
}

func (s *streamer) handleRelation(ctx context.Context, m *pglogrepl.RelationMessage) error {
	rel := shapelog.Relation{OID: m.RelationID, Schema: m.Namespace, Name: m.RelationName}
	table := &catalog.Table{OID: m.RelationID, Schema: m.Namespace, Name: m.RelationName, ReplicaIdentity: m.ReplicaIdentity}
	for _, c := range m.Columns {
		rel.Columns = append(rel.Columns, shapelog.Column{Name: c.Name, TypeOID: c.DataType, TypeMod: c.TypeModifier})
		// A RELATION message comes after a schema change (and on every new
		// session): look user-defined types up afresh (new enum values).
		typ, err := s.res.Type(ctx, c.DataType)
		if err != nil {
			return fmt.Errorf("resolving type of %s.%s.%s: %w", m.Namespace, m.RelationName, c.Name, err)
		}
		table.Columns = append(table.Columns, catalog.Column{Name: c.Name, Type: typ})
	}
	// The stream names the replica identity columns (all of them under
	// FULL); the primary key comes from the catalog. A table dropped since
	// has none to find; any other failure ends the session, and PostgreSQL
	// sends the RELATION again when it resumes.
	current, err := s.res.Table(ctx, m.RelationID)
	if err != nil && !errors.Is(err, catalog.ErrTableNotFound) {
		return fmt.Errorf("reading the primary key of %s.%s: %w", m.Namespace, m.RelationName, err)
	}
	if current != nil {
		for _, k := range current.Key {
			for i, c := range rel.Columns {
				if c.Name == current.Columns[k].Name {
					rel.Key = append(rel.Key, i)
				}
			}
		}
		if len(rel.Key) != len(current.Key) {
			rel.Key = nil // a key column the stream does not carry yet
		}
	}
	table.Key = rel.Key
	stored, err := s.sink.PutRelation(rel)
	if err != nil {
		return err
	}
	s.relations[m.RelationID] = &relation{stored: stored, table: table}
	if m.ReplicaIdentity != 'f' {
		s.r.log.Warn().Str("table", m.Namespace+"."+m.RelationName).Msg("table is not REPLICA IDENTITY FULL: unchanged TOAST values in updates cannot be filled in")
	}
	return nil
}

// tupleValues fills dst with the tuple's text values (nil = NULL); unchanged
// TOAST values ('u') are taken from old when given.
func (s *streamer) tupleValues(dst [][]byte, t *pglogrepl.TupleData, old [][]byte, rel *relation) [][]byte {
	dst = dst[:0]
	for i, c := range t.Columns {
		switch c.DataType {
		case pglogrepl.TupleDataTypeText, pglogrepl.TupleDataTypeBinary:
			v := c.Data
			if v == nil {
				v = []byte{}
			}
			dst = append(dst, v)
		case pglogrepl.TupleDataTypeToast:
			if i < len(old) && old[i] != nil {
				dst = append(dst, old[i])
			} else {
				s.r.log.Error().Str("table", rel.table.Schema+"."+rel.table.Name).Str("column", rel.stored.Columns[i].Name).
					Msg("unchanged TOAST value without an old row (table is not REPLICA IDENTITY FULL); logged as NULL")
				dst = append(dst, nil)
			}
		default:
			dst = append(dst, nil)
		}
	}
	return dst
}

// add logs one row change. oldType is 'O' when oldTuple is the whole old
// row (REPLICA IDENTITY FULL) and 'K' when it holds only the key columns.
func (s *streamer) add(op shapelog.Op, oid uint32, newTuple, oldTuple *pglogrepl.TupleData, oldType uint8) error {
	if s.txn == nil {
		return nil // skipping a transaction the log already holds
	}
	rel := s.relations[oid]
	if rel == nil {
		return fmt.Errorf("change for relation %d before its RELATION message", oid)
	}
	c := &s.change
	*c = shapelog.Change{Op: op, Relation: oid, Version: rel.stored.Version}
	s.old = s.old[:0]
	if oldTuple != nil {
		s.old = s.tupleValues(s.old, oldTuple, nil, rel)
	}
	switch op {
	case shapelog.OpInsert, shapelog.OpUpdate:
		s.values = s.tupleValues(s.values, newTuple, s.old, rel)
		c.Values = s.values
		s.keyBuf = rel.table.AppendKey(s.keyBuf[:0], c.Values)
		c.Key = s.keyBuf
		if op == shapelog.OpUpdate && oldTuple != nil {
			if oldType == pglogrepl.UpdateMessageTupleTypeOld && len(s.old) == len(c.Values) {
				c.Old = s.old
			}
			s.oldKeyBuf = rel.table.AppendKey(s.oldKeyBuf[:0], s.old)
			if string(s.oldKeyBuf) != string(s.keyBuf) {
				c.OldKey = s.oldKeyBuf
			}
		}
	case shapelog.OpDelete:
		c.Values = s.old
		s.keyBuf = rel.table.AppendKey(s.keyBuf[:0], s.old)
		c.Key = s.keyBuf
	}
	return s.txn.Add(c)
}
