package importer

import (
	"context"
	"strconv"
	"strings"
	"testing"
)

// TestDirectDedupCopyEdges: requests that start a direct copy and must
// abandon it, several dedup streams in one request, and a retried request.
func TestDirectDedupCopyEdges(t *testing.T) {
	im, pool := liveSetup(t)
	ctx := context.Background()
	decl := func(name string) string {
		return `"` + name + `":{"primaryKey":[["id"]],"jsonSchema":{"type":"object","properties":{"id":{"type":"integer"},"v":{"type":"string"}}}}`
	}
	tables := decl("a") + "," + decl("b")
	run := func(key string, records ...string) {
		t.Helper()
		if _, _, err := im.Import(ctx, strings.NewReader(body(tables, records...)), key); err != nil {
			t.Fatal(err)
		}
	}
	run("", `a:{"id":1,"v":"a1"}`, `a:{"id":2,"v":"a2"}`, `b:{"id":1,"v":"b1"}`)
	// The first record deletes: the copy stops before it holds anything.
	run("", `a:{"id":1,"_ab_cdc_deleted_at":"2024-01-01"}`, `a:{"id":3,"v":"a3"}`)
	// Stream a copies new keys directly while stream b (spooled) updates an
	// existing key through the merge.
	run("", `a:{"id":4,"v":"a4"}`, `b:{"id":1,"v":"b1'"}`, `b:{"id":2,"v":"b2"}`, `a:{"id":5,"v":"a5"}`)
	// A retried request with the same idempotency key writes nothing twice;
	// the key with another body writes nothing at all.
	run("retry-1", `a:{"id":6,"v":"a6"}`)
	run("retry-1", `a:{"id":6,"v":"a6"}`)
	_, _, err := im.Import(ctx, strings.NewReader(body(tables, `a:{"id":6,"v":"changed"}`)), "retry-1")
	wantError(t, err, "IdempotencyKeyReused", "different body")
	if got, want := rows(t, pool, `SELECT id, v FROM a ORDER BY id`), "2 a2; 3 a3; 4 a4; 5 a5; 6 a6"; got != want {
		t.Errorf("a: %q, want %q", got, want)
	}
	if got, want := rows(t, pool, `SELECT id, v FROM b ORDER BY id`), "1 b1'; 2 b2"; got != want {
		t.Errorf("b: %q, want %q", got, want)
	}
	// The delete paused the direct copy of a; with the pause over, a key
	// already there, late in a long request: the copy is rolled back and the
	// merge updates it; nothing is doubled.
	im.insertFirstMu.Lock()
	if n := im.insertFirst[`"public"."a"`]; n == 0 {
		t.Error("an abandoned direct copy did not pause the table's next ones")
	}
	clear(im.insertFirst)
	im.insertFirstMu.Unlock()
	recs := []string{}
	for i := 100; i < 3000; i++ {
		recs = append(recs, `a:{"id":`+strconv.Itoa(i)+`,"v":"x"}`)
	}
	recs = append(recs, `a:{"id":2,"v":"a2'"}`)
	run("", recs...)
	if got, want := rows(t, pool, `SELECT count(*), count(DISTINCT id), max(v) FILTER (WHERE id = 2) FROM a`), "2905 2905 a2'"; got != want {
		t.Errorf("a after the long request: %q, want %q", got, want)
	}
	im.insertFirstMu.Lock()
	defer im.insertFirstMu.Unlock()
	if n := im.insertFirst[`"public"."a"`]; n != insertFirstPause {
		t.Errorf("the long request's copy did not meet key 2 (pause %d)", n)
	}
}
