// Package recordpb is the protobuf encoding of Airbyte records that Airbyte's
// "speed mode" data channels carry, and the engine's binary export and
// import frames built on it (airbyte.proto, frames.proto; `make proto`
// regenerates the .pb.go files). The hot paths append and scan the wire
// format directly with protowire; the generated types serve tests and
// messages that are not per row.
package recordpb
