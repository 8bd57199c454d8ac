// Package packaging holds tests of how the connectors are packaged for
// Airbyte: each metadata.yaml validates against Airbyte's registry schema
// (testdata/ConnectorMetadataDefinitionV0.json, vendored; see
// testdata/README.md), and each connector's version is written once, as its
// metadata.yaml's dockerImageTag, every other copy (the Dockerfile's
// io.airbyte.version label, the docs' changelog and image tags) being equal
// to it. It has no code of its own; see packaging_test.go.
package packaging
