package engine_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/shapelog/shapelog/engine"
	"github.com/shapelog/shapelog/internal/connectortest"
	"github.com/shapelog/shapelog/internal/pgtest"
)

func startErr(t *testing.T, dbURL string, mods ...func(*engine.Config)) error {
	t.Helper()
	cfg := engine.Config{DatabaseURL: dbURL, AccessKey: testKey, Listen: "127.0.0.1:0", StorageDir: t.TempDir(), Slot: "shapelog_test", Publication: "shapelog_test"}
	for _, m := range mods {
		m(&cfg)
	}
	e, err := engine.Start(context.Background(), cfg, zerolog.Nop())
	if err == nil {
		e.Close(time.Second)
	}
	return err
}

func TestStartupRefusesWithoutLogicalWAL(t *testing.T) {
	c, err := pgtest.Start(pgtest.Options{Settings: []string{"wal_level = replica"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	err = startErr(t, c.URL("postgres"))
	if err == nil || !strings.Contains(err.Error(), "wal_level") || !strings.Contains(err.Error(), "ALTER SYSTEM SET wal_level = logical") {
		t.Fatalf("want an actionable wal_level error, got %v", err)
	}
}

func TestStartupRefusesRoleWithoutReplication(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, `DO $$ BEGIN CREATE ROLE plain_user LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`)
	err := startErr(t, strings.Replace(dbURL, "postgres@", "plain_user@", 1))
	if err == nil || !strings.Contains(err.Error(), "REPLICATION") {
		t.Fatalf("want an error naming REPLICATION, got %v", err)
	}
}

func TestStartupRefusesSecondEngineOnSlot(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	startEngine(t, dbURL)
	err := startErr(t, dbURL)
	if err == nil || !strings.Contains(err.Error(), "in use by another shapelog engine") {
		t.Fatalf("want a slot-in-use error, got %v", err)
	}
}

func TestStartupWaitsForUnreachableDatabase(t *testing.T) {
	c, err := pgtest.Start(pgtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	if err := c.StopServer(); err != nil {
		t.Fatal(err)
	}
	cfg := engine.Config{DatabaseURL: c.URL("postgres"), AccessKey: testKey, Listen: "127.0.0.1:0", StorageDir: t.TempDir()}
	e, err := engine.Start(context.Background(), cfg, zerolog.Nop())
	if err != nil {
		t.Fatalf("an unreachable database must not stop the engine: %v", err)
	}
	defer e.Close(time.Second)
	resp, err := http.Get(e.URL() + "/v1/health")
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || body["status"] == "active" {
		t.Fatalf("health while the database is down: %d %v", resp.StatusCode, body)
	}
	if err := c.StartServer(); err != nil {
		t.Fatal(err)
	}
	connectortest.WaitHealthy(t, e.URL())
}

func TestStartupRefusesSlotOfAnotherDatabase(t *testing.T) {
	startEngine(t, pgtest.NewDatabase(t))
	err := startErr(t, pgtest.NewDatabase(t))
	if err == nil || !strings.Contains(err.Error(), "already belongs to database") || !strings.Contains(err.Error(), "--slot") {
		t.Fatalf("want an error naming the slot's database and --slot, got %v", err)
	}
}
