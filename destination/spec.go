package main

import (
	"context"
	_ "embed"
	"encoding/json"

	"github.com/shapelog/shapelog/engine/client"
	"github.com/shapelog/shapelog/internal/connector"
	"github.com/shapelog/shapelog/protocol"
)

// metadataYAML is the connector's Airbyte registry entry.
//
//go:embed metadata.yaml
var metadataYAML []byte

// version is the connector's version: metadata.yaml's dockerImageTag.
var version = connector.Version(metadataYAML)

// clientName is sent as Convex-Client on every engine call.
var clientName = "airbyte-destination-shapelog-" + version

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
      "pattern_descriptor": "http(s)://host[:port]",
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
	if len(cfg.DefaultSchema) > 63 {
		return nil, nil, protocol.ConfigError(nil, "Setting `default_schema` is %d bytes long: PostgreSQL names are at most 63 bytes", len(cfg.DefaultSchema))
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

// check answers the check command without leaving anything behind: the
// settings must be valid (loadConfig), and the engine must answer with
// this key and prove it can write into the default schema — it creates a
// table there and inserts a row in a transaction it rolls back, so the
// database, and a shapelog source reading it, is left as it was. A role
// lacking CREATE or INSERT fails here, as a config_error naming the
// privilege.
func check(ctx context.Context, env *protocol.Env) error {
	cfg, c, err := loadConfig(env, 1)
	if err != nil {
		return err
	}
	if err := c.CheckWrite(ctx, []string{cfg.DefaultSchema}); err != nil {
		return connector.CheckFailure(connector.EngineError(err, "checking that the engine can write into schema "+cfg.DefaultSchema))
	}
	env.Log.Info().Str("default_schema", cfg.DefaultSchema).Msg("connection checked: the engine answers with this key and can write into the default schema")
	return nil
}
