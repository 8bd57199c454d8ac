// Command shapelog is the engine: `shapelog serve` runs it against a
// PostgreSQL database; `shapelog dev` starts a throwaway PostgreSQL and runs
// it there.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/shapelog/shapelog/engine"
	"github.com/shapelog/shapelog/engine/httpapi"
	"github.com/shapelog/shapelog/internal/pgtest"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `shapelog — PostgreSQL sync engine (Electric shape API, Convex streaming API)

Usage:
  shapelog serve [flags]   run the engine against DATABASE_URL
  shapelog dev [flags]     start a throwaway PostgreSQL and run the engine on it
  shapelog version

Run 'shapelog serve -h' for the flags; each has an environment variable.
`

// tuneGC trades a little memory for much less GC work on the hot paths
// (snapshot pages, replication), within a soft memory limit; GOGC and
// GOMEMLIMIT override it.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(192 << 20)
	}
}

func main() {
	tuneGC()
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	stopProfile := startCPUProfile()
	var err error
	switch os.Args[1] {
	case "serve":
		err = serveCommand(ctx, os.Args[2:])
	case "dev":
		err = devCommand(ctx, os.Args[2:])
	case "version", "--version":
		fmt.Println(version)
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	stopProfile()
	if err != nil {
		fmt.Fprintln(os.Stderr, "shapelog:", err)
		os.Exit(1)
	}
}

func parseFlags(name string, args []string) (*config, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	c := &config{}
	bindFlags(fs, c)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return c, nil
}

func serveCommand(ctx context.Context, args []string) error {
	c, err := parseFlags("serve", args)
	if err != nil {
		return err
	}
	if err := c.validate(); err != nil {
		return err
	}
	return serve(ctx, c, nil)
}

func newLogger(c *config) (zerolog.Logger, error) {
	level, err := zerolog.ParseLevel(c.LogLevel)
	if err != nil {
		return zerolog.Logger{}, fmt.Errorf("log level %q: use debug, info, warn or error", c.LogLevel)
	}
	var w = zerolog.New(os.Stderr)
	if c.LogFormat == "console" {
		w = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.TimeOnly})
	}
	return w.Level(level).With().Timestamp().Logger(), nil
}

// serve runs the engine until ctx ends. ready, when given, is called with
// the listening address once the server accepts requests.
func serve(ctx context.Context, c *config, ready func(addr string)) error {
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	fns, err := c.functions()
	if err != nil {
		return err
	}
	e, err := engine.Start(ctx, engine.Config{
		Functions: fns, DatabaseURL: c.DatabaseURL, DatabaseID: c.DatabaseID, AccessKey: c.AccessKey, Insecure: c.Insecure,
		Listen: net.JoinHostPort(c.Host, strconv.Itoa(c.Port)), StorageDir: c.StorageDir, Filter: c.filter(),
		Publication: c.Publication, Slot: c.Slot, Retention: c.Retention, SnapshotIdle: c.SnapshotIdle,
		MaxSnapshots: c.MaxSnapshots, SnapshotConns: c.SnapshotConns, StatementTimeout: c.StatementTimeout, Version: version, MaxImportBytes: c.MaxImportBytes,
		Shape:           httpapi.ShapeConfig{Secret: c.ShapeSecret, LongPoll: c.LongPoll, AllowDelete: c.AllowDelete},
		ShapeChunkBytes: c.ChunkBytes, ReplicationTimeout: c.ReplTimeout, MetricsAccess: httpapi.MetricsAccess(c.Metrics),
	}, log)
	if err != nil {
		return err
	}
	if ready != nil {
		ready(e.Addr())
	}
	<-ctx.Done()
	e.Close(c.ShutdownTimeout)
	return nil
}

// devCommand runs the engine on a throwaway PostgreSQL that is removed when
// it stops.
func devCommand(ctx context.Context, args []string) error {
	c, err := parseFlags("dev", args)
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "starting a throwaway PostgreSQL…")
	cluster, err := pgtest.Start(pgtest.Options{})
	if err != nil {
		return err
	}
	defer cluster.Stop()
	c.DatabaseURL = cluster.URL("postgres")
	if c.AccessKey == "" && !c.Insecure {
		var b [16]byte
		_, _ = rand.Read(b[:])
		c.AccessKey = hex.EncodeToString(b[:])
	}
	if os.Getenv("SHAPELOG_STORAGE_DIR") == "" && !flagSet(args, "storage-dir") {
		dir, err := os.MkdirTemp("", "shapelog-dev-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		c.StorageDir = dir
	}
	if c.LogFormat == "json" && !flagSet(args, "log-format") && os.Getenv("SHAPELOG_LOG_FORMAT") == "" {
		c.LogFormat = "console"
	}
	if err := c.validate(); err != nil {
		return err
	}
	return serve(ctx, c, func(addr string) {
		_, port, _ := net.SplitHostPort(addr)
		fmt.Fprintf(os.Stderr, "\nshapelog dev is running (Ctrl-C stops it and deletes everything)\n"+
			"  engine:       http://localhost:%s\n  access key:   %s\n  DATABASE_URL: %s\n"+
			"  try:          curl -H 'Authorization: Convex %s' 'http://localhost:%s/api/json_schemas?deltaSchema=true'\n\n",
			port, c.AccessKey, c.DatabaseURL, c.AccessKey, port)
	})
}

func flagSet(args []string, name string) bool {
	for _, a := range args {
		if a == "-"+name || a == "--"+name || len(a) > len(name)+2 && (a[:len(name)+2] == "-"+name+"=" || a[:len(name)+3] == "--"+name+"=") {
			return true
		}
	}
	return false
}
