package importer

import (
	"fmt"
	"strings"
)

// Field names become column names as they are, with two exceptions.
//
// PostgreSQL's system column names (ctid, xmin, …) cannot name a user
// column, so a field named like one is stored in the column of that name
// with an underscore appended: ctid → ctid_. This is the export API's rule
// for columns named like its own system fields (_id → _id_), run the other
// way, and like Convex's importer (which renames `_`-prefixed system names
// rather than refusing them) it keeps a record importable. A field and a
// renamed one landing in the same column (ctid and ctid_ in one table) is a
// 400. Since no PostgreSQL table has a ctid column, a PostgreSQL →
// PostgreSQL sync never meets the renaming.
//
// Everything else that cannot be a column is a 400 InvalidFieldName naming
// the table and field: empty names, names with a NUL, names over
// PostgreSQL's 63-byte identifier limit (PostgreSQL would truncate them and
// two could collide), and names starting with `_shapelog_`, which the
// engine reserves for its staging columns.

// systemColumns are PostgreSQL's system column names.
var systemColumns = map[string]bool{"tableoid": true, "xmin": true, "cmin": true, "xmax": true, "cmax": true, "ctid": true}

// reservedPrefix starts the engine's own columns in staging tables.
const reservedPrefix = "_shapelog_"

// maxIdentifier is PostgreSQL's identifier limit in bytes (NAMEDATALEN-1).
const maxIdentifier = 63

// columnFor is the column a field is stored in.
func columnFor(field string) string {
	if systemColumns[field] {
		return field + "_"
	}
	return field
}

// fieldProblem says why a field cannot have a column, or "".
func fieldProblem(field string) string {
	switch {
	case field == "":
		return "an empty name cannot be a column name"
	case strings.IndexByte(field, 0) >= 0:
		return "a name with a NUL character cannot be a column name"
	case len(columnFor(field)) > maxIdentifier:
		return fmt.Sprintf("the name is %d bytes long; PostgreSQL column names are at most %d bytes", len(field), maxIdentifier)
	case strings.HasPrefix(field, reservedPrefix):
		return "names starting with " + reservedPrefix + " are reserved for the engine's staging columns"
	}
	return ""
}
