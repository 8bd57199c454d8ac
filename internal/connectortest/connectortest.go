// Package connectortest runs the connectors the way Airbyte does in tests:
// it builds the binaries, starts engines against throwaway databases,
// writes config/catalog/state files, runs commands and checks that every
// line on stdout is a valid Airbyte message.
package connectortest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/shapelog/shapelog/engine"
	"github.com/shapelog/shapelog/engine/client"
	"github.com/shapelog/shapelog/internal/pgtest"
	"github.com/shapelog/shapelog/protocol"
)

// AccessKey is the key of engines started by StartEngine.
const AccessKey = "connector-test-key"

// StartEngine runs an engine in-process against dbURL and stops it when
// the test ends. Its slot is named after the database (slot names are
// cluster-wide), so an engine restarted on the same database finds it.
func StartEngine(t testing.TB, dbURL string, mods ...func(*engine.Config)) *engine.Engine {
	t.Helper()
	h := fnv.New64a()
	_, _ = h.Write([]byte(dbURL))
	slot := fmt.Sprintf("shapelog_test_%x", h.Sum64())
	cfg := engine.Config{
		DatabaseURL: dbURL, AccessKey: AccessKey, Listen: "127.0.0.1:0", StorageDir: t.TempDir(),
		Slot: slot, Publication: "shapelog_test", Version: "test",
	}
	for _, m := range mods {
		m(&cfg)
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	e, err := engine.Start(context.Background(), cfg, log)
	if err != nil {
		t.Fatalf("engine start: %v", err)
	}
	t.Cleanup(func() { e.Close(5 * time.Second) })
	WaitHealthy(t, e.URL())
	return e
}

// WaitHealthy waits until the engine at baseURL is active.
func WaitHealthy(t testing.TB, baseURL string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := client.WaitHealthy(ctx, baseURL); err != nil {
		t.Fatal(err)
	}
}

// Connect opens a connection closed when the test ends.
func Connect(t testing.TB, dbURL string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// Exec runs SQL statements, failing the test on error.
func Exec(t testing.TB, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

var (
	buildMu  sync.Mutex
	builtDir string
	built    = map[string]string{}
)

// Binary builds the command in the repository directory dir (e.g.
// "source") once per test process and returns its path.
func Binary(t testing.TB, dir string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[dir]; ok {
		return p
	}
	if builtDir == "" {
		d, err := os.MkdirTemp("", "shapelog-bin-")
		if err != nil {
			t.Fatal(err)
		}
		builtDir = d
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	out := filepath.Join(builtDir, filepath.Base(dir))
	cmd := exec.Command("go", "build", "-o", out, "./"+dir)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./%s: %v\n%s", dir, err, b)
	}
	built[dir] = out
	return out
}

// WriteJSON writes v as JSON into a file in a fresh directory and returns
// its path.
func WriteJSON(t testing.TB, name string, v any) string {
	t.Helper()
	var b []byte
	switch v := v.(type) {
	case string:
		b = []byte(v)
	case []byte:
		b = v
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Output is what one command printed.
type Output struct {
	Code     int
	Lines    [][]byte
	Messages []protocol.Message
	Stderr   string
}

var (
	validatorOnce sync.Once
	validator     *protocol.Validator
	validatorErr  error
)

// Run runs bin with args and stdin, and checks that stdout holds only
// valid Airbyte messages.
func Run(t testing.TB, bin string, stdin io.Reader, args ...string) *Output {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	out := &Output{Stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		out.Code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running %s %v: %v", bin, args, err)
	}
	out.parse(t, stdout.Bytes())
	return out
}

func (o *Output) parse(t testing.TB, stdout []byte) {
	t.Helper()
	validatorOnce.Do(func() { validator, validatorErr = protocol.NewValidator() })
	if validatorErr != nil {
		t.Fatal(validatorErr)
	}
	for _, line := range bytes.Split(stdout, []byte{'\n'}) {
		if len(line) == 0 {
			continue
		}
		if err := validator.Validate(line); err != nil {
			t.Fatalf("stdout line is not a valid Airbyte message: %v\n%s", err, line)
		}
		var m protocol.Message
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("decoding %s: %v", line, err)
		}
		o.Lines = append(o.Lines, line)
		o.Messages = append(o.Messages, m)
	}
}

// OfType returns the messages of one type.
func (o *Output) OfType(typ string) []protocol.Message {
	var out []protocol.Message
	for _, m := range o.Messages {
		if m.Type == typ {
			out = append(out, m)
		}
	}
	return out
}

// Records returns each record's data decoded (numbers as json.Number).
func (o *Output) Records(t testing.TB) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, m := range o.OfType(protocol.TypeRecord) {
		dec := json.NewDecoder(bytes.NewReader(m.Record.Data))
		dec.UseNumber()
		var d map[string]any
		if err := dec.Decode(&d); err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

// Errors returns the ERROR traces.
func (o *Output) Errors() []*protocol.ErrorTrace {
	var out []*protocol.ErrorTrace
	for _, m := range o.OfType(protocol.TypeTrace) {
		if m.Trace.Error != nil {
			out = append(out, m.Trace.Error)
		}
	}
	return out
}

// String summarises the output for failure messages.
func (o *Output) String() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "exit %d\n", o.Code)
	for i, l := range o.Lines {
		if i == 40 {
			fmt.Fprintf(&b, "... %d more lines\n", len(o.Lines)-40)
			break
		}
		if len(l) > 400 {
			l = append(l[:400:400], "..."...)
		}
		b.Write(l)
		b.WriteByte('\n')
	}
	if o.Stderr != "" {
		fmt.Fprintf(&b, "stderr: %s\n", o.Stderr)
	}
	return b.String()
}

// CatchUp waits until every transaction committed on dbURL so far is
// durable in the engine's log, so a read sees it.
func CatchUp(t testing.TB, e *engine.Engine, conn *pgx.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var lsn pglogrepl.LSN
	if err := conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	if err := e.WaitReadable(ctx, uint64(lsn)); err != nil {
		t.Fatal(err)
	}
}

// StartEngineBinary builds and runs the engine binary (`shapelog serve`)
// on dbURL as a separate process, as it runs in production, and returns
// its URL. It is stopped (SIGTERM) when the test ends.
func StartEngineBinary(t testing.TB, dbURL string) string {
	return RunEngineBinary(t, dbURL).URL
}

// EngineProcess is the engine binary running for a test, which the test
// may kill and start again on the same port and storage.
type EngineProcess struct {
	URL    string
	t      testing.TB
	args   []string
	env    []string
	mu     sync.Mutex
	cmd    *exec.Cmd
	stderr bytes.Buffer
}

// RunEngineBinary is StartEngineBinary with control over the process.
func RunEngineBinary(t testing.TB, dbURL string) *EngineProcess {
	t.Helper()
	port, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(dbURL))
	slot := fmt.Sprintf("shapelog_bin_%x", h.Sum64())
	e := &EngineProcess{
		URL:  fmt.Sprintf("http://127.0.0.1:%d", port),
		t:    t,
		args: []string{"serve", "--port", strconv.Itoa(port), "--storage-dir", t.TempDir(), "--slot", slot, "--publication", slot, "--log-level", "warn"},
		env:  append(os.Environ(), "DATABASE_URL="+dbURL, "SHAPELOG_ACCESS_KEY="+AccessKey),
	}
	t.Cleanup(func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		_ = e.cmd.Process.Signal(syscall.SIGTERM)
		_ = e.cmd.Wait()
	})
	e.mu.Lock()
	defer e.mu.Unlock()
	e.start()
	return e
}

// start runs the process and waits until it is healthy; e.mu is held.
func (e *EngineProcess) start() {
	e.t.Helper()
	e.cmd = exec.Command(Binary(e.t, "engine/cmd/shapelog"), e.args...)
	e.cmd.Env = e.env
	e.stderr.Reset()
	e.cmd.Stderr = &e.stderr
	if err := e.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := client.WaitHealthy(ctx, e.URL); err != nil {
		e.t.Fatalf("%v\n%s", err, e.stderr.String())
	}
}

// Kill9 kills the engine with SIGKILL and waits for it to exit.
func (e *EngineProcess) Kill9() {
	e.mu.Lock()
	defer e.mu.Unlock()
	_ = e.cmd.Process.Signal(syscall.SIGKILL)
	_ = e.cmd.Wait()
}

// Restart starts the engine again after Kill9, on the same port and
// storage, and waits until it is healthy.
func (e *EngineProcess) Restart() {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.start()
}
