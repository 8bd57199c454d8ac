package integration_tests

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/shapelog/shapelog/engine/client"
	"github.com/shapelog/shapelog/internal/connectortest"
	"github.com/shapelog/shapelog/internal/pgtest"
	"github.com/shapelog/shapelog/internal/pipeline"
	"github.com/shapelog/shapelog/protocol"
)

// TestRangedSnapshotExactUnderRandomKills: in speed mode with four sockets
// the first sync reads a table's snapshot as key ranges in parallel (a
// composite key of mixed-case text and int), while writes run on A across
// the whole key space, range boundaries included. Every sync is cut after
// a random number of echoed states, at a random moment after it, by a
// kill of the source, the destination, engine A or PostgreSQL; the next
// resumes the unfinished ranges from the states echoed last. When the
// writes stop and a last sync has run, B equals A row by row.
func TestRangedSnapshotExactUnderRandomKills(t *testing.T) {
	p := newPairWith(t, `CREATE TABLE regions ("Region" text, id int, v int NOT NULL, note text, PRIMARY KEY ("Region", id));
		INSERT INTO regions SELECT r, g, g, 'seed ' || r FROM unnest(ARRAY['North', 'süd', 'east ✓', 'West''s']) r, generate_series(1, 9000) g;`, 50, 300, true)
	p.speed = &pipeline.Speed{Sockets: 4, Format: "PROTOBUF"}
	regions := []string{"North", "süd", "east ✓", "West's", "Zed"}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var writes int
	wg.Add(1)
	urlA := p.a.Config().ConnString()
	go func() {
		defer wg.Done()
		writes = writeLoop(ctx, t, urlA, 3, func(rng *rand.Rand) string {
			r := pgQuote(regions[rng.Intn(len(regions))])
			a, b := rng.Intn(9500)+1, rng.Intn(9500)+1
			switch op := rng.Intn(8); {
			case op < 2:
				return fmt.Sprintf(`INSERT INTO regions VALUES (%s, %d, 0, 'new') ON CONFLICT DO NOTHING`, r, a)
			case op < 4:
				return fmt.Sprintf(`UPDATE regions SET v = v + 1, note = note || 'u' WHERE "Region" = %s AND id = %d`, r, a)
			case op < 6:
				return fmt.Sprintf(`DELETE FROM regions WHERE "Region" = %s AND id BETWEEN %d AND %d`, r, a, a+rng.Intn(3))
			default:
				return fmt.Sprintf(`UPDATE regions SET "Region" = %s, id = %d WHERE "Region" = %s AND id = %d
					AND NOT EXISTS (SELECT 1 FROM regions WHERE "Region" = %[1]s AND id = %[2]d)`, pgQuote(regions[rng.Intn(len(regions))]), b, r, a)
			}
		})
	}()

	rng := rand.New(rand.NewSource(11))
	// The connectors' deaths end a sync; engine A's and PostgreSQL's
	// usually do not (the source retries, and the sync may read every
	// range to its end), so they come after ranges have been resumed.
	victims := []string{"source", "destination", "source", "PostgreSQL", "destination", "engine A", "source", "destination"}
	cluster := pgtest.SharedCluster(t)
	if cluster == nil {
		victims = slices.DeleteFunc(victims, func(v string) bool { return v == "PostgreSQL" })
	}
	kills := map[string]int{}
	resumed := 0 // killed syncs that had started from unfinished ranges
	for round, victim := range victims {
		fromRanges := rangesInProgress(t, p.states)
		after := rng.Intn(15) // echoed states before the kill
		delay := time.Duration(rng.Intn(60)) * time.Millisecond
		var once sync.Once
		var killed atomic.Bool
		kill := func(source, destination *os.Process) {
			switch victim {
			case "engine A":
				p.processA.Kill9()
				time.Sleep(time.Duration(rng.Intn(300)) * time.Millisecond)
				p.processA.Restart()
			case "PostgreSQL":
				if err := cluster.RestartImmediate(); err != nil {
					t.Errorf("restarting PostgreSQL: %v", err)
				}
			case "source":
				_ = source.Signal(syscall.SIGKILL)
			default:
				_ = destination.Signal(syscall.SIGKILL)
			}
		}
		done := make(chan struct{})
		started := time.Now()
		err := p.run(pipeline.Sync{OnState: func(echoed int, source, destination *os.Process) {
			if echoed < after {
				return
			}
			once.Do(func() {
				killed.Store(true)
				go func() {
					defer close(done)
					time.Sleep(delay)
					kill(source, destination)
				}()
			})
		}})
		if killed.Load() {
			<-done
			kills[victim]++
			if fromRanges {
				resumed++
			}
		}
		took := time.Since(started)
		t.Logf("round %d (%s, from ranges: %v): %s killed after %d states + %s: %v (sync error: %v)",
			round, took.Round(time.Millisecond), fromRanges, victim, after, delay, killed.Load(), err)
		if took > time.Minute {
			t.Errorf("round %d: the sync took %s: something hung after the %s was killed", round, took, victim)
		}
	}
	cancel()
	wg.Wait()
	if kills["PostgreSQL"] > 0 {
		p.reconnect()
	}
	waitConfirmed(t, p)
	p.sync("", 0)
	if rangesInProgress(t, p.states) {
		t.Fatal("the last sync left ranges unfinished")
	}
	p.assertEqual()
	t.Logf("%d transactions on A during the rounds; kills: %v; %d killed syncs had resumed unfinished ranges", writes, kills, resumed)
	if resumed < 2 {
		t.Fatalf("only %d killed syncs resumed unfinished ranges: the snapshot was too short to be cut while ranged", resumed)
	}
}

// rangesInProgress reports whether the saved state of the stream is a
// snapshot being read as ranges.
func rangesInProgress(t *testing.T, states []json.RawMessage) bool {
	t.Helper()
	for _, raw := range states {
		var st protocol.State
		if err := json.Unmarshal(raw, &st); err != nil || st.Stream == nil {
			t.Fatalf("saved state %s: %v", raw, err)
		}
		var blob struct {
			Ranges []string `json:"snapshot_ranges"`
		}
		if err := json.Unmarshal(st.Stream.StreamState, &blob); err != nil {
			t.Fatalf("stream state %s: %v", st.Stream.StreamState, err)
		}
		if len(blob.Ranges) > 0 {
			return true
		}
	}
	return false
}

// pgQuote is s as an SQL string literal.
func pgQuote(s string) string {
	out := []byte{'\''}
	for _, c := range []byte(s) {
		if c == '\'' {
			out = append(out, '\'')
		}
		out = append(out, c)
	}
	return string(append(out, '\''))
}

// TestRangedStateWithMoreRangesThanSockets: a state saved with more
// unfinished ranges than the next sync has sockets (the connection's
// sockets changed) resumes every range, and B then equals A.
func TestRangedStateWithMoreRangesThanSockets(t *testing.T) {
	p := newPair(t, `CREATE TABLE wide (id bigint PRIMARY KEY, note text);
		INSERT INTO wide SELECT g, 'row ' || g FROM generate_series(1, 40000) g;`, 1000, 5000)
	c, err := client.New(p.engineA.URL(), connectortest.AccessKey, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.ListSnapshotRanges(context.Background(), client.SnapshotRangesRequest{TableName: "wide", Ranges: 6})
	if err != nil || len(got.Cursors) < 3 {
		t.Fatalf("ranges: %+v, %v", got, err)
	}
	p.changeA(`DELETE FROM wide WHERE id % 1000 = 7; UPDATE wide SET note = 'changed' WHERE id % 1000 = 8`)
	cursors, _ := json.Marshal(got.Cursors)
	p.states = []json.RawMessage{json.RawMessage(fmt.Sprintf(`{"type":"STREAM","stream":{"stream_descriptor":{"name":"wide","namespace":"public"},`+
		`"stream_state":{"snapshot_has_more":true,"delta_cursor":%d,"snapshot_ranges":%s}}}`, got.Snapshot, cursors))}
	p.speed = &pipeline.Speed{Sockets: 2, Format: "PROTOBUF"}
	p.sync("", 0)
	if rangesInProgress(t, p.states) {
		t.Fatal("ranges are left after the sync")
	}
	p.sync("", 0) // the changes since the ranged snapshot
	p.assertEqual()
}
