package protocol

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v5"
	"gopkg.in/yaml.v3"
)

// airbyteProtocolYAML is Airbyte's protocol schema (MIT, see
// airbyte_protocol.LICENSE), version 0.18.0 of airbytehq/airbyte-protocol.
//
//go:embed airbyte_protocol.yaml
var airbyteProtocolYAML []byte

// Validator checks messages against the Airbyte protocol schema.
type Validator struct{ message *jsonschema.Schema }

// NewValidator compiles the embedded protocol schema.
func NewValidator() (*Validator, error) {
	var doc any
	if err := yaml.Unmarshal(airbyteProtocolYAML, &doc); err != nil {
		return nil, err
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.Draft = jsonschema.Draft7
	const url = "airbyte_protocol.json"
	if err := c.AddResource(url, strings.NewReader(string(js))); err != nil {
		return nil, err
	}
	s, err := c.Compile(url + "#/definitions/AirbyteMessage")
	if err != nil {
		return nil, err
	}
	return &Validator{message: s}, nil
}

// Validate checks one output line.
func (v *Validator) Validate(line []byte) error {
	dec := json.NewDecoder(strings.NewReader(string(line)))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	if dec.More() {
		return fmt.Errorf("more than one JSON value on the line")
	}
	return v.message.Validate(doc)
}
