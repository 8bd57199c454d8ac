package snapshot

import (
	"context"
	"fmt"
	"time"

	"github.com/shapelog/shapelog/engine/catalog"
)

// ahead is a page being read before it is asked for.
type ahead struct {
	chain   string
	done    chan struct{}
	page    *Page
	err     error
	started time.Time
}

// Pages read ahead: up to aheadDepth per reader (so PostgreSQL reads one
// while the engine renders another and the client takes a third), and
// maxAhead in all (each holds a rendered page).
const (
	aheadDepth = 2
	maxAhead   = 16
)

// chainID names the pages of one reader: a range's upper bound is part of
// it, so that the readers of a table's ranges each read ahead.
func chainID(ts int64, t *catalog.Table, until []string, limit int, where *Where, key string) string {
	w := ""
	if where != nil {
		w = where.SQL
	}
	return fmt.Sprintf("%d\x00%d\x00%q\x00%d\x00%s\x00%s", ts, t.OID, until, limit, w, key)
}

func aheadID(ts int64, t *catalog.Table, r KeyRange, limit int, where *Where, key string) string {
	return fmt.Sprintf("%s\x00%q", chainID(ts, t, r.Until, limit, where, key), r.After)
}

// readAhead makes sure the pages of range r are being read, up to
// aheadDepth of them: it follows the pages already read ahead and starts
// the next one unless enough are waiting. A page starts the one after it
// as soon as its rows are in (see readPage), and again when it is done in
// case there was no room then.
func (m *Manager) readAhead(t *catalog.Table, ts int64, r KeyRange, limit int, where *Where, key string, prepare Prepare) {
	chain := chainID(ts, t, r.Until, limit, where, key)
	m.mu.Lock()
	defer m.mu.Unlock()
	for {
		a := m.ahead[aheadID(ts, t, r, limit, where, key)]
		if a == nil {
			break
		}
		select {
		case <-a.done:
		default:
			return // being read: it goes on from there when done
		}
		if a.err != nil || a.page.Exhausted {
			return
		}
		r = r.from(a.page.Last)
	}
	if m.chains[chain] >= aheadDepth || len(m.ahead) >= maxAhead || m.closing {
		return
	}
	a := &ahead{chain: chain, done: make(chan struct{}), started: time.Now()}
	m.ahead[aheadID(ts, t, r, limit, where, key)] = a
	m.chains[chain]++
	m.aheadWG.Add(1)
	runCtx := m.runCtx
	go func() {
		defer m.aheadWG.Done()
		ctx, cancel := context.WithTimeout(runCtx, time.Minute)
		a.page, a.err = m.readPage(ctx, t, ts, r, limit, where, prepare, func(next KeyRange) {
			m.readAhead(t, ts, next, limit, where, key, prepare)
		})
		cancel()
		close(a.done)
		if a.err == nil && !a.page.Exhausted {
			m.readAhead(t, ts, r.from(a.page.Last), limit, where, key, prepare)
		}
	}()
}

// takeAhead returns the page read ahead under id, if any (nil, nil: none).
func (m *Manager) takeAhead(ctx context.Context, id string) (*Page, error) {
	m.mu.Lock()
	a := m.ahead[id]
	if a != nil {
		m.dropAhead(id, a)
	}
	m.mu.Unlock()
	if a == nil {
		return nil, nil
	}
	select {
	case <-a.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if a.err != nil {
		return nil, nil // read it again in the caller's request
	}
	return a.page, nil
}

// dropAhead forgets a page read ahead; m.mu is held.
func (m *Manager) dropAhead(id string, a *ahead) {
	delete(m.ahead, id)
	if m.chains[a.chain]--; m.chains[a.chain] <= 0 {
		delete(m.chains, a.chain)
	}
}

// expireKeyed drops pages read ahead but never asked for, and rewind
// indexes nobody used for idle.
func (m *Manager) expireKeyed(idle time.Duration) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, a := range m.ahead {
		select {
		case <-a.done:
			if now.Sub(a.started) > time.Minute || idle == 0 {
				m.dropAhead(id, a)
			}
		default:
		}
	}
	for id, rw := range m.rewinds {
		if !rw.mu.TryLock() {
			continue
		}
		if now.Sub(rw.lastUsed) >= idle {
			delete(m.rewinds, id)
		}
		rw.mu.Unlock()
	}
}
