// Package pgtest starts throwaway PostgreSQL clusters for tests, benchmarks,
// the demo and `shapelog dev`. A cluster is initdb'd into a temporary
// directory, listens on 127.0.0.1 on a free port with wal_level=logical, and
// runs as an unprivileged user when the caller is root (PostgreSQL refuses to
// run as root).
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Options tune a throwaway cluster. The zero value is a good test cluster.
type Options struct {
	// Durable keeps fsync on (benchmarks); tests turn it off for speed.
	Durable bool
	// Settings are extra postgresql.conf lines, e.g. "shared_buffers=256MB".
	Settings []string
	// Log receives the server's stderr; nil discards it.
	Log *os.File
}

// Cluster is a running throwaway PostgreSQL server.
type Cluster struct {
	BinDir  string
	DataDir string
	Port    int
	opts    Options
	dir     string
	cred    *syscall.Credential
	cmd     *exec.Cmd
	exited  chan struct{}
}

// BinDir finds the PostgreSQL server binaries: $PG_BIN, then the newest
// /usr/lib/postgresql/*/bin, then `pg_config --bindir`.
func BinDir() (string, error) {
	if d := os.Getenv("PG_BIN"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		d := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("PostgreSQL server binaries not found: install postgresql (apt-get install postgresql) or set PG_BIN to the directory holding initdb and postgres")
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// Start initialises and starts a new cluster.
func Start(opts Options) (*Cluster, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "shapelog-pg-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{BinDir: bin, DataDir: filepath.Join(dir, "data"), opts: opts, dir: dir}
	if os.Geteuid() == 0 {
		if c.cred, err = unprivileged(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		if err := os.Chown(dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		// The socket and data directories live under dir; let the server reach it.
		_ = os.Chmod(dir, 0o755)
	}
	initdb := c.command(filepath.Join(bin, "initdb"), "-D", c.DataDir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	if c.Port, err = FreePort(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := c.writeConfig(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := c.startServer(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return c, nil
}

func (c *Cluster) writeConfig() error {
	fsync := "off"
	if c.opts.Durable {
		fsync = "on"
	}
	lines := []string{
		"listen_addresses = '127.0.0.1'",
		fmt.Sprintf("port = %d", c.Port),
		fmt.Sprintf("unix_socket_directories = '%s'", c.dir),
		"wal_level = logical",
		"max_replication_slots = 64",
		"max_wal_senders = 64",
		"max_connections = 300",
		"fsync = " + fsync,
		"synchronous_commit = on",
		"full_page_writes = " + fsync,
		"shared_buffers = 128MB",
		"max_wal_size = 4GB",
		"logical_decoding_work_mem = 64MB",
	}
	lines = append(lines, c.opts.Settings...)
	f, err := os.OpenFile(filepath.Join(c.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString("\n# shapelog throwaway cluster\n" + strings.Join(lines, "\n") + "\n")
	return err
}

func (c *Cluster) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	return cmd
}

func (c *Cluster) startServer() error {
	cmd := c.command(filepath.Join(c.BinDir, "postgres"), "-D", c.DataDir)
	if c.opts.Log != nil {
		cmd.Stdout, cmd.Stderr = c.opts.Log, c.opts.Log
	}
	// Own process group, so a Ctrl-C in the terminal reaches only us and we
	// stop the server in order.
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting postgres: %w", err)
	}
	c.cmd = cmd
	c.exited = make(chan struct{})
	go func() { _ = cmd.Wait(); close(c.exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-c.exited:
			return fmt.Errorf("postgres exited during startup (see the server log)")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, c.URL("postgres"))
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = c.stopServer()
	return errors.New("postgres did not accept connections within 60s")
}

// PID is the running server's postmaster process id (0 when stopped).
func (c *Cluster) PID() int {
	if c.cmd == nil || c.cmd.Process == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// stopServer asks for a fast shutdown and waits for it.
func (c *Cluster) stopServer() error { return c.stopWith(syscall.SIGINT) }

// stopWith stops the server with a shutdown signal: SIGINT for a fast
// shutdown, SIGQUIT for an immediate one (as a crash would).
func (c *Cluster) stopWith(sig os.Signal) error {
	if c.cmd == nil {
		return nil
	}
	_ = c.cmd.Process.Signal(sig)
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
	c.cmd = nil
	return nil
}

// Restart stops the server with a fast shutdown (clients are disconnected,
// as in a real restart) and starts it again on the same port and data.
func (c *Cluster) Restart() error {
	if err := c.stopServer(); err != nil {
		return err
	}
	return c.startServer()
}

// RestartImmediate stops the server the way a crash would (immediate
// shutdown: no checkpoint, crash recovery on start) and starts it again.
func (c *Cluster) RestartImmediate() error {
	if err := c.stopWith(syscall.SIGQUIT); err != nil {
		return err
	}
	return c.startServer()
}

// StopServer stops the server but keeps its data, for outage tests.
func (c *Cluster) StopServer() error { return c.stopServer() }

// StartServer starts a server stopped with StopServer.
func (c *Cluster) StartServer() error { return c.startServer() }

// Stop shuts the server down and removes all its files.
func (c *Cluster) Stop() error {
	err := c.stopServer()
	if rmErr := os.RemoveAll(c.dir); err == nil {
		err = rmErr
	}
	return err
}

// URL is a connection URL for database db as the superuser "postgres".
func (c *Cluster) URL(db string) string {
	u := url.URL{Scheme: "postgres", User: url.User("postgres"), Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port)), Path: "/" + db, RawQuery: "sslmode=disable"}
	return u.String()
}

// FreePort returns a TCP port on the loopback interface that was free a
// moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func unprivileged() (*syscall.Credential, error) {
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, errors.New("running as root and no unprivileged user (postgres or nobody) exists to run PostgreSQL")
}
