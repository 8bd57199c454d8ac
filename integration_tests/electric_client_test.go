package integration_tests

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/shapelog/shapelog/engine"
	"github.com/shapelog/shapelog/internal/connectortest"
	"github.com/shapelog/shapelog/internal/pgtest"
)

var npmOnce sync.Once

// electricClient runs Electric's TypeScript client (pinned in
// electric/package.json) on one shape and collects the rows it reports.
type electricClient struct {
	t     *testing.T
	mu    sync.Mutex
	rows  []map[string]any
	saw   []string // events and errors
	lines chan struct{}
}

func startElectricClient(t *testing.T, url string, params map[string]any) *electricClient {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node is not installed: the Electric client test needs Node.js 18+")
	}
	dir, _ := filepath.Abs("electric")
	npmOnce.Do(func() {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "@electric-sql", "client")); err == nil {
			return
		}
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci: %v\n%s", err, out)
		}
	})
	p, _ := json.Marshal(params)
	cmd := exec.Command("node", "sync.mjs", url, string(p))
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	c := &electricClient{t: t, lines: make(chan struct{}, 1)}
	go func() {
		s := bufio.NewScanner(stdout)
		s.Buffer(nil, 64<<20)
		for s.Scan() {
			var line struct {
				Rows  []map[string]any `json:"rows"`
				Event string           `json:"event"`
				Error string           `json:"error"`
			}
			if err := json.Unmarshal(s.Bytes(), &line); err != nil {
				continue
			}
			c.mu.Lock()
			if line.Rows != nil {
				c.rows = line.Rows
			}
			if line.Event != "" || line.Error != "" {
				c.saw = append(c.saw, line.Event+line.Error)
			}
			c.mu.Unlock()
			select {
			case c.lines <- struct{}{}:
			default:
			}
		}
	}()
	return c
}

// waitRows waits until the client's rows satisfy pred.
func (c *electricClient) waitRows(what string, pred func(rows map[string]map[string]any) bool) {
	c.t.Helper()
	deadline := time.After(45 * time.Second)
	for {
		c.mu.Lock()
		byID := map[string]map[string]any{}
		for _, r := range c.rows {
			byID[fmt.Sprint(r["id"])] = r
		}
		ok := pred(byID)
		saw := c.saw
		c.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-c.lines:
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			b, _ := json.Marshal(byID)
			c.t.Fatalf("%s: the Electric client never got there; rows %s, events %v", what, b, saw)
		}
	}
}

func TestElectricClient(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connectortest.Connect(t, dbURL)
	connectortest.Exec(t, conn, `CREATE TABLE "Issues" (id int8 PRIMARY KEY, title text, priority int4, done bool, meta jsonb, tags text[], secret text)`)
	connectortest.Exec(t, conn, `INSERT INTO "Issues" VALUES (1, 'one', 1, false, '{"a": 1}', '{x,y}', 's1'), (2, 'two', 3, true, NULL, '{}', 's2'), (3, 'three', 5, false, '[1]', NULL, 's3')`)
	e := connectortest.StartEngine(t, dbURL, func(c *engine.Config) { c.Shape.LongPoll = 3 * time.Second })
	secret := connectortest.AccessKey

	all := startElectricClient(t, e.URL(), map[string]any{"table": `"Issues"`, "secret": secret})
	filtered := startElectricClient(t, e.URL(), map[string]any{"table": `"Issues"`, "secret": secret,
		"where": "priority > $1", "params": map[string]string{"1": "2"}, "columns": "id,title,priority", "replica": "full"})

	all.waitRows("initial sync", func(rows map[string]map[string]any) bool {
		r := rows["1n"] // int8 arrives as a BigInt
		return len(rows) == 3 && r != nil && r["title"] == "one" && r["done"] == false && r["priority"] == float64(1) &&
			fmt.Sprint(r["meta"]) == "map[a:1]" && fmt.Sprint(r["tags"]) == "[x y]"
	})
	filtered.waitRows("initial filtered sync", func(rows map[string]map[string]any) bool {
		return len(rows) == 2 && rows["2n"] != nil && rows["3n"] != nil && rows["3n"]["secret"] == nil && len(rows["3n"]) == 3
	})

	connectortest.Exec(t, conn, `INSERT INTO "Issues" VALUES (4, 'four', 9, false, NULL, NULL, 's4')`)
	connectortest.Exec(t, conn, `UPDATE "Issues" SET priority = 0 WHERE id = 2`) // leaves the filter
	connectortest.Exec(t, conn, `UPDATE "Issues" SET priority = 7 WHERE id = 1`) // enters it
	connectortest.Exec(t, conn, `UPDATE "Issues" SET title = 'THREE' WHERE id = 3`)
	connectortest.Exec(t, conn, `DELETE FROM "Issues" WHERE id = 4`)
	all.waitRows("live changes", func(rows map[string]map[string]any) bool {
		return len(rows) == 3 && rows["4n"] == nil && rows["3n"]["title"] == "THREE" && rows["1n"]["priority"] == float64(7)
	})
	filtered.waitRows("rows moving in and out of the filter", func(rows map[string]map[string]any) bool {
		return len(rows) == 2 && rows["1n"] != nil && rows["1n"]["title"] == "one" && rows["2n"] == nil && rows["3n"]["title"] == "THREE"
	})

	connectortest.Exec(t, conn, `TRUNCATE "Issues"`)
	connectortest.Exec(t, conn, `INSERT INTO "Issues" (id, title, priority) VALUES (10, 'after truncate', 3)`)
	all.waitRows("resync after TRUNCATE", func(rows map[string]map[string]any) bool {
		return len(rows) == 1 && rows["10n"] != nil
	})
	filtered.waitRows("filtered resync after TRUNCATE", func(rows map[string]map[string]any) bool {
		return len(rows) == 1 && rows["10n"] != nil
	})
}
