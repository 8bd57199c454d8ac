package main

import (
	"context"
	"encoding/json"
	"sort"
	"strings"

	"github.com/shapelog/shapelog/engine/client"
	"github.com/shapelog/shapelog/internal/connector"
	"github.com/shapelog/shapelog/protocol"
)

// CDC fields added to every record (Airbyte's CDC convention), and the
// marker a TRUNCATE leaves.
const (
	fieldLSN       = "_ab_cdc_lsn"
	fieldUpdatedAt = "_ab_cdc_updated_at"
	fieldDeletedAt = "_ab_cdc_deleted_at"
	fieldTruncated = "_ab_cdc_truncated"
)

// Engine system fields (see the engine's json_schemas). A column named
// like one, plus any number of underscores, arrives with one more
// underscore.
var systemFields = map[string]bool{"_id": true, "_ts": true, "_table": true, "_deleted": true, "_truncated": true, "_component": true}

// columnName is the PostgreSQL column name of an exported field.
func columnName(field string) string {
	if strings.HasSuffix(field, "_") && systemFields[strings.TrimRight(field, "_")] {
		return field[:len(field)-1]
	}
	return field
}

// conversion says how an engine value becomes an Airbyte value.
type conversion uint8

const (
	asIs           conversion = iota
	integerString             // int8 as a base-10 string -> JSON integer
	numericString             // numeric as a decimal string -> JSON number (NaN, ±Infinity -> null)
	floatOrSpecial            // float: numbers as they are, "NaN"/"inf" strings -> null
	timeWithZone              // timetz: the offset as ±HH:MM (RFC 3339), "+02" -> "+02:00"
)

// column is how one exported field is written.
type column struct {
	key  []byte // `"name":` in the output
	conv conversion
	name string
}

// stream is one table as the source emits it.
type stream struct {
	desc        protocol.StreamDescriptor
	apiName     string
	columns     map[string]*column // by exported field name
	airbyte     protocol.Stream
	rowEstimate int64
}

// engineTableSchema is the part of the engine's json_schemas entry the
// source reads.
type engineTableSchema struct {
	Properties  map[string]map[string]any `json:"properties"`
	SchemaName  string                    `json:"$schemaName"`
	TableName   string                    `json:"$tableName"`
	PrimaryKey  []string                  `json:"$primaryKey"`
	RowEstimate int64                     `json:"$rowEstimate"`
}

// loadStreams asks the engine for its tables and builds their streams,
// filtered by the configuration, sorted by namespace and name.
func loadStreams(ctx context.Context, c *client.Client, cfg *config) ([]*stream, error) {
	schemas, err := c.JSONSchemas(ctx, true, "json")
	if err != nil {
		return nil, connector.EngineError(err, "listing the tables (json_schemas)")
	}
	include, exclude := tableSet(cfg.Tables), tableSet(cfg.ExcludeTables)
	var out []*stream
	for apiName, raw := range schemas {
		var ts engineTableSchema
		if err := json.Unmarshal(raw, &ts); err != nil || ts.TableName == "" {
			return nil, protocol.SystemError(err, "The engine described table %q in an unexpected way (is it a shapelog engine of a compatible version?)", apiName)
		}
		if (len(include) > 0 && !include.has(ts.SchemaName, ts.TableName)) || exclude.has(ts.SchemaName, ts.TableName) {
			continue
		}
		out = append(out, newStream(apiName, &ts))
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].desc, out[j].desc
		if a.NamespaceOrEmpty() != b.NamespaceOrEmpty() {
			return a.NamespaceOrEmpty() < b.NamespaceOrEmpty()
		}
		return a.Name < b.Name
	})
	for _, name := range cfg.Tables {
		found := false
		for _, s := range out {
			found = found || tableSet([]string{name}).has(s.desc.NamespaceOrEmpty(), s.desc.Name)
		}
		if !found {
			return nil, protocol.ConfigError(nil, "Setting `tables` names %q, which the engine does not publish (check the name, as schema.table, and the engine's SHAPELOG_SCHEMAS/SHAPELOG_TABLES)", name)
		}
	}
	return out, nil
}

// tables is a set of schema.table names.
type tables map[string]bool

func tableSet(names []string) tables {
	t := tables{}
	for _, n := range names {
		n = strings.TrimSpace(n)
		if !strings.Contains(n, ".") {
			n = "public." + n
		}
		t[n] = true
	}
	return t
}

func (t tables) has(schema, table string) bool { return t[schema+"."+table] }

func newStream(apiName string, ts *engineTableSchema) *stream {
	s := &stream{
		desc:        protocol.NewDescriptor(ts.SchemaName, ts.TableName),
		apiName:     apiName,
		columns:     map[string]*column{},
		rowEstimate: ts.RowEstimate,
	}
	props := map[string]any{}
	for field, fs := range ts.Properties {
		if systemFields[field] {
			continue
		}
		name := columnName(field)
		schema, conv := airbyteSchema(fs)
		props[name] = schema
		key, _ := json.Marshal(name)
		s.columns[field] = &column{key: append(key, ':'), conv: conv, name: name}
	}
	timestamp := func(nullable bool) map[string]any {
		m := map[string]any{"type": "string", "format": "date-time", "airbyte_type": "timestamp_with_timezone"}
		if nullable {
			m["type"] = []any{"string", "null"}
		}
		return m
	}
	props[fieldLSN] = map[string]any{"type": "integer", "description": "Commit timestamp in nanoseconds since the Unix epoch: the change's position in the engine's log."}
	props[fieldUpdatedAt] = timestamp(false)
	props[fieldDeletedAt] = timestamp(true)
	props[fieldTruncated] = map[string]any{"type": []any{"boolean", "null"}, "description": "true on the record a TRUNCATE leaves: every earlier row of the table is deleted."}
	schema, _ := json.Marshal(map[string]any{
		"$schema":              "http://json-schema.org/draft-07/schema#",
		"type":                 "object",
		"additionalProperties": true,
		"properties":           props,
	})
	s.airbyte = protocol.Stream{
		Name:                s.desc.Name,
		Namespace:           ts.SchemaName,
		JSONSchema:          schema,
		SupportedSyncModes:  []string{protocol.SyncFullRefresh, protocol.SyncIncremental},
		SourceDefinedCursor: true,
		DefaultCursorField:  []string{fieldLSN},
		IsResumable:         true,
	}
	for _, k := range ts.PrimaryKey {
		s.airbyte.SourceDefinedPrimaryKey = append(s.airbyte.SourceDefinedPrimaryKey, []string{columnName(k)})
	}
	return s
}

// Engine value descriptions (the engine's json_schemas $description) that
// need a different Airbyte type.
const (
	descInt64     = "int64 represented as base10 string"
	descNumeric   = "numeric represented as base10 string"
	descFloat     = "float64"
	descTime      = "ISO-8601 time without time zone"
	descTimeTZ    = "ISO-8601 time with UTC offset"
	descTimestamp = "ISO-8601 timestamp without time zone"
	descBytes     = "base64 bytes"
)

// sourceDescriptions describe, for the engine descriptions of values the
// source converts (see convert), what the source emits instead: the
// engine's words describe its own JSON (int64 as a string, a time's bare
// hour offset), not the records.
var sourceDescriptions = map[string]string{
	descInt64:   "64-bit integer, as an exact JSON integer (beyond 2^53 too)",
	descNumeric: "Decimal, as an exact JSON number with every digit PostgreSQL holds; NaN and ±Infinity are sent as null, with a NULLED change in the record's meta",
	descFloat:   "Floating-point number, as a JSON number; NaN and ±Infinity are sent as null, with a NULLED change in the record's meta",
	descTimeTZ:  "Time of day with UTC offset, as an RFC 3339 full-time (HH:MM:SS[.ffffff]±HH:MM)",
	descTime:    "Time of day without time zone, as an RFC 3339 partial-time (HH:MM:SS[.ffffff])",
}

// airbyteSchema maps an engine column schema (format=json) to Airbyte's
// type conventions and says how values are converted.
func airbyteSchema(s map[string]any) (map[string]any, conversion) {
	out := map[string]any{}
	if t, ok := s["$pgType"]; ok {
		out["$pgType"] = t
	}
	desc, _ := s["$description"].(string)
	if d, ok := sourceDescriptions[desc]; ok {
		out["description"] = d
	} else if desc != "" {
		out["description"] = desc
	}
	if variants, ok := s["anyOf"].([]any); ok && desc != descFloat {
		var conv conversion
		mapped := make([]any, 0, len(variants))
		for _, v := range variants {
			vm, _ := v.(map[string]any)
			m, c := airbyteSchema(vm)
			delete(m, "$pgType")
			if c != asIs {
				conv = c
			}
			mapped = append(mapped, m)
		}
		if len(mapped) == 2 {
			// [X, null] is written as X with type [t, "null"].
			for i, other := range []int{1, 0} {
				x, null := mapped[i].(map[string]any), mapped[other].(map[string]any)
				if t, ok := x["type"].(string); ok && null["type"] == "null" && len(null) == 1 {
					x["type"] = []any{t, "null"}
					if pg, ok := out["$pgType"]; ok {
						x["$pgType"] = pg
					}
					return x, conv
				}
			}
		}
		out["anyOf"] = mapped
		return out, conv
	}
	base, nullable := "", false
	switch t := s["type"].(type) {
	case string:
		base = t
	case []any:
		for _, x := range t {
			if x == "null" {
				nullable = true
			} else if xs, ok := x.(string); ok {
				base = xs
			}
		}
	}
	conv := asIs
	switch {
	case desc == descFloat:
		base, conv = "number", floatOrSpecial
		// a float column allows null through anyOf
		if variants, ok := s["anyOf"].([]any); ok {
			for _, v := range variants {
				if vm, ok := v.(map[string]any); ok && vm["type"] == "null" {
					nullable = true
				}
			}
		}
	case desc == descInt64:
		base, conv = "integer", integerString
	case desc == descNumeric:
		base, conv = "number", numericString
	case desc == descTime:
		out["format"], out["airbyte_type"] = "time", "time_without_timezone"
	case desc == descTimeTZ:
		out["format"], out["airbyte_type"] = "time", "time_with_timezone"
		conv = timeWithZone
	case desc == descTimestamp:
		out["format"], out["airbyte_type"] = "date-time", "timestamp_without_timezone"
	case s["format"] == "date-time":
		out["format"], out["airbyte_type"] = "date-time", "timestamp_with_timezone"
	case desc == descBytes:
		out["contentEncoding"] = "base64"
	case base == "array":
		if items, ok := s["items"].(map[string]any); ok {
			out["items"], conv = airbyteSchema(items)
		}
	default:
		for _, k := range []string{"format", "enum"} {
			if v, ok := s[k]; ok {
				out[k] = v
			}
		}
	}
	switch {
	case base == "":
		// any JSON value (json, jsonb): no type
	case nullable:
		out["type"] = []any{base, "null"}
	default:
		out["type"] = base
	}
	return out, conv
}

// discover answers the discover command.
func discover(ctx context.Context, env *protocol.Env) error {
	cfg, c, err := loadConfig(env, 0)
	if err != nil {
		return err
	}
	streams, err := loadStreams(ctx, c, cfg)
	if err != nil {
		return err
	}
	cat := &protocol.Catalog{Streams: []protocol.Stream{}}
	for _, s := range streams {
		cat.Streams = append(cat.Streams, s.airbyte)
	}
	env.Log.Info().Int("streams", len(cat.Streams)).Msg("discovered")
	return env.Out.Write(&protocol.Message{Type: protocol.TypeCatalog, Catalog: cat})
}

// check answers the check command: the engine must answer with this key
// and export at least the listing of tables.
func check(ctx context.Context, env *protocol.Env) error {
	cfg, c, err := loadConfig(env, 1)
	if err != nil {
		return err
	}
	streams, err := loadStreams(ctx, c, cfg)
	if err != nil {
		return connector.CheckFailure(err)
	}
	env.Log.Info().Int("tables", len(streams)).Msg("connection checked")
	return nil
}
