// Command source-shapelog is the Airbyte source for a shapelog engine: it
// discovers the engine's tables, copies them from consistent snapshots and
// then copies only what changed, deletes included.
//
//	source-shapelog spec
//	source-shapelog check    --config config.json
//	source-shapelog discover --config config.json
//	source-shapelog read     --config config.json --catalog catalog.json [--state state.json]
package main

import (
	"context"

	"github.com/shapelog/shapelog/internal/connector"
	"github.com/shapelog/shapelog/protocol"
)

func main() {
	protocol.Main(protocol.Connector{
		Spec: spec,
		Commands: map[string]func(context.Context, *protocol.Env) error{
			"check":    check,
			"discover": discover,
			"read":     readCommand,
		},
	})
}

// readCommand classifies whatever read returns that is not yet an Airbyte
// failure (an engine call that failed outside a stream).
func readCommand(ctx context.Context, env *protocol.Env) error {
	err := read(ctx, env)
	if _, ok := err.(*protocol.Error); err != nil && !ok {
		return connector.EngineError(err, "reading")
	}
	return err
}
