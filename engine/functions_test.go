package engine_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shapelog/shapelog/engine"
	"github.com/shapelog/shapelog/engine/functions"
	"github.com/shapelog/shapelog/internal/pgtest"
)

const functionsSchema = `
CREATE SCHEMA api;
CREATE TABLE api.users (id bigserial PRIMARY KEY, name text NOT NULL);
INSERT INTO api.users (name) VALUES ('ada'), ('alan'), ('grace');
CREATE FUNCTION api.add(a int, b int DEFAULT 10) RETURNS int IMMUTABLE LANGUAGE sql AS 'SELECT a + b';
CREATE FUNCTION api.users_named(prefix text) RETURNS TABLE (id bigint, name text) STABLE LANGUAGE sql
	AS $$ SELECT id, name FROM api.users WHERE name LIKE prefix || '%' ORDER BY id $$;
CREATE FUNCTION api.add_user(name text) RETURNS bigint VOLATILE LANGUAGE sql
	AS $$ INSERT INTO api.users (name) VALUES (name) RETURNING id $$;
CREATE FUNCTION api.boom() RETURNS int LANGUAGE plpgsql
	AS $$ BEGIN RAISE EXCEPTION 'boom' USING DETAIL = 'it exploded', HINT = 'do not call boom'; END $$;
CREATE FUNCTION api.chatty() RETURNS void LANGUAGE plpgsql
	AS $$ BEGIN RAISE NOTICE 'hello %', 1; RAISE INFO 'info'; RAISE LOG 'log'; RAISE WARNING 'careful'; END $$;
CREATE FUNCTION api.sleepy() RETURNS int LANGUAGE sql AS 'SELECT 1 FROM pg_sleep(5)';
CREATE FUNCTION api.sneaky() RETURNS bigint STABLE LANGUAGE plpgsql
	AS $$ BEGIN RETURN api.add_user('sneaky'); END $$; -- declared STABLE, but writes through a volatile one
CREATE FUNCTION api.big(n bigint) RETURNS bigint IMMUTABLE LANGUAGE sql AS 'SELECT n * 2';
CREATE FUNCTION api.total(xs int[]) RETURNS bigint IMMUTABLE LANGUAGE sql AS 'SELECT sum(x) FROM unnest(xs) x';
CREATE FUNCTION api.pair(a int) RETURNS api.users STABLE LANGUAGE sql AS 'SELECT * FROM api.users WHERE id = a';
CREATE FUNCTION api.secret() RETURNS text STABLE LANGUAGE sql AS $$ SELECT 'classified' $$;
REVOKE EXECUTE ON FUNCTION api.secret() FROM PUBLIC;
CREATE FUNCTION public.hidden() RETURNS int IMMUTABLE LANGUAGE sql AS 'SELECT 42';
DO $$ BEGIN CREATE ROLE fn_reader NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
GRANT USAGE ON SCHEMA api TO fn_reader;
GRANT SELECT ON api.users TO fn_reader;`

// call posts to a functions endpoint and returns the status and body.
func call(t *testing.T, base, endpoint, auth, body string) (int, map[string]any) {
	t.Helper()
	status, b := sendJSON(t, http.MethodPost, base+endpoint, auth, body)
	var out map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		t.Fatalf("%s %s: %s is not JSON", endpoint, body, b)
	}
	return status, out
}

func TestFunctionsAPI(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	conn := connect(t, dbURL)
	mustExec(t, conn, functionsSchema)
	e := startEngine(t, dbURL, func(c *engine.Config) {
		c.Functions = functions.Config{Schemas: []string{"api"}, Tokens: map[string]string{"reader-token": "fn_reader"}, Timeout: 300 * time.Millisecond}
	})
	admin := "Convex " + testKey
	jsonOf := func(v any) string { b, _ := json.Marshal(v); return string(b) }

	for _, tc := range []struct {
		name, endpoint, auth, body string
		status                     int
		want                       string // substring of the JSON answer
	}{
		{"scalar", "/api/query", admin, `{"path":"api:add","args":{"a":1,"b":2}}`, 200, `"status":"success","value":3`},
		{"default argument", "/api/query", admin, `{"path":"api:add","args":{"a":1}}`, 200, `"value":11`},
		{"set-returning", "/api/query", admin, `{"path":"api:users_named","args":{"prefix":"a"}}`, 200, `"value":[{"id":"1","name":"ada"},{"id":"2","name":"alan"}]`},
		{"composite", "/api/query", admin, `{"path":"api:pair","args":{"a":3}}`, 200, `"value":{"id":"3","name":"grace"}`},
		{"bigint as exact string", "/api/query", admin, `{"path":"api:big","args":{"n":4611686018427387903}}`, 200, `"value":"9223372036854775806"`},
		{"bigint in convex_json", "/api/query", admin, `{"path":"api:big","args":{"n":{"$integer":"AQAAAAAAAAA="}},"format":"convex_json"}`, 200, `"value":{"$integer":"AgAAAAAAAAA="}`},
		{"array argument", "/api/query", admin, `{"path":"api:total","args":{"xs":[1,2,3]}}`, 200, `"value":"6"`},
		{"mutation writes", "/api/mutation", admin, `{"path":"api:add_user","args":{"name":"linus"}}`, 200, `"value":"4"`},
		{"query refuses volatile", "/api/query", admin, `{"path":"api:add_user","args":{"name":"x"}}`, 200, `VOLATILE`},
		{"query cannot write", "/api/query", admin, `{"path":"api:sneaky"}`, 200, `"sqlstate":"25006"`},
		{"wrong argument name", "/api/query", admin, `{"path":"api:add","args":{"c":1}}`, 200, `Wrong arguments for 'api:add'`},
		{"wrong argument type", "/api/query", admin, `{"path":"api:add","args":{"a":"one"}}`, 200, `"sqlstate":"22P02"`},
		{"raises", "/api/mutation", admin, `{"path":"api:boom"}`, 200, `{"errorData":{"detail":"it exploded","hint":"do not call boom","sqlstate":"P0001"},"errorMessage":"boom","status":"error"}`},
		{"log lines", "/api/action", admin, `{"path":"api:chatty"}`, 200, `{"logLines":["[LOG] hello 1","[INFO] info","[LOG] log","[WARN] careful"],"status":"success","value":null}`},
		{"timeout", "/api/action", admin, `{"path":"api:sleepy"}`, 200, `"sqlstate":"57014"`},
		{"run path", "/api/run/api/add", admin, `{"args":{"a":5}}`, 200, `"value":15`},
		{"run path too short", "/api/run/add", admin, `{"args":{}}`, 400, `MissingIdentifier`},
		{"schema not exposed", "/api/query", admin, `{"path":"public:hidden"}`, 200, `Could not find public function for 'public:hidden'`},
		{"bare name is public", "/api/query", admin, `{"path":"hidden"}`, 200, `Could not find public function`},
		{"injection in path", "/api/mutation", admin, `{"path":"api:add(1); DROP TABLE api.users; --"}`, 200, `Could not find public function`},
		{"injection in argument name", "/api/mutation", admin, `{"path":"api:add","args":{"a => 1); DROP TABLE api.users; --":1}}`, 200, `Wrong arguments`},
		{"injection in value", "/api/mutation", admin, `{"path":"api:add_user","args":{"name":"x'); DROP TABLE api.users; --"}}`, 200, `"status":"success"`},
		{"malformed path", "/api/query", admin, `{"path":"a:b:c"}`, 400, `BadConvexFunctionIdentifier`},
		{"args not an object", "/api/query", admin, `{"path":"api:add","args":"a=1"}`, 400, `BadJsonBody`},
		{"role may call granted", "/api/query", "Bearer reader-token", `{"path":"api:users_named","args":{"prefix":"g"}}`, 200, `"name":"grace"`},
		{"role without EXECUTE", "/api/query", "Bearer reader-token", `{"path":"api:secret"}`, 200, `"sqlstate":"42501"`},
		{"role without INSERT", "/api/mutation", "Bearer reader-token", `{"path":"api:add_user","args":{"name":"eve"}}`, 200, `"sqlstate":"42501"`},
		{"unknown token", "/api/query", "Bearer nope", `{"path":"api:add","args":{"a":1}}`, 401, `Unauthenticated`},
		{"anonymous without public role", "/api/query", "", `{"path":"api:add","args":{"a":1}}`, 401, `Unauthenticated`},
		{"wrong admin key", "/api/query", "Convex nope", `{"path":"api:add","args":{"a":1}}`, 401, `BadAdminKey`},
	} {
		status, out := call(t, e.URL(), tc.endpoint, tc.auth, tc.body)
		if got := jsonOf(out); status != tc.status || !strings.Contains(got, tc.want) {
			t.Errorf("%s: %d %s; want %d with %s", tc.name, status, got, tc.status, tc.want)
		}
	}
	var n int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM api.users WHERE name = 'sneaky' OR name = 'eve'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("refused writes left %d rows (%v)", n, err)
	}
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM api.users`).Scan(&n); err != nil || n != 5 {
		t.Errorf("api.users has %d rows (%v), want 5 (3 + linus + the injection attempt, stored as a name)", n, err)
	}
	// Settings and roles never leak into the next call on the same pool.
	for range 12 {
		if status, out := call(t, e.URL(), "/api/query", admin, `{"path":"api:secret"}`); status != 200 || out["value"] != "classified" {
			t.Fatalf("admin call after role calls: %d %v", status, out)
		}
	}
}

func TestFunctionsAPIPublicRole(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	mustExec(t, connect(t, dbURL), functionsSchema)
	e := startEngine(t, dbURL, func(c *engine.Config) {
		c.Functions = functions.Config{Schemas: []string{"api"}, PublicRole: "fn_reader"}
	})
	if status, out := call(t, e.URL(), "/api/query", "", `{"path":"api:add","args":{"a":1}}`); status != 200 || out["value"] != json.Number("11") {
		t.Errorf("anonymous call as the public role: %d %v", status, out)
	}
	if status, out := call(t, e.URL(), "/api/query", "", `{"path":"api:secret"}`); status != 200 || !strings.Contains(out["errorMessage"].(string), "permission denied") {
		t.Errorf("anonymous call of a function the public role may not execute: %d %v", status, out)
	}
}
