package datachannel

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
)

// DefaultNamespaceMappingPath is where the platform writes the namespace
// mapping when no variable names the file.
const DefaultNamespaceMappingPath = "/dest/namespace-mapping.json"

// envNamespaceMapping is the variable Airbyte's load CDK reads;
// EnvNamespaceMapper is the name of its constant, read too.
const envNamespaceMapping = "NAMESPACE_MAPPING_CONFIG_PATH"

// NamespaceMapping is the connection's namespace and stream-prefix
// settings, which a destination applies itself in speed mode.
type NamespaceMapping struct {
	DefinitionType string `json:"namespaceDefinitionType"` // source, destination or customformat
	Format         string `json:"namespaceFormat"`
	StreamPrefix   string `json:"streamPrefix"`
}

// LoadNamespaceMapping reads the mapping from path, else from the file the
// environment or the platform's default names; nil when there is none.
func LoadNamespaceMapping(path string) (*NamespaceMapping, error) {
	explicit := true
	if path == "" {
		path = strings.TrimSpace(os.Getenv(envNamespaceMapping))
	}
	if path == "" {
		path, explicit = DefaultNamespaceMappingPath, false
	}
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !explicit {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var m NamespaceMapping
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	switch strings.ToLower(m.DefinitionType) {
	case "source", "destination", "customformat", "":
	default:
		return nil, fmt.Errorf("%s: namespaceDefinitionType %q: expected source, destination or customformat", path, m.DefinitionType)
	}
	return &m, nil
}

// Map maps a stream: its namespace (nil: the destination's default) and
// its name with the prefix.
func (m *NamespaceMapping) Map(namespace *string, name string) (*string, string) {
	name = m.StreamPrefix + name
	switch strings.ToLower(m.DefinitionType) {
	case "destination":
		return nil, name
	case "customformat":
		src := ""
		if namespace != nil {
			src = *namespace
		}
		ns := strings.ReplaceAll(m.Format, "${SOURCE_NAMESPACE}", src)
		if strings.TrimSpace(ns) == "" {
			return nil, name
		}
		return &ns, name
	}
	return namespace, name
}
