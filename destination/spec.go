package main

import (
	"context"
	"encoding/json"
	"time"

	"github.com/shapelog/shapelog/engine/client"
	"github.com/shapelog/shapelog/internal/connector"
	"github.com/shapelog/shapelog/protocol"
)

// version is the connector's version (the image tag).
const version = "0.1.0"

// clientName is sent as Convex-Client on every engine call.
const clientName = "airbyte-destination-shapelog-" + version

var spec = &protocol.Spec{
	DocumentationURL:    "https://github.com/shapelog/shapelog/blob/main/destination/README.md",
	SupportsIncremental: true,
	ProtocolVersion:     "0.2.0",
	SupportedDestinationSyncModes: []string{
		protocol.DestinationAppend, protocol.DestinationOverwrite, protocol.DestinationAppendDedup,
	},
	ConnectionSpecification: json.RawMessage(`{
  "$schema": "http://json-schema.org/draft-07/schema#",
  "title": "shapelog Destination Spec",
  "type": "object",
  "required": ["deployment_url", "access_key"],
  "additionalProperties": true,
  "properties": {
    "deployment_url": {
      "type": "string",
      "title": "Deployment URL",
      "description": "URL of the shapelog engine in front of the destination PostgreSQL database, e.g. http://shapelog:3000.",
      "format": "uri",
      "pattern": "^https?://",
      "examples": ["http://shapelog:3000", "https://sync.example.com"],
      "order": 0
    },
    "access_key": {
      "type": "string",
      "title": "Access Key",
      "description": "The engine's access key (SHAPELOG_ACCESS_KEY on the engine).",
      "airbyte_secret": true,
      "order": 1
    },
    "default_schema": {
      "type": "string",
      "title": "Default Schema",
      "description": "PostgreSQL schema for streams without a namespace. Streams with a namespace go to the schema of that name; missing schemas are created.",
      "default": "public",
      "examples": ["public", "airbyte"],
      "order": 2
    },
    "batch_size": {
      "type": "integer",
      "title": "Batch Size (records)",
      "description": "Records per import request (one transaction). A batch is also sent at every state message.",
      "default": 10000,
      "minimum": 1,
      "maximum": 1000000,
      "order": 3
    },
    "batch_megabytes": {
      "type": "integer",
      "title": "Batch Size (MiB)",
      "description": "Upper bound of an import request's size; keep it below the engine's SHAPELOG_MAX_IMPORT_BYTES (64 MiB by default). Memory use is about three batches.",
      "default": 16,
      "minimum": 1,
      "maximum": 1024,
      "order": 4
    }
  }
}`),
}

// config is the destination's configuration.
type config struct {
	DeploymentURL  string `json:"deployment_url"`
	AccessKey      string `json:"access_key"`
	DefaultSchema  string `json:"default_schema"`
	BatchSize      int    `json:"batch_size"`
	BatchMegabytes int    `json:"batch_megabytes"`
}

func loadConfig(env *protocol.Env, retries int) (*config, *client.Client, error) {
	var cfg config
	if err := protocol.LoadConfig(env.Args.Config, spec, &cfg); err != nil {
		return nil, nil, err
	}
	if cfg.DefaultSchema == "" {
		cfg.DefaultSchema = "public"
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 10000
	}
	if cfg.BatchMegabytes == 0 {
		cfg.BatchMegabytes = 16
	}
	c, err := client.New(cfg.DeploymentURL, cfg.AccessKey, client.Options{ClientName: clientName, RetryMax: retries})
	if err != nil {
		return nil, nil, protocol.ConfigError(err, "Setting `deployment_url` is invalid")
	}
	return &cfg, c, nil
}

// checkTable is where check proves it can write; it is left empty.
const checkTable = "_airbyte_connection_check"

// check proves the destination can really write: it creates (if needed) a
// table in the default schema, imports a record into it and empties it.
func check(ctx context.Context, env *protocol.Env) error {
	cfg, c, err := loadConfig(env, 1)
	if err != nil {
		return err
	}
	table := client.TableName(cfg.DefaultSchema, checkTable)
	req := client.ImportRequest{
		Tables:   map[string]client.TableSpec{table: {JSONSchema: json.RawMessage(`{"type":"object","properties":{"checked_at":{"type":"string","format":"date-time","airbyte_type":"timestamp_with_timezone"}}}`)}},
		Messages: []client.Message{{TableName: table, Data: json.RawMessage(`{"checked_at":"` + time.Now().UTC().Format(time.RFC3339Nano) + `"}`)}},
	}
	if err := c.ImportAirbyteRecords(ctx, req, ""); err != nil {
		return connector.CheckFailure(connector.EngineError(err, "writing a test record into "+table))
	}
	if err := c.ClearTables(ctx, []string{table}); err != nil {
		return connector.CheckFailure(connector.EngineError(err, "emptying "+table))
	}
	env.Log.Info().Str("table", table).Msg("connection checked: a record was written and removed")
	return nil
}
