package integration_tests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v5"
	"gopkg.in/yaml.v3"

	"github.com/shapelog/shapelog/internal/connectortest"
	"github.com/shapelog/shapelog/internal/pgtest"
	"github.com/shapelog/shapelog/protocol"
)

// These tests make the checks Airbyte's connector acceptance tests (CAT)
// make, on the built binaries run as the platform runs them: the engine
// binary serves the database, the connectors get their config, catalog and
// state as files, and every line they print is validated against the
// Airbyte protocol schema.

var connectors = []string{"source", "destination"}

// TestSpecFollowsAirbyteRules checks each spec like CAT's TestSpec.
func TestSpecFollowsAirbyteRules(t *testing.T) {
	for _, name := range connectors {
		t.Run(name, func(t *testing.T) {
			out := connectortest.Run(t, connectortest.Binary(t, name), nil, "spec")
			specs := out.OfType(protocol.TypeSpec)
			if out.Code != 0 || len(specs) != 1 {
				t.Fatalf("spec must print exactly one SPEC:\n%s", out)
			}
			spec := specs[0].Spec
			// test_match_expected: the checked-in spec.json is the output.
			var want, got any
			b, err := os.ReadFile(filepath.Join("..", name, "integration_tests", "spec.json"))
			if err != nil {
				t.Fatal(err)
			}
			_ = json.Unmarshal(b, &want)
			gb, _ := json.Marshal(spec)
			_ = json.Unmarshal(gb, &got)
			wb, _ := json.Marshal(want)
			if nb, _ := json.Marshal(got); string(wb) != string(nb) {
				t.Errorf("%s/integration_tests/spec.json differs from the spec command's output; regenerate it", name)
			}
			c := jsonschema.NewCompiler()
			c.Draft = jsonschema.Draft7
			if err := c.AddResource("spec.json", bytes.NewReader(spec.ConnectionSpecification)); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Compile("spec.json"); err != nil {
				t.Errorf("connectionSpecification is not a valid draft-07 schema: %v", err)
			}
			var cs struct {
				Properties           map[string]map[string]any `json:"properties"`
				Required             []string                  `json:"required"`
				AdditionalProperties any                       `json:"additionalProperties"`
			}
			_ = json.Unmarshal(spec.ConnectionSpecification, &cs)
			if cs.AdditionalProperties != true {
				t.Error("additionalProperties must be true")
			}
			orders := map[float64]string{}
			for prop, s := range cs.Properties {
				if s["title"] == nil || s["description"] == nil {
					t.Errorf("property %s needs a title and a description", prop)
				}
				secretName := regexp.MustCompile(`(^|_)(key|token|secret|password)$`).MatchString(prop)
				if secretName && s["airbyte_secret"] != true {
					t.Errorf("property %s must be airbyte_secret: true", prop)
				}
				if o, ok := s["order"].(float64); ok {
					if other, dup := orders[o]; dup {
						t.Errorf("properties %s and %s share order %v", prop, other, o)
					}
					orders[o] = prop
				}
			}
			for _, kw := range []string{`"$ref"`, `"allOf"`, `"anyOf"`, `"oneOf"`, `"not"`, `"patternProperties"`, `"if"`} {
				if bytes.Contains(spec.ConnectionSpecification, []byte(kw+":")) {
					t.Errorf("the spec uses %s, which CAT forbids", kw)
				}
			}
			if !slices.Equal(cs.Required, []string{"deployment_url", "access_key"}) {
				t.Errorf("required = %v", cs.Required)
			}
		})
	}
}

// TestImagesMatchMetadata checks the Dockerfiles against metadata.yaml the
// way CAT's test_image_labels and test_image_environment_variables do.
func TestImagesMatchMetadata(t *testing.T) {
	for _, name := range connectors {
		var meta struct {
			Data struct {
				DockerRepository string `yaml:"dockerRepository"`
				DockerImageTag   string `yaml:"dockerImageTag"`
				ConnectorType    string `yaml:"connectorType"`
				DefinitionID     string `yaml:"definitionId"`
				Icon             string `yaml:"icon"`
			} `yaml:"data"`
		}
		b, err := os.ReadFile(filepath.Join("..", name, "metadata.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, &meta); err != nil {
			t.Fatalf("%s/metadata.yaml: %v", name, err)
		}
		if meta.Data.ConnectorType != name || meta.Data.DefinitionID == "" {
			t.Errorf("%s/metadata.yaml: connectorType %q, definitionId %q", name, meta.Data.ConnectorType, meta.Data.DefinitionID)
		}
		if _, err := os.Stat(filepath.Join("..", name, meta.Data.Icon)); err != nil {
			t.Errorf("%s: icon %s missing", name, meta.Data.Icon)
		}
		df, err := os.ReadFile(filepath.Join("..", "Dockerfile."+name))
		if err != nil {
			t.Fatal(err)
		}
		text := string(df)
		label := func(k string) string {
			m := regexp.MustCompile(`(?m)^LABEL ` + regexp.QuoteMeta(k) + `=(\S+)$`).FindStringSubmatch(text)
			if m == nil {
				return ""
			}
			return m[1]
		}
		if got := label("io.airbyte.name"); got != meta.Data.DockerRepository {
			t.Errorf("Dockerfile.%s: io.airbyte.name %q, metadata says %q", name, got, meta.Data.DockerRepository)
		}
		if got := label("io.airbyte.version"); got != meta.Data.DockerImageTag {
			t.Errorf("Dockerfile.%s: io.airbyte.version %q, metadata says %q", name, got, meta.Data.DockerImageTag)
		}
		env := regexp.MustCompile(`(?m)^ENV AIRBYTE_ENTRYPOINT="([^"]+)"$`).FindStringSubmatch(text)
		entry := regexp.MustCompile(`(?m)^ENTRYPOINT \["([^"]+)"\]$`).FindStringSubmatch(text)
		if env == nil || entry == nil || env[1] != entry[1] || !strings.HasPrefix(env[1], "/") {
			t.Errorf("Dockerfile.%s: AIRBYTE_ENTRYPOINT must be the absolute ENTRYPOINT (%v, %v)", name, env, entry)
		}
		if !strings.Contains(text, "\nUSER airbyte\n") {
			t.Errorf("Dockerfile.%s must run as the airbyte user", name)
		}
	}
}

// sourceCAT is the source with the acceptance-test database.
type sourceCAT struct {
	bin, config string
	catalog     string
	streams     []protocol.Stream
}

func newSourceCAT(t *testing.T) *sourceCAT {
	t.Helper()
	dbURL := pgtest.NewDatabase(t)
	seed, err := os.ReadFile("../source/integration_tests/seed.sql")
	if err != nil {
		t.Fatal(err)
	}
	connectortest.Exec(t, connectortest.Connect(t, dbURL), string(seed))
	engineURL := connectortest.StartEngineBinary(t, dbURL)
	s := &sourceCAT{bin: connectortest.Binary(t, "source")}
	s.config = connectortest.WriteJSON(t, "config.json", map[string]any{"deployment_url": engineURL, "access_key": connectortest.AccessKey})
	out := connectortest.Run(t, s.bin, nil, "discover", "--config", s.config)
	cats := out.OfType(protocol.TypeCatalog)
	if out.Code != 0 || len(cats) != 1 {
		t.Fatalf("discover must print exactly one CATALOG:\n%s", out)
	}
	s.streams = cats[0].Catalog.Streams
	// CAT replaces the configured catalog's schemas by the discovered ones.
	var cc protocol.ConfiguredCatalog
	b, _ := os.ReadFile("../source/integration_tests/configured_catalog.json")
	if err := json.Unmarshal(b, &cc); err != nil {
		t.Fatal(err)
	}
	for i := range cc.Streams {
		for _, d := range s.streams {
			if d.Name == cc.Streams[i].Stream.Name {
				cc.Streams[i].Stream = d
			}
		}
	}
	s.catalog = connectortest.WriteJSON(t, "catalog.json", cc)
	return s
}

func (s *sourceCAT) read(t *testing.T, catalog string, state string) *connectortest.Output {
	t.Helper()
	args := []string{"read", "--config", s.config, "--catalog", catalog}
	if state != "" {
		args = append(args, "--state", state)
	}
	out := connectortest.Run(t, s.bin, nil, args...)
	if out.Code != 0 {
		t.Fatalf("read:\n%s", out)
	}
	return out
}

func TestSourceAcceptance(t *testing.T) {
	s := newSourceCAT(t)

	t.Run("connection", func(t *testing.T) {
		for config, want := range map[string]string{s.config: "SUCCEEDED", "../source/integration_tests/invalid_config.json": "FAILED"} {
			out := connectortest.Run(t, s.bin, nil, "check", "--config", config)
			st := out.OfType(protocol.TypeConnectionStatus)
			if out.Code != 0 || len(st) != 1 || st[0].ConnectionStatus.Status != want {
				t.Errorf("check %s: want one %s status and exit 0:\n%s", config, want, out)
			}
		}
	})

	t.Run("discovery", func(t *testing.T) {
		names := map[string]bool{}
		for _, st := range s.streams {
			if names[st.Name] {
				t.Errorf("duplicate stream name %s", st.Name)
			}
			names[st.Name] = true
			c := jsonschema.NewCompiler()
			c.Draft = jsonschema.Draft7
			if err := c.AddResource("s.json", bytes.NewReader(st.JSONSchema)); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Compile("s.json"); err != nil {
				t.Errorf("%s: invalid schema: %v", st.Name, err)
			}
			var schema struct {
				Properties           map[string]any `json:"properties"`
				AdditionalProperties any            `json:"additionalProperties"`
			}
			_ = json.Unmarshal(st.JSONSchema, &schema)
			if schema.AdditionalProperties != true {
				t.Errorf("%s: additionalProperties must be true", st.Name)
			}
			for _, path := range append(slices.Clone(st.SourceDefinedPrimaryKey), st.DefaultCursorField) {
				if schema.Properties[path[0]] == nil {
					t.Errorf("%s: key/cursor field %v not in the schema", st.Name, path)
				}
			}
			for _, kw := range []string{`"$ref"`, `"allOf"`, `"not"`} {
				if bytes.Contains(st.JSONSchema, []byte(kw+":")) {
					t.Errorf("%s: schema uses %s", st.Name, kw)
				}
			}
			if st.SupportedSyncModes[0] != protocol.SyncFullRefresh {
				t.Errorf("%s: full_refresh must come first", st.Name)
			}
		}
	})

	var first *connectortest.Output
	t.Run("basic_read", func(t *testing.T) {
		first = s.read(t, s.catalog, "")
		validateRecords(t, s.streams, first)
		statuses := map[string][]string{}
		for _, m := range first.OfType(protocol.TypeTrace) {
			if ss := m.Trace.StreamStatus; ss != nil {
				statuses[ss.StreamDescriptor.Name] = append(statuses[ss.StreamDescriptor.Name], ss.Status)
			}
		}
		if !slices.Equal(statuses["users"], []string{"STARTED", "RUNNING", "COMPLETE"}) {
			t.Errorf("statuses %v", statuses)
		}
		states := first.OfType(protocol.TypeState)
		if len(states) < 1 || states[0].State.Type != protocol.StateStream || states[0].State.SourceStats == nil {
			t.Errorf("want STREAM states with sourceStats, got %d", len(states))
		}
		compareGolden(t, "../source/integration_tests/expected_records.jsonl", first)
	})

	t.Run("full_refresh", func(t *testing.T) {
		b, _ := os.ReadFile(s.catalog)
		full := connectortest.WriteJSON(t, "full.json", strings.ReplaceAll(string(b), `"sync_mode":"incremental"`, `"sync_mode":"full_refresh"`))
		a := s.read(t, full, "")
		time.Sleep(100 * time.Millisecond)
		b2 := s.read(t, full, "")
		maxA, minB := int64(0), int64(1<<62)
		for _, m := range a.OfType(protocol.TypeRecord) {
			maxA = max(maxA, m.Record.EmittedAt)
		}
		for _, m := range b2.OfType(protocol.TypeRecord) {
			minB = min(minB, m.Record.EmittedAt)
		}
		if maxA >= minB || len(a.Records(t)) != len(b2.Records(t)) {
			t.Errorf("two full refreshes: emitted_at %d ≥ %d or %d ≠ %d records", maxA, minB, len(a.Records(t)), len(b2.Records(t)))
		}
	})

	t.Run("incremental", func(t *testing.T) {
		// test_two_sequential_reads: the state rebuilt the way CAT does it.
		var blob json.RawMessage
		for _, m := range first.OfType(protocol.TypeState) {
			blob = m.State.Stream.StreamState
		}
		var ns struct {
			Namespace string `json:"stream_namespace"`
		}
		_ = json.Unmarshal(blob, &ns)
		state := connectortest.WriteJSON(t, "state.json", fmt.Sprintf(`[{"type":"STREAM","stream":{"stream_descriptor":{"name":"users","namespace":%q},"stream_state":%s}}]`, ns.Namespace, blob))
		if n := len(s.read(t, s.catalog, state).Records(t)); n != 0 {
			t.Errorf("second incremental read sent %d records again", n)
		}
		// test_state_with_abnormally_large_values.
		out := s.read(t, s.catalog, "../source/integration_tests/abnormal_state.json")
		if n := len(out.Records(t)); n != 0 || len(out.OfType(protocol.TypeState)) == 0 {
			t.Errorf("future state: %d records, %d states", n, len(out.OfType(protocol.TypeState)))
		}
	})

	t.Run("trace_on_failure", func(t *testing.T) {
		bad := connectortest.WriteJSON(t, "bad.json", `{"streams":[{"stream":{"name":"__AIRBYTE__stream_that_does_not_exist","json_schema":{},"supported_sync_modes":["full_refresh"]},"sync_mode":"INVALID","destination_sync_mode":"INVALID"}]}`)
		out := connectortest.Run(t, s.bin, nil, "read", "--config", s.config, "--catalog", bad)
		if len(out.Errors()) == 0 || out.Code == 0 {
			t.Errorf("an invalid catalog needs an ERROR trace and a non-zero exit:\n%s", out)
		}
	})
}

// validateRecords checks every record against its stream's schema, with
// date-time formats asserted, as CAT's basic read does.
func validateRecords(t *testing.T, streams []protocol.Stream, out *connectortest.Output) {
	t.Helper()
	schemas := map[string]*jsonschema.Schema{}
	for _, st := range streams {
		c := jsonschema.NewCompiler()
		c.Draft = jsonschema.Draft7
		c.AssertFormat = true
		_ = c.AddResource("s.json", bytes.NewReader(st.JSONSchema))
		schemas[st.Name] = c.MustCompile("s.json")
	}
	for _, m := range out.OfType(protocol.TypeRecord) {
		dec := json.NewDecoder(bytes.NewReader(m.Record.Data))
		dec.UseNumber()
		var v any
		_ = dec.Decode(&v)
		if err := schemas[m.Record.Stream].Validate(v); err != nil {
			t.Errorf("record of %s does not match its schema: %v\n%s", m.Record.Stream, err, m.Record.Data)
		}
	}
}

// volatile are the record fields that change from run to run.
var volatile = []string{"_ab_cdc_lsn", "_ab_cdc_updated_at"}

// compareGolden compares the records, volatile fields scrubbed, with a
// JSON-lines file (rewritten when UPDATE_GOLDEN=1).
func compareGolden(t *testing.T, path string, out *connectortest.Output) {
	t.Helper()
	var lines []string
	for _, r := range out.Records(t) {
		for _, f := range volatile {
			if _, ok := r[f]; ok {
				r[f] = "SCRUBBED"
			}
		}
		b, _ := json.Marshal(r)
		lines = append(lines, string(b))
	}
	sort.Strings(lines)
	got := strings.Join(lines, "\n") + "\n"
	if os.Getenv("UPDATE_GOLDEN") == "1" {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("%v (run with UPDATE_GOLDEN=1 to create it)", err)
	}
	defer f.Close()
	var want []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		want = append(want, sc.Text())
	}
	if strings.Join(want, "\n")+"\n" != got {
		t.Errorf("records differ from %s (UPDATE_GOLDEN=1 rewrites it):\n%s", path, got)
	}
}
