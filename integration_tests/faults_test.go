package integration_tests

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shapelog/shapelog/internal/pgtest"
	"github.com/shapelog/shapelog/internal/pipeline"
)

// isShutdown reports PostgreSQL's errors for a server going down
// (admin_shutdown, crash_shutdown, cannot_connect_now).
func isShutdown(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03")
}

// writeA changes A until ctx ends: inserts, updates, deletes, key changes
// and transactions that change one row several times (which
// document_deltas collapses). It returns how many transactions committed.
func writeA(ctx context.Context, t *testing.T, dbURL string, seed int64) int {
	return writeLoop(ctx, t, dbURL, seed, func(rng *rand.Rand) string {
		a, b := rng.Intn(6000)+1, rng.Intn(6000)+1
		switch op := rng.Intn(10); {
		case op < 2:
			return fmt.Sprintf(`INSERT INTO items VALUES (%d, %d, 'new') ON CONFLICT DO NOTHING`, a, rng.Intn(100))
		case op < 5:
			return fmt.Sprintf(`UPDATE items SET v = v + 1, note = note || 'u' WHERE id = %d`, a)
		case op < 6:
			return fmt.Sprintf(`DELETE FROM items WHERE id = %d`, a)
		case op < 7:
			return fmt.Sprintf(`UPDATE items SET id = %d WHERE id = %d AND NOT EXISTS (SELECT 1 FROM items WHERE id = %d)`, b, a, b)
		default:
			return fmt.Sprintf(`BEGIN;
				INSERT INTO items VALUES (%[1]d, 0, 'multi') ON CONFLICT DO NOTHING;
				UPDATE items SET v = v + 10 WHERE id = %[1]d;
				DELETE FROM items WHERE id = %[2]d;
				INSERT INTO items VALUES (%[2]d, 1, 'again') ON CONFLICT (id) DO UPDATE SET v = items.v + 1;
				COMMIT`, a, b)
		}
	})
}

// writeLoop runs the transactions next makes on A until ctx ends, and
// returns how many committed. When PostgreSQL restarts under it, it
// connects again (a transaction cut short is rolled back whole, which the
// comparisons do not mind).
func writeLoop(ctx context.Context, t *testing.T, dbURL string, seed int64, next func(*rand.Rand) string) int {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	rng := rand.New(rand.NewSource(seed))
	n := 0
	for ctx.Err() == nil {
		if conn == nil || conn.IsClosed() {
			var err error
			if conn, err = pgx.Connect(ctx, dbURL); err != nil {
				time.Sleep(50 * time.Millisecond) // PostgreSQL is restarting
				continue
			}
		}
		sql := next(rng)
		if _, err := conn.Exec(ctx, sql); err != nil {
			if ctx.Err() != nil {
				return n
			}
			if conn.IsClosed() || pgconn.SafeToRetry(err) || isShutdown(err) {
				continue // PostgreSQL went away: connect again
			}
			t.Errorf("%s: %v", sql, err)
			return n
		}
		n++
		time.Sleep(3 * time.Millisecond)
	}
	return n
}

// TestPairExactUnderRandomKills: while writes run on A, syncs are cut by
// SIGKILL of the source, the destination or engine A at a random moment
// (mid-snapshot, mid-deltas, between batches); each next sync resumes from
// the states echoed last. When the writes stop and a last sync has run, B
// equals A row by row.
func TestPairExactUnderRandomKills(t *testing.T) {
	p := newPairWith(t, `CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL, note text);
		INSERT INTO items SELECT g, g, 'seed' FROM generate_series(1, 10000) g;`, 200, 300, true)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var writes int
	wg.Add(1)
	urlA := p.a.Config().ConnString()
	go func() { defer wg.Done(); writes = writeA(ctx, t, urlA, 1) }()

	rng := rand.New(rand.NewSource(7))
	victims := []string{"source", "destination", "engine A"}
	cluster := pgtest.SharedCluster(t) // nil against $DATABASE_URL: not restarted then
	if cluster != nil {
		victims = append(victims, "PostgreSQL")
	}
	kills := map[string]int{}
	last := 400 * time.Millisecond // how long the previous sync ran
	for round := range 3 * len(victims) {
		if round > 0 {
			time.Sleep(time.Second) // changes pile up for the next sync
		}
		victim := victims[round%len(victims)]
		// A moment within the sync, judged by the one before.
		delay := 5*time.Millisecond + time.Duration(rng.Int63n(int64(last)))
		var mu sync.Mutex
		var procs []*os.Process // source, destination
		killed := false
		kill := func() {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case victim == "engine A":
				p.processA.Kill9()
				time.Sleep(time.Duration(rng.Intn(500)) * time.Millisecond)
				p.processA.Restart()
				killed = true
			case victim == "PostgreSQL":
				// A crash of the server holding A and B (and the engines'
				// slots): immediate shutdown, crash recovery on start.
				if err := cluster.RestartImmediate(); err != nil {
					t.Errorf("restarting PostgreSQL: %v", err)
				}
				killed = true
			case procs != nil && victim == "source":
				killed = procs[0].Signal(syscall.SIGKILL) == nil
			case procs != nil:
				killed = procs[1].Signal(syscall.SIGKILL) == nil
			}
		}
		started := time.Now()
		var timer *time.Timer
		err := p.run(pipeline.Sync{OnStart: func(source, destination *os.Process) {
			mu.Lock()
			procs = []*os.Process{source, destination}
			mu.Unlock()
			timer = time.AfterFunc(delay, kill)
		}})
		mu.Lock()
		if timer != nil && timer.Stop() {
			killed = false // the sync ended first
		}
		if (victim == "source" || victim == "destination") && err == nil {
			killed = false // it had exited already
		}
		mu.Unlock()
		if killed {
			kills[victim]++
		} else {
			last = time.Since(started)
		}
		t.Logf("round %d (%s): %s killed after %s: %v (sync error: %v)", round, time.Since(started).Round(time.Millisecond), victim, delay, killed, err)
	}
	cancel()
	wg.Wait()
	if kills["PostgreSQL"] > 0 {
		p.reconnect() // the test's own connections did not survive the restarts
	}
	started := time.Now()
	waitConfirmed(t, p)
	p.sync("", 0)
	t.Logf("last sync: %s", time.Since(started).Round(time.Millisecond))
	p.assertEqual()
	t.Logf("%d transactions on A during the rounds; kills: %v", writes, kills)
	if len(kills) < len(victims) {
		t.Fatalf("kills %v: the syncs were too short to be cut", kills)
	}
}
