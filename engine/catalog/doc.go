// Package catalog knows PostgreSQL tables, columns, types and keys, and turns
// PostgreSQL text-format values into the JSON values and JSON Schemas the
// engine's HTTP APIs emit.
//
// Every value the engine handles arrives in PostgreSQL's text output format,
// produced under the session settings in SessionSettings (the replication
// stream's pgoutput tuples and snapshot queries alike), so one set of
// converters serves both.
package catalog

// SessionSettings are the GUCs every engine connection sets, so that text
// output is stable and matches Electric's wire format.
var SessionSettings = map[string]string{
	"bytea_output":       "hex",
	"DateStyle":          "ISO, DMY",
	"TimeZone":           "UTC",
	"extra_float_digits": "1",
	"IntervalStyle":      "iso_8601",
	"client_encoding":    "UTF8",
}
