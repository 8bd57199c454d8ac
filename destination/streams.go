package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/shapelog/shapelog/engine/client"
	"github.com/shapelog/shapelog/engine/recordpb"
	"github.com/shapelog/shapelog/protocol"
)

// Airbyte's metadata columns (Destinations V2), added to every row.
const (
	fieldRawID        = "_airbyte_raw_id"
	fieldExtractedAt  = "_airbyte_extracted_at"
	fieldGenerationID = "_airbyte_generation_id"
	fieldMeta         = "_airbyte_meta"
	// fieldTruncated marks the record a source TRUNCATE leaves (see the
	// source connector): every earlier row of the table is deleted.
	fieldTruncated = "_ab_cdc_truncated"
)

// metaProperties declares the metadata columns in each table's schema.
var metaProperties = map[string]any{
	fieldRawID:        map[string]any{"type": "string"},
	fieldExtractedAt:  map[string]any{"type": "string", "format": "date-time", "airbyte_type": "timestamp_with_timezone"},
	fieldGenerationID: map[string]any{"type": []any{"integer", "null"}},
	fieldMeta:         map[string]any{"type": "object"},
}

// streamPlan is how one configured stream is written.
type streamPlan struct {
	desc  protocol.StreamDescriptor
	table string // API name
	mode  string
	spec  client.TableSpec
	// generation is written into every row; overwrite streams delete the
	// other generations once this one is complete.
	generation    int64
	hasGeneration bool
	truncateAtEnd bool
	syncID        *int64
	// fields are the values of a protobuf record (the stream's fields in
	// Airbyte's order), then the metadata columns the destination adds;
	// truncatedAt is the position of the TRUNCATE marker, -1 without one.
	fields      []string
	truncatedAt int
}

// planStreams maps the configured catalog to tables: namespace (or the
// default schema) . stream name, names kept as they are.
func planStreams(cat *protocol.ConfiguredCatalog, cfg *config) (map[string]*streamPlan, error) {
	plans := map[string]*streamPlan{}
	tables := map[string]string{}
	for _, cs := range cat.Streams {
		d := normalize(cs.Stream.Descriptor())
		fail := func(format string, args ...any) error {
			e := protocol.ConfigError(nil, "Catalog stream %s: %s", d, fmt.Sprintf(format, args...))
			e.Stream = &d
			return e
		}
		schema := cfg.DefaultSchema
		if d.Namespace != nil {
			schema = *d.Namespace
		}
		if len(schema) > 63 || len(d.Name) > 63 {
			return nil, fail("PostgreSQL names are at most 63 bytes; shorten the namespace or stream name (e.g. with a stream prefix or custom namespace in the connection)")
		}
		p := &streamPlan{desc: d, table: client.TableName(schema, d.Name), mode: cs.DestinationSyncMode, syncID: cs.SyncID}
		if other, ok := tables[p.table]; ok {
			return nil, fail("writes to the same table %s as stream %s", p.table, other)
		}
		tables[p.table] = d.String()
		switch p.mode {
		case protocol.DestinationAppend, protocol.DestinationOverwrite:
		case protocol.DestinationAppendDedup:
			pk := cs.PrimaryKey
			if len(pk) == 0 {
				pk = cs.Stream.SourceDefinedPrimaryKey
			}
			if len(pk) == 0 {
				return nil, fail("append_dedup needs a primary key: choose one in the connection's stream settings")
			}
			p.spec.PrimaryKey = pk
		default:
			return nil, fail("destination_sync_mode %q is not supported: use append, overwrite or append_dedup", p.mode)
		}
		if cs.GenerationID != nil {
			p.generation, p.hasGeneration = *cs.GenerationID, true
		}
		refresh := cs.GenerationID != nil && cs.MinimumGenerationID != nil && *cs.GenerationID > 0 && *cs.MinimumGenerationID == *cs.GenerationID
		p.truncateAtEnd = p.mode == protocol.DestinationOverwrite || refresh
		if p.truncateAtEnd && (!p.hasGeneration || p.generation == 0) {
			// A platform without refreshes: a generation of our own, new for
			// every sync, tells this sync's rows from the older ones.
			p.generation, p.hasGeneration = time.Now().UnixMilli(), true
		}
		var err error
		if p.spec.JSONSchema, err = withMetaProperties(cs.Stream.JSONSchema); err != nil {
			return nil, fail("json_schema is not a JSON object: %v", err)
		}
		if p.fields, err = recordFields(cs.Stream.JSONSchema); err != nil {
			return nil, fail("json_schema: %v", err)
		}
		p.truncatedAt = slices.Index(p.fields, fieldTruncated)
		p.fields = append(p.fields, metaFields...)
		plans[descKey(d)] = p
	}
	return plans, nil
}

// recordFields are the fields of a stream's records in the order Airbyte's
// protobuf records carry their values: its schema's properties, sorted.
func recordFields(schema json.RawMessage) ([]string, error) {
	var s struct {
		Properties map[string]json.RawMessage `json:"properties"`
	}
	if len(schema) > 0 {
		if err := json.Unmarshal(schema, &s); err != nil {
			return nil, err
		}
	}
	fields := make([]string, 0, len(s.Properties))
	for name := range s.Properties {
		fields = append(fields, name)
	}
	recordpb.SortFieldNames(fields)
	return fields, nil
}

// withMetaProperties returns the stream's schema with the metadata columns
// declared.
func withMetaProperties(raw json.RawMessage) (json.RawMessage, error) {
	var s map[string]any
	if len(raw) == 0 {
		s = map[string]any{}
	} else if err := json.Unmarshal(raw, &s); err != nil {
		return nil, err
	}
	if s == nil {
		s = map[string]any{}
	}
	props, _ := s["properties"].(map[string]any)
	if props == nil {
		props = map[string]any{}
	}
	for k, v := range metaProperties {
		props[k] = v
	}
	s["properties"] = props
	if _, ok := s["type"]; !ok {
		s["type"] = "object"
	}
	return json.Marshal(s)
}

// normalize treats an empty namespace as none, as the platform does.
func normalize(d protocol.StreamDescriptor) protocol.StreamDescriptor {
	if d.Namespace != nil && *d.Namespace == "" {
		d.Namespace = nil
	}
	return d
}

func descKey(d protocol.StreamDescriptor) string { return d.NamespaceOrEmpty() + "\x00" + d.Name }

// lookup finds the plan of a record's stream; a record without namespace
// matches the only stream of that name.
func lookup(plans map[string]*streamPlan, d protocol.StreamDescriptor) *streamPlan {
	if p := plans[descKey(d)]; p != nil {
		return p
	}
	if d.Namespace != nil {
		return nil
	}
	var found *streamPlan
	for _, p := range plans {
		if p.desc.Name == d.Name {
			if found != nil {
				return nil
			}
			found = p
		}
	}
	return found
}
