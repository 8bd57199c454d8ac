package packaging

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v5"
	"gopkg.in/yaml.v3"
)

// root is the repository's root, from this package's directory.
const root = "../.."

var connectors = []string{"source", "destination"}

// TestMetadataValidatesAgainstAirbyteSchema: each connector's metadata.yaml
// is valid for Airbyte's registry, as its metadata validation (QA check
// "Connectors must have valid metadata.yaml file") sees it, formats
// included; its name heads the connector's docs page, as Airbyte's docs
// check wants; and both declare the same speed-mode (IPC) options. The
// schema is strict: fields it does not define, such as the
// supportedSyncModes the files once had, are refused.
func TestMetadataValidatesAgainstAirbyteSchema(t *testing.T) {
	schema := metadataSchema(t)
	var ipc []string
	for _, name := range connectors {
		doc := loadYAML(t, filepath.Join(root, name, "metadata.yaml"))
		if err := schema.Validate(doc); err != nil {
			t.Errorf("%s/metadata.yaml does not follow Airbyte's metadata schema: %#v", name, err)
		}
		data, _ := doc.(map[string]any)["data"].(map[string]any)
		if data["connectorType"] != name {
			t.Errorf("%s/metadata.yaml: connectorType %v", name, data["connectorType"])
		}
		readme, err := os.ReadFile(filepath.Join(root, name, "README.md"))
		if err != nil {
			t.Fatal(err)
		}
		if first, _, _ := strings.Cut(string(readme), "\n"); first != "# "+data["name"].(string) {
			t.Errorf("%s/README.md starts with %q; Airbyte's docs template wants the connector's name, # %v", name, first, data["name"])
		}
		b, _ := json.Marshal(data["connectorIPCOptions"])
		ipc = append(ipc, string(b))
	}
	if ipc[0] != ipc[1] || ipc[0] == "null" {
		t.Errorf("connectorIPCOptions: source %s, destination %s; want the same speed-mode declaration in both", ipc[0], ipc[1])
	}

	for what, edit := range map[string]func(data map[string]any){
		"an unknown field (supportedSyncModes)": func(d map[string]any) { d["supportedSyncModes"] = []any{"full_refresh"} },
		"a serialization Airbyte does not have": func(d map[string]any) {
			d["connectorIPCOptions"].(map[string]any)["dataChannel"].(map[string]any)["supportedSerialization"] = []any{"AVRO"}
		},
		"a definitionId that is no UUID": func(d map[string]any) { d["definitionId"] = "shapelog" },
		"no dockerImageTag":              func(d map[string]any) { delete(d, "dockerImageTag") },
	} {
		doc := loadYAML(t, filepath.Join(root, "source", "metadata.yaml"))
		edit(doc.(map[string]any)["data"].(map[string]any))
		if schema.Validate(doc) == nil {
			t.Errorf("the schema accepts a metadata.yaml with %s", what)
		}
	}
}

// TestOneVersion: a connector's version is written once, as its
// metadata.yaml's dockerImageTag (the binary embeds that file, see
// internal/connector.Version). Every copy Airbyte or a reader needs
// literally is equal to it: the Dockerfile's io.airbyte.version label (and
// its io.airbyte.name, the dockerRepository), the latest entry of the
// docs page's changelog, and every versioned image name in the Dockerfile
// and the docs (source/README.md, destination/README.md, README.md,
// docs/*.md).
func TestOneVersion(t *testing.T) {
	docs, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	docs = append(docs, filepath.Join(root, "README.md"), filepath.Join(root, "source", "README.md"), filepath.Join(root, "destination", "README.md"))
	semver := regexp.MustCompile(`^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$`)
	for _, name := range connectors {
		var meta struct {
			Data struct {
				DockerRepository string `yaml:"dockerRepository"`
				DockerImageTag   string `yaml:"dockerImageTag"`
			} `yaml:"data"`
		}
		b, err := os.ReadFile(filepath.Join(root, name, "metadata.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, &meta); err != nil {
			t.Fatalf("%s/metadata.yaml: %v", name, err)
		}
		version, repo := meta.Data.DockerImageTag, meta.Data.DockerRepository
		if !semver.MatchString(version) {
			t.Errorf("%s/metadata.yaml: dockerImageTag %q is not a semantic version", name, version)
		}

		df, err := os.ReadFile(filepath.Join(root, "Dockerfile."+name))
		if err != nil {
			t.Fatal(err)
		}
		for label, want := range map[string]string{"io.airbyte.version": version, "io.airbyte.name": repo} {
			var got []string
			for _, m := range regexp.MustCompile(`(?m)^LABEL `+regexp.QuoteMeta(label)+`=(\S+)$`).FindAllSubmatch(df, -1) {
				got = append(got, string(m[1]))
			}
			if len(got) != 1 || got[0] != want {
				t.Errorf("Dockerfile.%s: LABEL %s = %q, want it once, as %q (%s/metadata.yaml)", name, label, got, want, name)
			}
		}

		readme, err := os.ReadFile(filepath.Join(root, name, "README.md"))
		if err != nil {
			t.Fatal(err)
		}
		if v, err := latestChangelogVersion(string(readme)); err != "" || v != version {
			t.Errorf("%s/README.md: changelog's latest version %q (%s), want %q, the dockerImageTag", name, v, err, version)
		}

		image := regexp.MustCompile(regexp.QuoteMeta(repo) + `:([0-9][0-9A-Za-z.+-]*[0-9A-Za-z])`)
		for _, f := range append([]string{filepath.Join(root, "Dockerfile."+name)}, docs...) {
			text, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range image.FindAllSubmatch(text, -1) {
				if string(m[1]) != version {
					t.Errorf("%s names the image %s, but %s/metadata.yaml's dockerImageTag is %s", f, m[0], name, version)
				}
			}
		}
	}
}

// latestChangelogVersion is the version of the first row of the docs
// page's changelog, whose columns must be Airbyte's (Version, Date, Pull
// Request, Subject); problem says what is wrong otherwise.
func latestChangelogVersion(page string) (version, problem string) {
	_, log, ok := strings.Cut(page, "\n## Changelog\n")
	if !ok {
		return "", "no ## Changelog section"
	}
	var rows [][]string
	for _, line := range strings.Split(log, "\n") {
		if !strings.HasPrefix(line, "|") {
			continue
		}
		var cells []string
		for _, c := range strings.Split(strings.Trim(line, "|"), "|") {
			cells = append(cells, strings.TrimSpace(c))
		}
		rows = append(rows, cells)
	}
	if len(rows) < 3 {
		return "", "no changelog table with a row"
	}
	if !slices.Equal(rows[0], []string{"Version", "Date", "Pull Request", "Subject"}) {
		return "", "changelog columns are " + strings.Join(rows[0], ", ") + ", not Version, Date, Pull Request, Subject"
	}
	return rows[2][0], ""
}

// metadataSchema compiles the vendored ConnectorMetadataDefinitionV0.json,
// working around two flaws of the published bundle (see testdata/README.md):
// its nested schemas keep their own $id while its $refs are relative to the
// root, and generated.metrics names a type, ConnectorMetric, that is a
// definition.
func metadataSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	raw, err := os.ReadFile("testdata/ConnectorMetadataDefinitionV0.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	var dropIDs func(v any)
	dropIDs = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			delete(v, "$id")
			delete(v, "$schema")
			for _, x := range v {
				dropIDs(x)
			}
		case []any:
			for _, x := range v {
				dropIDs(x)
			}
		}
	}
	for k, v := range doc {
		if k != "$id" && k != "$schema" {
			dropIDs(v)
		}
	}
	const metrics = "#/properties/data/properties/generated/properties/metrics"
	props, _ := dig(doc, "properties", "data", "properties", "generated", "properties", "metrics", "properties").(map[string]any)
	if len(props) == 0 {
		t.Fatalf("testdata/ConnectorMetadataDefinitionV0.json has no %s/properties: the vendored schema changed, revisit the workarounds", metrics)
	}
	for k, p := range props {
		m, _ := p.(map[string]any)
		if m["type"] != "ConnectorMetric" {
			t.Fatalf("%s/properties/%s is %v: the vendored schema changed, revisit the workarounds", metrics, k, p)
		}
		delete(m, "type")
		m["$ref"] = metrics + "/definitions/ConnectorMetric"
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.Draft = jsonschema.Draft7
	c.AssertFormat = true
	const url = "ConnectorMetadataDefinitionV0.json"
	if err := c.AddResource(url, bytes.NewReader(js)); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(url)
	if err != nil {
		t.Fatalf("compiling Airbyte's metadata schema: %v", err)
	}
	return s
}

// dig is the value at a path of object keys, nil if there is none.
func dig(v any, path ...string) any {
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// loadYAML reads a YAML file as the JSON value a validator takes.
func loadYAML(t *testing.T, path string) any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	var out any
	if err := dec.Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}
