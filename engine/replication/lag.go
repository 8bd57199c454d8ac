package replication

import (
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
)

// Lag is how far the shape log is behind PostgreSQL.
//
// Bytes is the server's WAL end, as its last keepalive reported it, minus
// the position the log has made durable (and confirms to PostgreSQL).
// Seconds is how long ago the server reported the oldest WAL position the
// log has not made durable yet: 0 when the log holds everything the server
// has reported, growing by one each second while the log makes no progress
// (replication stuck or disconnected), and about the time changes take from
// PostgreSQL to the durable log under load. Its resolution is 0.1 s.
type Lag struct {
	ServerWALEnd uint64 // 0 until the first keepalive
	DurableLSN   uint64
	Bytes        uint64
	Seconds      float64
}

// walReport is a WAL position the server reported, and when.
type walReport struct {
	lsn uint64
	at  time.Time
}

// lagTracker remembers the WAL positions the server reported that the log
// had not made durable yet, oldest first, in buckets of lagResolution.
type lagTracker struct {
	mu      sync.Mutex
	walEnd  uint64
	pending []walReport
}

const (
	lagResolution = 100 * time.Millisecond
	maxPending    = 1024 // halved by merging neighbours when full
)

// observe records the server's WAL end as reported at time at, with the
// log durable up to durable.
func (l *lagTracker) observe(walEnd, durable uint64, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.prune(durable)
	if walEnd <= l.walEnd {
		return
	}
	l.walEnd = walEnd
	if walEnd <= durable {
		return
	}
	if n := len(l.pending); n > 0 && at.Sub(l.pending[n-1].at) < lagResolution {
		l.pending[n-1].lsn = walEnd // same bucket: keeps its earlier time
		return
	}
	if len(l.pending) == maxPending {
		// Coarser buckets: each keeps the earlier time, so Seconds errs on
		// the high side.
		half := maxPending / 2
		for i := range half {
			l.pending[i] = walReport{lsn: l.pending[2*i+1].lsn, at: l.pending[2*i].at}
		}
		l.pending = l.pending[:half]
	}
	l.pending = append(l.pending, walReport{lsn: walEnd, at: at})
}

// prune forgets the reports the log has made durable.
func (l *lagTracker) prune(durable uint64) {
	i := 0
	for i < len(l.pending) && l.pending[i].lsn <= durable {
		i++
	}
	if i > 0 {
		l.pending = append(l.pending[:0], l.pending[i:]...)
	}
}

// lag is the lag at time now with the log durable up to durable.
func (l *lagTracker) lag(durable uint64, now time.Time) Lag {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.prune(durable)
	out := Lag{ServerWALEnd: l.walEnd, DurableLSN: durable}
	if l.walEnd > durable {
		out.Bytes = l.walEnd - durable
	}
	if len(l.pending) > 0 {
		out.Seconds = max(now.Sub(l.pending[0].at).Seconds(), 0)
	}
	return out
}

// Lag reports how far the log is behind PostgreSQL.
func (r *Replicator) Lag() Lag {
	return r.lag.lag(r.store.Durable().EndLSN, time.Now())
}

// logLag logs the lag every interval until done is closed.
func (r *Replicator) logLag(done <-chan struct{}, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		lag := r.Lag()
		ev := r.log.Info()
		if lag.ServerWALEnd != 0 {
			ev = ev.Str("server_wal_end", pglogrepl.LSN(lag.ServerWALEnd).String())
		}
		ev.Uint64("lag_bytes", lag.Bytes).Float64("lag_seconds", lag.Seconds).
			Str("durable_lsn", pglogrepl.LSN(lag.DurableLSN).String()).Str("state", string(r.Status().State)).Msg("replication lag")
	}
}
