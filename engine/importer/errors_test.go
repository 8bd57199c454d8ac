package importer

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestFaultsNameTheirStep: a PostgreSQL error the importer does not turn
// into a 4xx comes back naming the step and table it happened in, with the
// *pgconn.PgError still reachable through errors.As; one it does turn into
// a 4xx keeps its status.
func TestFaultsNameTheirStep(t *testing.T) {
	im, pool := liveSetup(t)
	ctx := context.Background()
	// A trigger that fails every insert with SQLSTATE P0001 (raise_exception).
	if _, err := pool.Exec(ctx, `
		CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by trigger'; END $$;
		CREATE TABLE app (n numeric);
		CREATE TRIGGER refuse BEFORE INSERT ON app FOR EACH ROW EXECUTE FUNCTION refuse();
		CREATE TABLE keyed (id bigint, v text);
		CREATE UNIQUE INDEX keyed_airbyte_pk ON keyed (id);
		COMMENT ON INDEX keyed_airbyte_pk IS 'shapelog primary key: "id"';
		INSERT INTO keyed VALUES (1, 'a');
		CREATE TRIGGER refuse BEFORE INSERT ON keyed FOR EACH ROW EXECUTE FUNCTION refuse();
		CREATE TABLE typed (n int)`); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, body, step string
	}{
		{"append, spooled", body(`"app":{}`, `app:{"n":1}`), `copying into "public"."app"`},
		{"append, copied live", body(`"app":{"jsonSchema":{"type":"object","properties":{"n":{"type":"number"}}}}`, `app:{"n":1}`), `copying into "public"."app"`},
		{"dedup", body(`"keyed":{"primaryKey":[["id"]]}`, `keyed:{"id":1,"v":"b"}`, `keyed:{"id":1,"v":"c"}`), `merging into "public"."keyed"`},
	} {
		_, _, err := im.Import(ctx, strings.NewReader(c.body), "")
		var pgErr *pgconn.PgError
		if err == nil || !strings.Contains(err.Error(), c.step+": ") || !errors.As(err, &pgErr) || pgErr.Code != "P0001" {
			t.Errorf("%s: got %v, want a P0001 after %q", c.name, err, c.step)
		}
		var ie *Error
		if errors.As(err, &ie) {
			t.Errorf("%s: a fault became a client error: %v", c.name, ie)
		}
	}
	// A value PostgreSQL refuses stays a 400 naming the record and field.
	_, _, err := im.Import(ctx, strings.NewReader(body(`"typed":{}`, `typed:{"n":"x"}`)), "")
	wantError(t, err, "InvalidValue", "message 0 (table typed), field n")
}
