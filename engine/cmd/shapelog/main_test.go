package main

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shapelog/shapelog/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestHost: --host (SHAPELOG_HOST) binds the HTTP server to one address;
// by default it listens on every interface.
func TestHost(t *testing.T) {
	t.Setenv("SHAPELOG_HOST", "127.0.0.1")
	if c, err := parseFlags("serve", nil); err != nil || c.Host != "127.0.0.1" {
		t.Fatalf("SHAPELOG_HOST: %q, %v", c.Host, err)
	}
	if c, err := parseFlags("serve", []string{"--host", "::1"}); err != nil || c.Host != "::1" {
		t.Fatalf("--host overrides SHAPELOG_HOST: %q, %v", c.Host, err)
	}
	t.Setenv("SHAPELOG_HOST", "")
	if c, _ := parseFlags("serve", nil); c.Host != "" {
		t.Fatalf("default host %q, want all interfaces", c.Host)
	}

	dbURL := pgtest.NewDatabase(t)
	for _, tc := range []struct {
		host        string
		wantAddr    string // the listener's address
		otherServed bool   // whether 127.0.0.2, another local address, is served
	}{
		{host: "127.0.0.1", wantAddr: "127.0.0.1", otherServed: false},
		{host: "", wantAddr: "::", otherServed: true},
	} {
		t.Run("host="+tc.host, func(t *testing.T) {
			port, err := pgtest.FreePort()
			if err != nil {
				t.Fatal(err)
			}
			c, err := parseFlags("serve", []string{"--database-url", dbURL, "--insecure", "--host", tc.host, "--port", strconv.Itoa(port),
				"--storage-dir", t.TempDir(), "--slot", "host_test", "--publication", "host_test", "--log-level", "warn"})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.validate(); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			addrs, done := make(chan string, 1), make(chan error, 1)
			go func() { done <- serve(ctx, c, func(addr string) { addrs <- addr }) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Error(err)
				}
			}()
			var addr string
			select {
			case addr = <-addrs:
			case err := <-done:
				t.Fatalf("serve: %v", err)
			case <-time.After(30 * time.Second):
				t.Fatal("engine did not start")
			}
			if host, p, _ := net.SplitHostPort(addr); host != tc.wantAddr || p != strconv.Itoa(port) {
				t.Fatalf("listening on %s, want %s port %d", addr, tc.wantAddr, port)
			}
			resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/version")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.2", strconv.Itoa(port)), 2*time.Second)
			if err == nil {
				conn.Close()
			}
			if served := err == nil; served != tc.otherServed {
				t.Fatalf("127.0.0.2 served: %v (%v), want %v", served, err, tc.otherServed)
			}
		})
	}
}

// TestConfigRefusals: settings that cannot work are refused at start, each
// naming the setting.
func TestConfigRefusals(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--schemas", "public,shapelog"}, `schemas: "shapelog" is reserved`},
		{[]string{"--schemas", "pg_catalog"}, `schemas: "pg_catalog" is reserved`},
		{[]string{"--statement-timeout", "10ms"}, "statement-timeout 10ms is too short"},
	} {
		c, err := parseFlags("serve", append([]string{"--database-url", "postgres://x/y", "--insecure"}, tc.args...))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}
