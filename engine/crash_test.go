package engine_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shapelog/shapelog/internal/connectortest"
	"github.com/shapelog/shapelog/internal/pgtest"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// engineBinary builds bin/shapelog once per test run, as users run it.
func engineBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "shapelog-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "shapelog")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/shapelog/shapelog/engine/cmd/shapelog").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// runEngine starts the real binary; kill it with cmd.Process.Kill.
func runEngine(t *testing.T, dbURL, storage string, port int) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(engineBinary(t), "serve", "--port", strconv.Itoa(port), "--storage-dir", storage,
		"--slot", "crash_slot", "--publication", "crash_pub", "--log-level", "warn")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "SHAPELOG_ACCESS_KEY="+testKey)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	connectortest.WaitHealthy(t, fmt.Sprintf("http://127.0.0.1:%d", port))
	return cmd
}

// TestKillNineLosesNothing kills the engine with SIGKILL in the middle of a
// write burst and restarts it: every committed row appears exactly once.
func TestKillNineLosesNothing(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE burst (id bigint PRIMARY KEY, payload text)`)
	storage, port := t.TempDir(), freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	cmd := runEngine(t, dbURL, storage, port)
	_, snap := readSnapshot(t, base, nil)

	const total = 3000
	done := make(chan error, 1)
	go func() {
		c, err := pgx.Connect(context.Background(), dbURL)
		if err != nil {
			done <- err
			return
		}
		defer c.Close(context.Background())
		for i := 0; i < total; i += 10 {
			if _, err := c.Exec(context.Background(), `INSERT INTO burst SELECT g, md5(g::text) FROM generate_series($1::bigint, $1::bigint + 9) g`, i); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	// Kill mid-burst, once some changes are through.
	waitDeltas(t, base, snap, nil, func(d []doc) bool { return len(d) >= 300 })
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	runEngine(t, dbURL, storage, port)
	deltas := waitDeltas(t, base, snap, nil, func(d []doc) bool { return len(d) >= total })
	seen := map[string]int{}
	for _, d := range deltas {
		seen[d["_id"].(string)]++
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("%s appears %d times after the crash", id, n)
		}
	}
	if len(seen) != total || len(deltas) != total {
		t.Fatalf("%d distinct rows in %d deltas, want %d", len(seen), len(deltas), total)
	}
}

// TestPostgresRestart restarts PostgreSQL under a streaming engine: it
// reconnects by itself and carries on where it stopped.
func TestPostgresRestart(t *testing.T) {
	cluster := pgtest.SharedCluster(t)
	if cluster == nil {
		t.Skip("needs the throwaway cluster (DATABASE_URL is set)")
	}
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `CREATE TABLE r (id int PRIMARY KEY)`)
	e := startEngine(t, dbURL)
	_, snap := readSnapshot(t, e.URL(), nil)
	mustExec(t, conn, `INSERT INTO r VALUES (1)`)
	waitDeltas(t, e.URL(), snap, nil, func(d []doc) bool { return len(d) == 1 })
	if err := cluster.Restart(); err != nil {
		t.Fatal(err)
	}
	conn2 := connect(t, dbURL)
	mustExec(t, conn2, `INSERT INTO r VALUES (2)`)
	connectortest.WaitHealthy(t, e.URL())
	deltas := waitDeltas(t, e.URL(), snap, nil, func(d []doc) bool { return len(d) >= 2 })
	if len(deltas) != 2 || deltas[1]["id"] != float64(2) {
		t.Fatalf("after restart: %s", brief(deltas))
	}
	// The confirmed position moves on again after the restart.
	deadline := time.Now().Add(20 * time.Second)
	for {
		var lag int64
		if err := conn2.QueryRow(context.Background(), `SELECT pg_current_wal_lsn() - confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'shapelog_test'`).Scan(&lag); err == nil && lag < 1<<20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("slot's confirmed position does not advance after the restart")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
