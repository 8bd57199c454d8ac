package main

import (
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
var clientName = "airbyte-source-shapelog-" + version

var spec = &protocol.Spec{
	DocumentationURL:    "https://github.com/shapelog/shapelog/blob/main/source/README.md",
	SupportsIncremental: true,
	ProtocolVersion:     "0.2.0",
	ConnectionSpecification: json.RawMessage(`{
  "$schema": "http://json-schema.org/draft-07/schema#",
  "title": "shapelog Source Spec",
  "type": "object",
  "required": ["deployment_url", "access_key"],
  "additionalProperties": true,
  "properties": {
    "deployment_url": {
      "type": "string",
      "title": "Deployment URL",
      "description": "URL of the shapelog engine that serves your PostgreSQL database, e.g. http://shapelog:3000.",
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
    "tables": {
      "type": "array",
      "title": "Tables",
      "description": "Only sync these tables, as schema.table (or table for schema public). Empty: every table the engine publishes.",
      "items": {"type": "string"},
      "examples": ["public.users", "sales.orders"],
      "order": 2
    },
    "exclude_tables": {
      "type": "array",
      "title": "Excluded Tables",
      "description": "Never sync these tables, as schema.table (or table for schema public).",
      "items": {"type": "string"},
      "order": 3
    },
    "page_size": {
      "type": "integer",
      "title": "Page Size",
      "description": "Rows per request to the engine, and records between checkpoints. Larger pages are faster; smaller ones checkpoint more often.",
      "default": 5000,
      "minimum": 1,
      "maximum": 100000,
      "order": 4
    },
    "invalid_cursor_behavior": {
      "type": "string",
      "title": "Invalid Cursor Behavior",
      "description": "What to do when the engine no longer has a stream's snapshot or the changes after its cursor (syncs paused longer than the engine's --retention, or a snapshot of a table without a primary key interrupted by an engine restart). Fail sync: the stream fails with an error saying how to recover (refresh the stream in Airbyte). Re-sync data: the stream starts a new snapshot (rows are sent again) and, in incremental mode, then reads the changes from its old position (or the oldest one the engine still has), so deletes since then reach the destination. Changes the engine no longer has cannot be recovered: with Re-sync data, rows deleted in PostgreSQL before the oldest retained change may remain in the destination; only a refresh that clears the stream's data is fully exact.",
      "enum": ["Fail sync", "Re-sync data"],
      "default": "Fail sync",
      "order": 5
    }
  }
}`),
}

// config is the source's configuration.
type config struct {
	DeploymentURL string   `json:"deployment_url"`
	AccessKey     string   `json:"access_key"`
	Tables        []string `json:"tables"`
	ExcludeTables []string `json:"exclude_tables"`
	PageSize      int      `json:"page_size"`
	// InvalidCursorBehavior is failSync or resyncData.
	InvalidCursorBehavior string `json:"invalid_cursor_behavior"`
}

// The values of setting `invalid_cursor_behavior`: what a stream does when
// the engine no longer has its snapshot or the changes after its cursor.
const (
	// failSync fails the stream with a config_error saying how to recover.
	failSync = "Fail sync"
	// resyncData starts the stream's snapshot over and, in incremental
	// mode, replays the changes from the old position after it.
	resyncData = "Re-sync data"
)

// loadConfig reads and validates --config and returns it with a client.
// check passes retries = 1 so a wrong address fails fast.
func loadConfig(env *protocol.Env, retries int) (*config, *client.Client, error) {
	var cfg config
	if err := protocol.LoadConfig(env.Args.Config, spec, &cfg); err != nil {
		return nil, nil, err
	}
	if cfg.PageSize == 0 {
		cfg.PageSize = 5000
	}
	switch cfg.InvalidCursorBehavior {
	case "":
		cfg.InvalidCursorBehavior = failSync
	case failSync, resyncData:
	default:
		return nil, nil, protocol.ConfigError(nil, "Setting `invalid_cursor_behavior` is %q: expected %q or %q", cfg.InvalidCursorBehavior, failSync, resyncData)
	}
	c, err := client.New(cfg.DeploymentURL, cfg.AccessKey, client.Options{ClientName: clientName, RetryMax: retries})
	if err != nil {
		return nil, nil, protocol.ConfigError(err, "Setting `deployment_url` is invalid")
	}
	return &cfg, c, nil
}
