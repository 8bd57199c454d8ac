package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/shapelog/shapelog/engine/catalog"
	"github.com/shapelog/shapelog/engine/functions"
	"github.com/shapelog/shapelog/engine/httpapi"
)

// config is the engine's configuration: flags, defaulting to environment
// variables, defaulting to built-in values.
type config struct {
	DatabaseURL      string
	DatabaseID       string
	AccessKey        string
	Insecure         bool
	Host             string
	Port             int
	StorageDir       string
	Schemas          string
	Tables           string
	Publication      string
	Slot             string
	Retention        time.Duration
	SnapshotIdle     time.Duration
	MaxSnapshots     int
	SnapshotConns    int
	StatementTimeout time.Duration
	MaxImportBytes   int64
	FunctionSchemas  string
	FunctionTokens   string
	FunctionPublic   string
	FunctionTimeout  time.Duration
	ShapeSecret      string
	LongPoll         time.Duration
	AllowDelete      bool
	ChunkBytes       int
	LogLevel         string
	LogFormat        string
	ShutdownTimeout  time.Duration
	ReplTimeout      time.Duration
	Metrics          string
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

// bindFlags registers the flags of `serve` (and `dev`).
func bindFlags(fs *flag.FlagSet, c *config) {
	fs.StringVar(&c.DatabaseURL, "database-url", env("DATABASE_URL", ""), "PostgreSQL connection URL (env DATABASE_URL; required)")
	fs.StringVar(&c.DatabaseID, "database-id", env("SHAPELOG_DATABASE_ID", "default"), "database_id of DATABASE_URL in shape requests once other databases are added with POST /v1/admin/database (env SHAPELOG_DATABASE_ID)")
	fs.StringVar(&c.AccessKey, "access-key", env("SHAPELOG_ACCESS_KEY", ""), "key clients send as `Authorization: Convex <key>` (env SHAPELOG_ACCESS_KEY; required unless --insecure)")
	fs.BoolVar(&c.Insecure, "insecure", env("SHAPELOG_INSECURE", "") == "true", "serve /api without authentication (env SHAPELOG_INSECURE=true); for local development only")
	fs.StringVar(&c.StorageDir, "storage-dir", env("SHAPELOG_STORAGE_DIR", "./shapelog-data"), "directory of the durable shape log (env SHAPELOG_STORAGE_DIR)")
	fs.StringVar(&c.Schemas, "schemas", env("SHAPELOG_SCHEMAS", ""), "comma-separated schemas whose tables are published (env SHAPELOG_SCHEMAS; default public when --tables is empty)")
	fs.StringVar(&c.Tables, "tables", env("SHAPELOG_TABLES", ""), "comma-separated tables to publish, as schema.table or API names (env SHAPELOG_TABLES)")
	fs.StringVar(&c.Publication, "publication", env("SHAPELOG_PUBLICATION", "shapelog"), "publication the engine owns (env SHAPELOG_PUBLICATION)")
	fs.StringVar(&c.Slot, "slot", env("SHAPELOG_SLOT", "shapelog"), "logical replication slot the engine owns (env SHAPELOG_SLOT)")
	fs.StringVar(&c.LogLevel, "log-level", env("SHAPELOG_LOG_LEVEL", "info"), "debug, info, warn or error (env SHAPELOG_LOG_LEVEL)")
	fs.StringVar(&c.LogFormat, "log-format", env("SHAPELOG_LOG_FORMAT", "json"), "json or console (env SHAPELOG_LOG_FORMAT)")
	fs.StringVar(&c.Host, "host", env("SHAPELOG_HOST", ""), "address the HTTP server binds to, e.g. 127.0.0.1 or ::1 (env SHAPELOG_HOST; default all interfaces)")
	c.Port = envInt("SHAPELOG_PORT", 3000)
	fs.IntVar(&c.Port, "port", c.Port, "HTTP port (env SHAPELOG_PORT)")
	c.ReplTimeout = envDuration("SHAPELOG_REPLICATION_TIMEOUT", 60*time.Second)
	fs.DurationVar(&c.ReplTimeout, "replication-timeout", c.ReplTimeout, "reconnect replication when PostgreSQL sends nothing, not even a keepalive, for this long (env SHAPELOG_REPLICATION_TIMEOUT)")
	fs.StringVar(&c.Metrics, "metrics", env("SHAPELOG_METRICS", "open"), "GET /metrics (Prometheus): open (no key), key (`Authorization: Bearer <access key>`) or off (env SHAPELOG_METRICS)")
	c.MaxSnapshots = envInt("SHAPELOG_MAX_SNAPSHOTS", 16)
	fs.IntVar(&c.MaxSnapshots, "max-snapshots", c.MaxSnapshots, "concurrent held snapshots of tables without a primary key; each holds a connection and a temporary slot (env SHAPELOG_MAX_SNAPSHOTS)")
	c.SnapshotConns = envInt("SHAPELOG_SNAPSHOT_CONNECTIONS", 4)
	fs.IntVar(&c.SnapshotConns, "snapshot-connections", c.SnapshotConns, "connections snapshot pages of tables with a primary key are read through; more readers wait their turn (env SHAPELOG_SNAPSHOT_CONNECTIONS)")
	c.Retention = envDuration("SHAPELOG_RETENTION", 7*24*time.Hour)
	fs.DurationVar(&c.Retention, "retention", c.Retention, "how long changes stay readable with document_deltas (env SHAPELOG_RETENTION)")
	c.StatementTimeout = envDuration("SHAPELOG_STATEMENT_TIMEOUT", 5*time.Minute)
	fs.DurationVar(&c.StatementTimeout, "statement-timeout", c.StatementTimeout, "longest a snapshot query (one page of a snapshot or shape) may run in PostgreSQL (env SHAPELOG_STATEMENT_TIMEOUT)")
	c.SnapshotIdle = envDuration("SHAPELOG_SNAPSHOT_IDLE_TIMEOUT", 10*time.Minute)
	fs.DurationVar(&c.SnapshotIdle, "snapshot-idle-timeout", c.SnapshotIdle, "close snapshots nobody reads for this long (env SHAPELOG_SNAPSHOT_IDLE_TIMEOUT)")
	c.MaxImportBytes = int64(envInt("SHAPELOG_MAX_IMPORT_BYTES", 64<<20))
	fs.Int64Var(&c.MaxImportBytes, "max-import-bytes", c.MaxImportBytes, "largest import request body; bigger ones get 413 (env SHAPELOG_MAX_IMPORT_BYTES)")
	fs.StringVar(&c.FunctionSchemas, "function-schemas", env("SHAPELOG_FUNCTION_SCHEMAS", ""), "comma-separated schemas whose functions /api/query, /api/mutation, /api/action and /api/run may call (env SHAPELOG_FUNCTION_SCHEMAS; default none)")
	fs.StringVar(&c.FunctionTokens, "function-tokens", env("SHAPELOG_FUNCTION_TOKENS", ""), "comma-separated token=role pairs: `Authorization: Bearer <token>` calls run as that role (env SHAPELOG_FUNCTION_TOKENS)")
	fs.StringVar(&c.FunctionPublic, "function-public-role", env("SHAPELOG_FUNCTION_PUBLIC_ROLE", ""), "role for function calls without a token; empty refuses them (env SHAPELOG_FUNCTION_PUBLIC_ROLE)")
	c.FunctionTimeout = envDuration("SHAPELOG_FUNCTION_TIMEOUT", 10*time.Second)
	fs.DurationVar(&c.FunctionTimeout, "function-timeout", c.FunctionTimeout, "statement timeout of each function call (env SHAPELOG_FUNCTION_TIMEOUT)")
	fs.StringVar(&c.ShapeSecret, "secret", env("SHAPELOG_SECRET", ""), "secret clients of /v1/shape send as ?secret= (env SHAPELOG_SECRET; default the access key; none with --insecure)")
	c.LongPoll = envDuration("SHAPELOG_LONG_POLL_TIMEOUT", 20*time.Second)
	fs.DurationVar(&c.LongPoll, "long-poll-timeout", c.LongPoll, "how long a live /v1/shape request waits for changes (env SHAPELOG_LONG_POLL_TIMEOUT)")
	fs.BoolVar(&c.AllowDelete, "allow-shape-deletion", env("SHAPELOG_ALLOW_SHAPE_DELETION", "") == "true", "enable DELETE /v1/shape (env SHAPELOG_ALLOW_SHAPE_DELETION=true)")
	c.ChunkBytes = envInt("SHAPELOG_SHAPE_CHUNK_BYTES", 10<<20)
	fs.IntVar(&c.ChunkBytes, "shape-chunk-bytes", c.ChunkBytes, "size at which shape responses are cut into cacheable chunks (env SHAPELOG_SHAPE_CHUNK_BYTES)")
	c.ShutdownTimeout = 10 * time.Second
}

// functions is the functions API's configuration.
func (c *config) functions() (functions.Config, error) {
	f := functions.Config{Schemas: splitList(c.FunctionSchemas), PublicRole: c.FunctionPublic, Timeout: c.FunctionTimeout, Tokens: map[string]string{}}
	for _, pair := range splitList(c.FunctionTokens) {
		token, role, ok := strings.Cut(pair, "=")
		if !ok || token == "" || role == "" {
			return f, fmt.Errorf("SHAPELOG_FUNCTION_TOKENS: %q is not token=role", pair)
		}
		f.Tokens[token] = role
	}
	return f, nil
}

var envErrs []error

func envInt(name string, def int) int {
	v, ok := os.LookupEnv(name)
	if !ok || v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		envErrs = append(envErrs, fmt.Errorf("%s=%q is not an integer", name, v))
		return def
	}
	return n
}

func envDuration(name string, def time.Duration) time.Duration {
	v, ok := os.LookupEnv(name)
	if !ok || v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		envErrs = append(envErrs, fmt.Errorf("%s=%q is not a duration (e.g. 168h, 30m)", name, v))
		return def
	}
	return d
}

// validate reports every problem at once.
func (c *config) validate() error {
	errs := append([]error{}, envErrs...)
	if c.DatabaseURL == "" {
		errs = append(errs, errors.New("DATABASE_URL (or --database-url) is required"))
	}
	if c.AccessKey == "" && !c.Insecure {
		errs = append(errs, errors.New("SHAPELOG_ACCESS_KEY (or --access-key) is required; pass --insecure to serve without authentication during development"))
	}
	if c.Port < 1 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("port %d is out of range", c.Port))
	}
	if c.ReplTimeout < 3*time.Second {
		errs = append(errs, fmt.Errorf("replication-timeout %s is too short (minimum 3s)", c.ReplTimeout))
	}
	switch httpapi.MetricsAccess(c.Metrics) {
	case httpapi.MetricsOpen, httpapi.MetricsKey, httpapi.MetricsOff:
	default:
		errs = append(errs, fmt.Errorf("metrics %q: use open, key or off", c.Metrics))
	}
	if c.Retention < time.Minute {
		errs = append(errs, fmt.Errorf("retention %s is too short (minimum 1m)", c.Retention))
	}
	if c.MaxImportBytes < 1<<10 {
		errs = append(errs, fmt.Errorf("max-import-bytes must be at least 1024"))
	}
	if c.StatementTimeout < time.Second {
		errs = append(errs, fmt.Errorf("statement-timeout %s is too short (minimum 1s)", c.StatementTimeout))
	}
	if c.SnapshotConns < 1 {
		errs = append(errs, fmt.Errorf("snapshot-connections must be at least 1"))
	}
	if c.MaxSnapshots < 1 {
		errs = append(errs, fmt.Errorf("max-snapshots must be at least 1"))
	}
	if _, err := c.functions(); err != nil {
		errs = append(errs, err)
	}
	if c.FunctionTimeout <= 0 {
		errs = append(errs, fmt.Errorf("function-timeout must be positive"))
	}
	for _, schema := range splitList(c.Schemas) {
		if why := catalog.ReservedSchema(schema); why != "" {
			errs = append(errs, fmt.Errorf("schemas: %q is reserved (%s) and cannot be published", schema, why))
		}
	}
	if c.LogFormat != "json" && c.LogFormat != "console" {
		errs = append(errs, fmt.Errorf("log format %q: use json or console", c.LogFormat))
	}
	return errors.Join(errs...)
}

func (c *config) filter() catalog.Filter {
	return catalog.Filter{Schemas: splitList(c.Schemas), Tables: splitList(c.Tables)}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
