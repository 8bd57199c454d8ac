package engine_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/shapelog/shapelog/internal/connectortest"
	"github.com/shapelog/shapelog/internal/pgtest"
)

// importMemoryCeiling bounds the engine process's peak RSS (VmHWM) through
// imports of the largest values a body can carry: the 256 MiB of docs/operations.md (Limits).
// The body limit is 64 MiB, so one value is at most ~60 MB. A value of V
// bytes costs about 3V at its peak: its JSON text in the body reader's
// buffer (which doubles while it grows, the old and new buffers both
// live for a moment) and its decoded copy; rendering it for COPY and
// spooling it stream in 64-256 KiB pieces. With the ~30 MiB baseline that
// is ~190 MiB for a 50 MB value, which the engine's 192 MiB soft memory
// limit also keeps its heap near (measured: 195-212 MiB; before the copies
// were cut 338-352 MiB, and a string with many escapes took quadratic time).
const importMemoryCeiling = 256 << 20

// TestImportMemoryBounded imports one ~50 MB value (a text with escapes,
// into append and dedup streams, declared and not) and bodies of many ~1
// MB values through the real engine binary, and checks the process's peak
// RSS stays under importMemoryCeiling.
func TestImportMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("imports hundreds of megabytes")
	}
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	e := connectortest.RunEngineBinary(t, dbURL)
	pid := enginePID(t, e.URL)
	t.Logf("engine baseline: VmHWM %d MiB, VmRSS %d MiB", procStatus(t, pid, "VmHWM")>>20, procStatus(t, pid, "VmRSS")>>20)

	const big = 50 << 20
	declared := `{"type":"object","properties":{"id":{"type":"integer"},"s":{"type":"string"}}}`
	steps := []struct {
		name, tables string
		values       int // how many records
		size         int // each one's string, decoded
	}{
		{"one huge value, append, declared", `"big_a":{"jsonSchema":` + declared + `}`, 1, big},
		{"one huge value, append, undeclared", `"big_u":{}`, 1, big},
		{"one huge value, dedup, declared", `"big_k":{"primaryKey":[["id"]],"jsonSchema":` + declared + `}`, 1, big},
		// A schema outside the one-pass checker's subset: encoding/json and the reference validator.
		{"one huge value, reference validator", `"big_r":{"jsonSchema":{"type":"object","properties":{"id":{"type":"integer"},"s":{"type":"string","maxLength":100000000}}}}`, 1, big},
		{"many 1 MB values, append", `"many_a":{"jsonSchema":` + declared + `}`, 55, 1 << 20},
		{"many 1 MB values, dedup, undeclared", `"many_k":{"primaryKey":[["id"]]}`, 55, 1 << 20},
	}
	peak := int64(0)
	for _, st := range steps {
		// Each step's own peak: writing 5 to clear_refs resets VmHWM to
		// the current RSS.
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
			t.Fatal(err)
		}
		table, _, _ := strings.Cut(strings.Trim(st.tables, `"`), `"`)
		req, _ := http.NewRequest(http.MethodPost, e.URL+"/api/streaming_import/import_airbyte_records", &bigBody{tables: st.tables, table: table, records: st.values, size: st.size})
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Convex "+connectortest.AccessKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", st.name, resp.StatusCode, b)
		}
		want := fmt.Sprintf("%d|%d", st.values, st.size)
		if got := rowsOf(t, conn, `SELECT count(*), max(length(s)) FROM `+table); got[0] != want {
			t.Fatalf("%s: rows %v, want %s", st.name, got, want)
		}
		hwm := procStatus(t, pid, "VmHWM")
		peak = max(peak, hwm)
		t.Logf("%s: peak RSS (VmHWM) %d MiB, RSS after %d MiB", st.name, hwm>>20, procStatus(t, pid, "VmRSS")>>20)
		if hwm > importMemoryCeiling {
			t.Errorf("%s: engine peak RSS %d MiB, over the %d MiB ceiling", st.name, hwm>>20, importMemoryCeiling>>20)
		}
	}
	t.Logf("engine peak RSS through all steps: %d MiB", peak>>20)
}

// bigBody streams an import body of records {"id": i, "s": "..."} whose
// strings decode to size bytes of text with a newline (escaped in JSON, and
// again in COPY) every 64 bytes, without holding it.
type bigBody struct {
	tables, table string
	records, size int
	i, written    int // the record being written, and its string bytes written
	pending       bytes.Buffer
	started, done bool
}

func (b *bigBody) Read(p []byte) (int, error) {
	for b.pending.Len() < len(p) && !b.done {
		switch {
		case !b.started:
			b.started = true
			fmt.Fprintf(&b.pending, `{"tables":{%s},"messages":[`, b.tables)
			fmt.Fprintf(&b.pending, `{"tableName":%q,"data":{"id":%d,"s":"`, b.table, b.i)
		case b.written < b.size:
			n := min(b.size-b.written, 64<<10)
			for j := 0; j < n; j++ {
				if (b.written+j)%64 == 63 {
					b.pending.WriteString(`\n`)
				} else {
					b.pending.WriteByte('a' + byte((b.written+j)%26))
				}
			}
			b.written += n
		default:
			b.pending.WriteString(`"}}`)
			if b.i++; b.i == b.records {
				b.pending.WriteString(`]}`)
				b.done = true
			} else {
				b.written = 0
				fmt.Fprintf(&b.pending, `,{"tableName":%q,"data":{"id":%d,"s":"`, b.table, b.i)
			}
		}
	}
	n, _ := b.pending.Read(p)
	if n == 0 && b.done {
		return 0, io.EOF
	}
	return n, nil
}

// enginePID finds the process of the engine binary listening at url.
func enginePID(t *testing.T, url string) int {
	t.Helper()
	port := url[strings.LastIndexByte(url, ':')+1:]
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		cmd, err := os.ReadFile(d + "/cmdline")
		if err != nil {
			continue
		}
		if args := strings.Split(string(cmd), "\x00"); len(args) > 2 && args[1] == "serve" && strings.Contains(string(cmd), "\x00--port\x00"+port+"\x00") {
			pid, _ := strconv.Atoi(filepath.Base(d))
			return pid
		}
	}
	t.Fatalf("no engine process listening on port %s", port)
	return 0
}

// procStatus reads a size in bytes (VmHWM, VmRSS) from /proc/pid/status.
func procStatus(t *testing.T, pid int, key string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", key, pid)
	return 0
}
