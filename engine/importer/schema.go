package importer

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v5"
)

// compiledSchema is a stream's jsonSchema, compiled: the reference
// validator, the fast path's subset (or nil), the declared column types by
// field and the properties that get columns, sorted. It is only read.
type compiledSchema struct {
	schema   *jsonschema.Schema
	fast     *fastSchema
	declared map[string]string
	names    []string
	kinds    *kindChecks // per-field kind checks, for protobuf bodies (see protobuf.go)
}

// schemaCache keeps compiled schemas by their text: a sync sends the same
// schema with every batch, and compiling it costs more than a small batch.
var schemaCache = struct {
	sync.Mutex
	m map[string]*compiledSchema
}{m: map[string]*compiledSchema{}}

const schemaCacheSize = 256

func compileSchema(api string, raw []byte) (*compiledSchema, error) {
	schemaCache.Lock()
	cs := schemaCache.m[string(raw)]
	schemaCache.Unlock()
	if cs != nil {
		return cs, nil
	}
	c := jsonschema.NewCompiler()
	c.Draft = jsonschema.Draft7
	c.LoadURL = loadSchemaURL
	for name, check := range airbyteFormats {
		c.Formats[name] = check
	}
	if err := c.AddResource("stream.json", bytes.NewReader(raw)); err != nil {
		return nil, badRequest("InvalidJsonSchema", "The jsonSchema of table %s is not valid JSON Schema: %v", api, err)
	}
	schema, err := c.Compile("stream.json")
	if err != nil {
		return nil, badRequest("InvalidJsonSchema", "The jsonSchema of table %s does not compile: %v", api, err)
	}
	cs = &compiledSchema{schema: schema, declared: map[string]string{}}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err == nil {
		cs.fast = compileFast(doc)
		cs.kinds = compileKindChecks(doc)
		props, _ := doc["properties"].(map[string]any)
		for name := range props {
			if !strings.HasPrefix(name, cdcPrefix) {
				cs.names = append(cs.names, name)
			}
		}
		sort.Strings(cs.names)
		for _, name := range cs.names {
			if !nullOnly(props[name]) {
				cs.declared[name] = declaredType(props[name])
			}
		}
	}
	schemaCache.Lock()
	if len(schemaCache.m) >= schemaCacheSize {
		clear(schemaCache.m)
	}
	schemaCache.m[string(raw)] = cs
	schemaCache.Unlock()
	return cs, nil
}

//go:embed wellknown.json
var wellKnownTypes []byte

// loadSchemaURL resolves $refs: Airbyte's WellKnownTypes.json is built in;
// nothing is ever fetched from the network or the disk.
func loadSchemaURL(u string) (io.ReadCloser, error) {
	if strings.HasSuffix(strings.SplitN(u, "#", 2)[0], "WellKnownTypes.json") {
		return io.NopCloser(bytes.NewReader(wellKnownTypes)), nil
	}
	return nil, fmt.Errorf("$ref to %s is not allowed: schemas must be self-contained (only WellKnownTypes.json is known)", u)
}

// describe picks the most specific cause of a validation failure, with the
// path of the failing value.
func describe(err error) string {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return err.Error()
	}
	for len(ve.Causes) > 0 {
		ve = ve.Causes[0]
	}
	loc := ve.InstanceLocation
	if loc == "" {
		loc = "/"
	}
	return fmt.Sprintf("at %s: %s", loc, ve.Message)
}
