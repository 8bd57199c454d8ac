package integration_tests

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/shapelog/shapelog/internal/connectortest"
)

// TestDeletesDuringFirstSyncSurviveEngineRestart is the failure users hit
// before snapshots were durable: engine A is killed with SIGKILL once the
// destination has committed the first state of a first sync; meanwhile 100
// rows already copied are deleted and 10 re-keyed; the engine comes back.
// The sync finishes (from its last state if it failed), an incremental
// sync follows, and B equals A: the deletes travelled.
func TestDeletesDuringFirstSyncSurviveEngineRestart(t *testing.T) {
	p := newPairWith(t, `CREATE TABLE items (id int PRIMARY KEY, v text);
		INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 20000) g;`, 500, 500, true)
	done := false
	err := p.syncWith(func(echoed int, _, _ *os.Process) {
		if done || echoed < 1 {
			return
		}
		done = true
		p.processA.Kill9()
		connectortest.Exec(t, p.a, `DELETE FROM items WHERE id <= 100;
			UPDATE items SET id = id + 100000 WHERE id BETWEEN 101 AND 110;`)
		p.processA.Restart()
	})
	if !done {
		t.Fatalf("the sync ended before the engine could be killed (%v)", err)
	}
	if err != nil {
		t.Logf("the sync failed across the restart (%v); running it again from its last state", err)
		if err := p.syncWith(nil); err != nil {
			t.Fatalf("sync from the last state: %v\n%s", err, p.stderr.String())
		}
	}
	waitConfirmed(t, p)
	p.sync("", 0)
	p.assertEqual()
}

// waitConfirmed waits until engine A's slot has confirmed every change
// written to A so far: the engine's log holds them.
func waitConfirmed(t *testing.T, p *pair) {
	t.Helper()
	var lsn string
	if err := p.a.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var ok bool
		err := p.a.QueryRow(context.Background(), `SELECT coalesce(bool_and(confirmed_flush_lsn >= $1::pg_lsn), false)
			FROM pg_replication_slots WHERE database = current_database() AND NOT temporary`, lsn).Scan(&ok)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("engine A never confirmed the changes made during the test")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
