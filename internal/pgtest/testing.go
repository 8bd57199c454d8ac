package pgtest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

var (
	dbSeq atomic.Int64
	// The shared cluster starts on first use, so packages whose tests (or
	// fuzz workers) never ask for a database start none.
	sharedOnce sync.Once
	shared     *Cluster
	baseURL    string
	sharedErr  error
)

// Main runs a package's tests against a throwaway cluster, started when a
// test first needs it, or against the server in $DATABASE_URL when it is
// set. Call it from TestMain.
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if u := os.Getenv("DATABASE_URL"); u != "" {
		sharedOnce.Do(func() { baseURL = u })
	}
	defer func() {
		if shared != nil {
			shared.Stop()
		}
	}()
	return m.Run()
}

// server returns the URL of the server tests use, starting the shared
// cluster on first use.
func server(t testing.TB) string {
	t.Helper()
	sharedOnce.Do(func() {
		c, err := Start(Options{})
		if err != nil {
			sharedErr = err
			return
		}
		shared, baseURL = c, c.URL("postgres")
	})
	if sharedErr != nil {
		t.Fatalf("pgtest: %v", sharedErr)
	}
	return baseURL
}

// SharedCluster is the package's throwaway cluster, or nil when the tests run
// against $DATABASE_URL (tests that restart PostgreSQL skip then).
func SharedCluster(t testing.TB) *Cluster {
	t.Helper()
	server(t)
	return shared
}

// NewDatabase creates an empty database for one test and drops it (with any
// replication slots on it) when the test ends. It returns its URL.
func NewDatabase(t testing.TB) string {
	t.Helper()
	baseURL := server(t)
	name := fmt.Sprintf("t_%d_%d_%s", os.Getpid(), dbSeq.Add(1), sanitize(t.Name()))
	if len(name) > 63 {
		name = name[:63]
	}
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, baseURL)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() { DropDatabase(baseURL, name) })
	return WithDatabase(baseURL, name)
}

// DropDatabase removes a database and the replication slots that pin it.
func DropDatabase(serverURL, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return
	}
	defer admin.Close(ctx)
	_, _ = admin.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL`, name)
	for i := 0; i < 50; i++ {
		_, _ = admin.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active`, name)
		if _, err = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// WithDatabase returns serverURL pointing at database name.
func WithDatabase(serverURL, name string) string {
	u, err := url.Parse(serverURL)
	if err != nil {
		return serverURL
	}
	u.Path = "/" + name
	return u.String()
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}
