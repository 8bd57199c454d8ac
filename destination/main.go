// Command destination-shapelog is the Airbyte destination for a shapelog
// engine: it writes records into typed PostgreSQL tables through the
// engine's import API, in append, overwrite or append_dedup mode.
//
//	destination-shapelog spec
//	destination-shapelog check --config config.json
//	destination-shapelog write --config config.json --catalog catalog.json < messages
package main

import (
	"context"

	"github.com/shapelog/shapelog/protocol"
)

func main() {
	protocol.Main(protocol.Connector{
		Spec: spec,
		Commands: map[string]func(context.Context, *protocol.Env) error{
			"check": check,
			"write": write,
		},
	})
}
