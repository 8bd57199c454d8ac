package integration_tests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shapelog/shapelog/engine"
	"github.com/shapelog/shapelog/internal/connectortest"
	"github.com/shapelog/shapelog/internal/pgtest"
	"github.com/shapelog/shapelog/internal/pipeline"
	"github.com/shapelog/shapelog/protocol"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// pair is database A → engine A → source | destination → engine B → database B.
type pair struct {
	t                *testing.T
	a, b             *pgx.Conn
	engineA, engineB *engine.Engine
	processA         *connectortest.EngineProcess // engine A as a binary, when the test kills it
	source, dest     string
	sourceConfig     string
	destConfig       string
	catalog          string
	states           []json.RawMessage // the last echoed state of each stream
	stderr           strings.Builder
	// speed is the data channel syncs use: speed mode (protobuf on Unix
	// sockets) unless a test sets it, nil for stdio.
	speed *pipeline.Speed
}

func newPair(t *testing.T, schema string, pageSize, batchSize int) *pair {
	return newPairWith(t, schema, pageSize, batchSize, false)
}

// newPairWith runs engine A as the engine binary (processA) when binaryA
// is set, so that the test can kill it.
func newPairWith(t *testing.T, schema string, pageSize, batchSize int, binaryA bool) *pair {
	t.Helper()
	urlA, urlB := pgtest.NewDatabase(t), pgtest.NewDatabase(t)
	p := &pair{t: t, a: connectortest.Connect(t, urlA), b: connectortest.Connect(t, urlB),
		source: connectortest.Binary(t, "source"), dest: connectortest.Binary(t, "destination"),
		speed: &pipeline.Speed{Sockets: 2, Format: "PROTOBUF"}}
	connectortest.Exec(t, p.a, schema)
	var engineAURL string
	if binaryA {
		p.processA = connectortest.RunEngineBinary(t, urlA)
		engineAURL = p.processA.URL
	} else {
		p.engineA = connectortest.StartEngine(t, urlA)
		engineAURL = p.engineA.URL()
	}
	p.engineB = connectortest.StartEngine(t, urlB)
	p.sourceConfig = connectortest.WriteJSON(t, "source.json", map[string]any{
		"deployment_url": engineAURL, "access_key": connectortest.AccessKey, "page_size": pageSize})
	p.destConfig = connectortest.WriteJSON(t, "destination.json", map[string]any{
		"deployment_url": p.engineB.URL(), "access_key": connectortest.AccessKey, "batch_size": batchSize})
	// The catalog as a user would configure it: every stream incremental,
	// deduplicated on the source's primary key.
	out := connectortest.Run(t, p.source, nil, "discover", "--config", p.sourceConfig)
	cats := out.OfType(protocol.TypeCatalog)
	if len(cats) != 1 {
		t.Fatalf("discover:\n%s", out)
	}
	var cc protocol.ConfiguredCatalog
	for _, s := range cats[0].Catalog.Streams {
		cc.Streams = append(cc.Streams, protocol.ConfiguredStream{Stream: s, SyncMode: protocol.SyncIncremental,
			DestinationSyncMode: protocol.DestinationAppendDedup, PrimaryKey: s.SourceDefinedPrimaryKey})
	}
	p.catalog = connectortest.WriteJSON(t, "catalog.json", cc)
	return p
}

// reconnect opens the test's connections to A and B again (after
// PostgreSQL restarted).
func (p *pair) reconnect() {
	p.t.Helper()
	p.a = connectortest.Connect(p.t, p.a.Config().ConnString())
	p.b = connectortest.Connect(p.t, p.b.Config().ConnString())
}

// changeA runs SQL on A and waits until engine A has it.
func (p *pair) changeA(sql string) {
	p.t.Helper()
	connectortest.Exec(p.t, p.a, sql)
	connectortest.CatchUp(p.t, p.engineA, p.a)
}

// sync runs `source read | destination write` from the saved states. With
// kill set to "source" or "destination", that process is killed with
// SIGKILL once the destination has echoed `after` states.
func (p *pair) sync(kill string, after int) {
	p.t.Helper()
	killed := false
	var onState func(echoed int, source, destination *os.Process)
	if kill != "" {
		onState = func(echoed int, source, destination *os.Process) {
			if !killed && echoed >= after {
				killed = true
				victim := source
				if kill == "destination" {
					victim = destination
				}
				_ = victim.Signal(syscall.SIGKILL)
			}
		}
	}
	err := p.syncWith(onState)
	if kill == "" && err != nil {
		p.t.Fatalf("sync failed: %v\n%s", err, p.stderr.String())
	}
	if kill != "" && !killed {
		p.t.Fatalf("the sync ended before the %s could be killed", kill)
	}
}

// syncWith runs one sync from the saved states, calling onState (if set)
// after each state the destination echoes.
func (p *pair) syncWith(onState func(echoed int, source, destination *os.Process)) error {
	return p.run(pipeline.Sync{OnState: onState})
}

// run runs one sync from the saved states with s's hooks, and keeps the
// echoed states.
func (p *pair) run(s pipeline.Sync) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s.SourceBin, s.DestinationBin, s.SourceConfig, s.DestinationConfig = p.source, p.dest, p.sourceConfig, p.destConfig
	s.Catalog, s.States, s.Stderr = p.catalog, p.states, &p.stderr
	if s.Speed == nil {
		s.Speed = p.speed
	}
	res, err := s.Run(ctx)
	if res != nil && len(res.States) > 0 {
		p.states = mergeStates(p.states, res.States)
	}
	return err
}

// mergeStates replaces the states of the streams in newer.
func mergeStates(older, newer []json.RawMessage) []json.RawMessage {
	stream := func(raw json.RawMessage) string {
		var st protocol.State
		_ = json.Unmarshal(raw, &st)
		return st.Stream.StreamDescriptor.String()
	}
	byStream := map[string]json.RawMessage{}
	var order []string
	for _, s := range append(slices.Clone(older), newer...) {
		k := stream(s)
		if _, ok := byStream[k]; !ok {
			order = append(order, k)
		}
		byStream[k] = s
	}
	out := make([]json.RawMessage, 0, len(order))
	for _, k := range order {
		out = append(out, byStream[k])
	}
	return out
}

// assertEqual compares every table of A with its copy in B: same columns
// with the same types, same rows.
func (p *pair) assertEqual() {
	p.t.Helper()
	ctx := context.Background()
	rows, err := p.a.Query(ctx, `SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' ORDER BY 1`)
	if err != nil {
		p.t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		p.t.Fatal(err)
	}
	for _, table := range tables {
		ident := pgx.Identifier{"public", table}.Sanitize()
		colRows, err := p.a.Query(ctx, `SELECT attname, format_type(atttypid, NULL) FROM pg_attribute
			WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, ident)
		if err != nil {
			p.t.Fatal(err)
		}
		type col struct{ name, typ string }
		cols, err := pgx.CollectRows(colRows, func(r pgx.CollectableRow) (col, error) {
			var c col
			return c, r.Scan(&c.name, &c.typ)
		})
		if err != nil {
			p.t.Fatal(err)
		}
		var names []string
		for _, c := range cols {
			var typ string
			err := p.b.QueryRow(ctx, `SELECT format_type(atttypid, NULL) FROM pg_attribute
				WHERE attrelid = to_regclass($1) AND attname = $2 AND NOT attisdropped`, ident, c.name).Scan(&typ)
			if err != nil {
				p.t.Errorf("%s.%s is missing in B: %v", table, c.name, err)
				continue
			}
			if typ != c.typ {
				p.t.Errorf("%s.%s is %s in A but %s in B", table, c.name, c.typ, typ)
			}
			name := pgx.Identifier{c.name}.Sanitize()
			if c.typ == "json" {
				// json keeps its text as written; the copy is the same
				// value without the insignificant whitespace.
				name += "::jsonb"
			}
			names = append(names, name)
		}
		query := fmt.Sprintf(`SELECT row(%s)::text FROM %s ORDER BY 1`, strings.Join(names, ", "), ident)
		dump := func(conn *pgx.Conn) []string {
			rows, err := conn.Query(ctx, query)
			if err != nil {
				p.t.Fatalf("%s: %v", query, err)
			}
			out, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				p.t.Fatal(err)
			}
			return out
		}
		a, b := dump(p.a), dump(p.b)
		if len(a) != len(b) {
			p.t.Errorf("%s: %d rows in A, %d in B", table, len(a), len(b))
			continue
		}
		for i := range a {
			if a[i] != b[i] {
				p.t.Errorf("%s row %d differs:\nA: %.300s\nB: %.300s", table, i, a[i], b[i])
				break
			}
		}
	}
}

const e2eSchema = `
CREATE TABLE accounts (
	id bigint PRIMARY KEY, email text NOT NULL, balance numeric, score double precision, visits integer,
	small smallint, active boolean, born date, seen timestamptz, local_ts timestamp, wake time,
	uid uuid, tags jsonb, doc json, photo bytea, notes text, "Mixed Case" text, spent interval,
	labels text[], grid int[]);
CREATE TABLE "order lines" (order_id int, line int, qty int NOT NULL, sku text, PRIMARY KEY (order_id, line));
INSERT INTO accounts
SELECT g, 'user' || g || '@example.com', g * 1.25, g / 3.0, g % 100, (g % 7)::smallint, g % 2 = 0,
	DATE '2020-01-01' + g, TIMESTAMPTZ '2024-01-01 00:00:00+00' + g * interval '1 minute',
	TIMESTAMP '2024-01-01 00:00:00' + g * interval '1 second', TIME '00:00' + g * interval '1 second',
	md5(g::text)::uuid, jsonb_build_object('n', g, 'tags', jsonb_build_array('a', g)), '{"raw": true}',
	decode(md5(g::text), 'hex'), CASE WHEN g % 10 = 0 THEN NULL ELSE 'note ' || g || ' ''quoted'' ✓' END,
	'mixed ' || g, make_interval(hours => g),
	ARRAY['l' || g, NULL, 'quote " comma , brace }'], ARRAY[[g, 2], [3, NULL]]
FROM generate_series(1, 3000) g;
INSERT INTO "order lines" SELECT g / 3, g % 3, g, 'sku-' || g FROM generate_series(1, 900) g;`

// TestEndToEnd moves a database into another one through both engines
// and the connector pair, then keeps it in sync through changes and
// interrupted syncs, on every data channel: speed mode as the platform
// runs it (protobuf on three sockets), JSON lines on sockets, and stdio.
func TestEndToEnd(t *testing.T) {
	for _, mode := range []struct {
		name  string
		speed *pipeline.Speed
	}{
		{"speed", &pipeline.Speed{Sockets: 3, Format: "PROTOBUF"}},
		{"sockets-jsonl", &pipeline.Speed{Sockets: 2, Format: "JSONL"}},
		{"stdio", nil},
	} {
		t.Run(mode.name, func(t *testing.T) {
			p := newPair(t, e2eSchema, 500, 700)
			p.speed = mode.speed
			endToEnd(p)
			nonFinite(p, mode.speed != nil && mode.speed.Format == "PROTOBUF")
		})
	}
}

// nonFinite syncs NaN and ±Infinity: protobuf carries them, so B equals A;
// JSON cannot, so B has null where A has them (Airbyte's convention).
func nonFinite(p *pair, protobuf bool) {
	p.changeA(`INSERT INTO accounts (id, email, balance, score) VALUES
		(7001, 'nan@example.com', 'NaN', 'NaN'), (7002, 'inf@example.com', 'Infinity', 'Infinity'),
		(7003, 'ninf@example.com', '-Infinity', '-Infinity')`)
	p.sync("", 0)
	if protobuf {
		p.assertEqual()
		return
	}
	var nulls int
	err := p.b.QueryRow(context.Background(), `SELECT count(*) FROM accounts WHERE id BETWEEN 7001 AND 7003 AND balance IS NULL AND score IS NULL`).Scan(&nulls)
	if err != nil || nulls != 3 {
		p.t.Errorf("JSON lines: %d of the 3 non-finite rows have null balance and score in B (%v)", nulls, err)
	}
}

func endToEnd(p *pair) {
	p.sync("", 0)
	p.assertEqual()

	p.changeA(`
		INSERT INTO accounts (id, email, notes) VALUES (5000, 'new@example.com', repeat('big ', 200000));
		UPDATE accounts SET email = 'changed@example.com', balance = 1e20 WHERE id = 2;
		UPDATE accounts SET id = 6000 WHERE id = 3;                 -- a key change
		UPDATE accounts SET visits = 1 WHERE id = 5000;             -- the TOAST column stays untouched
		DELETE FROM accounts WHERE id BETWEEN 10 AND 20;
		DELETE FROM "order lines" WHERE order_id = 1;
		UPDATE "order lines" SET qty = 0 WHERE order_id = 2;`)
	p.sync("", 0)
	p.assertEqual()

	p.changeA(`TRUNCATE "order lines"; INSERT INTO "order lines" VALUES (1, 1, 1, 'after truncate');`)
	p.sync("", 0)
	p.assertEqual()

	// Interrupted syncs: kill -9 either side, then sync again from the
	// last echoed states.
	for _, victim := range []string{"destination", "source"} {
		p.changeA(fmt.Sprintf(`UPDATE accounts SET visits = visits + 1; INSERT INTO accounts (id, email) SELECT g, '%s' FROM generate_series(10000, 12000) g ON CONFLICT DO NOTHING;`, victim))
		p.sync(victim, 2)
		p.sync("", 0)
		p.assertEqual()
	}
}
