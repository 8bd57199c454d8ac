package catalog

import "errors"

// Format is a Convex value format: how typed values are written as JSON.
type Format int

const (
	// FormatJSON is Convex's clean JSON ("json", legacy alias
	// "convex_clean_json"), the default: int64 as a decimal string, bytes as a
	// plain base64 string, non-finite floats as strings.
	FormatJSON Format = iota
	// FormatConvexJSON is Convex's encoded JSON ("convex_json" and
	// "convex_encoded_json"): int64, bytes and special floats are tagged
	// objects ({"$integer":…}, {"$bytes":…}, {"$float":…}).
	FormatConvexJSON
)

// ParseFormat parses the API's format parameter. The empty string selects
// FormatJSON.
func ParseFormat(s string) (Format, error) {
	switch s {
	case "", "json", "convex_clean_json":
		return FormatJSON, nil
	case "convex_json", "convex_encoded_json":
		return FormatConvexJSON, nil
	}
	return FormatJSON, errors.New("format param must be one of [`json`, `convex_json`]. Got " + s)
}

// String returns the format's canonical parameter value.
func (f Format) String() string {
	if f == FormatConvexJSON {
		return "convex_json"
	}
	return "json"
}
