package connector

import (
	"fmt"

	"gopkg.in/yaml.v3"
)

// Version is a connector's version as its metadata.yaml (Airbyte's
// registry entry, embedded in the binary) gives it: data.dockerImageTag,
// the image tag. That file is the one place the version is written; the
// Dockerfiles' io.airbyte.version labels, which Airbyte needs literal, and
// the docs' changelogs are tested equal to it (internal/packaging). A
// metadata.yaml without it is a build mistake, so Version panics.
func Version(metadataYAML []byte) string {
	var m struct {
		Data struct {
			DockerImageTag string `yaml:"dockerImageTag"`
		} `yaml:"data"`
	}
	if err := yaml.Unmarshal(metadataYAML, &m); err != nil || m.Data.DockerImageTag == "" {
		panic(fmt.Sprintf("connector: metadata.yaml has no data.dockerImageTag (%v)", err))
	}
	return m.Data.DockerImageTag
}
