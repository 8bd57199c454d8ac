// Package datachannel is Airbyte's "speed mode" data channel as the
// connectors see it: the environment the platform sets, the Unix domain
// sockets a source listens on and a destination connects to, and the
// messages on them (length-delimited recordpb.Message, or JSON lines).
// Logs, traces and states still go to stdout as JSON.
package datachannel

import (
	"fmt"
	"os"
	"strings"
)

// The environment the platform sets (see docs/airbyte.md).
const (
	EnvMedium          = "DATA_CHANNEL_MEDIUM"
	EnvFormat          = "DATA_CHANNEL_FORMAT"
	EnvSocketPaths     = "DATA_CHANNEL_SOCKET_PATHS"
	EnvNamespaceMapper = "NAMESPACE_MAPPER_CONFIG_PATH" // also NAMESPACE_MAPPING_CONFIG_PATH
)

// Media and formats.
const (
	Stdio    = "STDIO"
	Socket   = "SOCKET"
	JSONL    = "JSONL"
	Protobuf = "PROTOBUF"
)

// Config is how records travel in this run.
type Config struct {
	Medium      string   // Stdio (the default) or Socket
	Format      string   // JSONL (the default) or Protobuf
	SocketPaths []string // Socket: the paths, in order
	// NamespaceMapperPath is the destination's namespace mapping file
	// (Socket only: the platform does not rewrite records there).
	NamespaceMapperPath string
}

// Sockets reports whether records travel on sockets.
func (c Config) Sockets() bool { return c.Medium == Socket }

// FromEnv reads the data channel from the environment; unset means stdio
// with JSON lines, as before speed mode. An unknown value is an error
// naming the variable.
func FromEnv() (Config, error) { return parse(os.Getenv) }

func parse(getenv func(string) string) (Config, error) {
	c := Config{Medium: Stdio, Format: JSONL, NamespaceMapperPath: strings.TrimSpace(getenv(EnvNamespaceMapper))}
	if v := strings.ToUpper(strings.TrimSpace(getenv(EnvMedium))); v != "" {
		if v != Stdio && v != Socket {
			return c, fmt.Errorf("%s=%q: expected %s or %s", EnvMedium, v, Stdio, Socket)
		}
		c.Medium = v
	}
	if v := strings.ToUpper(strings.TrimSpace(getenv(EnvFormat))); v != "" {
		if v != JSONL && v != Protobuf {
			return c, fmt.Errorf("%s=%q: expected %s or %s", EnvFormat, v, JSONL, Protobuf)
		}
		c.Format = v
	}
	for _, p := range strings.Split(getenv(EnvSocketPaths), ",") {
		if p = strings.TrimSpace(p); p != "" {
			c.SocketPaths = append(c.SocketPaths, p)
		}
	}
	if c.Medium == Socket && len(c.SocketPaths) == 0 {
		return c, fmt.Errorf("%s=%s needs %s, a comma-separated list of socket paths", EnvMedium, Socket, EnvSocketPaths)
	}
	if c.Medium == Stdio && c.Format == Protobuf {
		return c, fmt.Errorf("%s=%s needs %s=%s: protobuf travels on sockets only", EnvFormat, Protobuf, EnvMedium, Socket)
	}
	return c, nil
}
