package datachannel

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	c, err := parse(env())
	if err != nil || c.Sockets() || c.Format != JSONL {
		t.Fatalf("default: %+v %v", c, err)
	}
	c, err = parse(env(EnvMedium, "socket", EnvFormat, "protobuf", EnvSocketPaths, "/a.sock, /b.sock,"))
	if err != nil || !c.Sockets() || c.Format != Protobuf || strings.Join(c.SocketPaths, "|") != "/a.sock|/b.sock" {
		t.Fatalf("socket: %+v %v", c, err)
	}
	for i, bad := range []func(string) string{
		env(EnvMedium, "PIPE"),
		env(EnvFormat, "AVRO"),
		env(EnvMedium, "SOCKET"),
		env(EnvFormat, "PROTOBUF"),
	} {
		if _, err := parse(bad); err == nil {
			t.Errorf("bad environment %d accepted", i)
		}
	}
}

// The destination may dial before the source listens; both ends meet.
func TestListenDial(t *testing.T) {
	dir := t.TempDir()
	paths := []string{filepath.Join(dir, "s1.sock"), filepath.Join(dir, "s2.sock")}
	ctx := context.Background()
	dialed := make(chan error, 1)
	go func() {
		conns, err := Dial(ctx, paths, 5*time.Second)
		if err == nil {
			for i, c := range conns {
				_, err = c.Write([]byte{byte('a' + i)})
				c.Close()
			}
		}
		dialed <- err
	}()
	time.Sleep(50 * time.Millisecond)
	l, err := Listen(paths)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := 0; i < l.Len(); i++ {
		c, err := l.Conn(ctx, i)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1)
		if _, err := c.Read(b); err != nil || b[0] != byte('a'+i) {
			t.Fatalf("socket %d: %q %v", i, b, err)
		}
		c.Close()
	}
	if err := <-dialed; err != nil {
		t.Fatal(err)
	}
	if _, err := Dial(ctx, []string{filepath.Join(dir, "none.sock")}, 100*time.Millisecond); err == nil {
		t.Fatal("dialed a socket nobody listens on")
	}
}

func TestNamespaceMapping(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "m.json")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	src := "sales"
	cases := []struct {
		body     string
		ns       *string
		wantNS   string // "" = nil
		wantName string
	}{
		{`{"namespaceDefinitionType":"source","streamPrefix":"p_"}`, &src, "sales", "p_orders"},
		{`{"namespaceDefinitionType":"destination"}`, &src, "", "orders"},
		{`{"namespaceDefinitionType":"customformat","namespaceFormat":"raw_${SOURCE_NAMESPACE}"}`, &src, "raw_sales", "orders"},
		{`{"namespaceDefinitionType":"customformat","namespaceFormat":"${SOURCE_NAMESPACE}"}`, nil, "", "orders"},
	}
	for _, c := range cases {
		m, err := LoadNamespaceMapping(write(c.body))
		if err != nil {
			t.Fatal(err)
		}
		ns, name := m.Map(c.ns, "orders")
		got := ""
		if ns != nil {
			got = *ns
		}
		if got != c.wantNS || name != c.wantName {
			t.Errorf("%s: %q %q", c.body, got, name)
		}
	}
	if _, err := LoadNamespaceMapping(write(`{"namespaceDefinitionType":"other"}`)); err == nil {
		t.Error("an unknown definition type was accepted")
	}
	if _, err := LoadNamespaceMapping(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("a named file that is missing was accepted")
	}
}
