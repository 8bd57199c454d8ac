package catalog

// Schema returns the draft-07 JSON Schema of the values AppendValue writes
// for type t in format f, following Convex's json_schemas conventions
// ($description is Convex's non-standard annotation). It does not allow
// null: callers add null for nullable columns. Every call returns new maps,
// which the caller may modify.
//
// The format annotations describe the usual values: "infinity",
// "-infinity", BC values (" BC" suffix) and years past 9999 of date and
// timestamptz columns do not satisfy "format":"date" / "date-time".
//
// Array items allow null (NULL elements) and nested arrays, because a
// PostgreSQL array column may hold arrays of any number of dimensions.
func Schema(t *Type, f Format) map[string]any {
	if t == nil {
		return map[string]any{}
	}
	switch t.Kind {
	case KindInt2, KindInt4, KindOID:
		return map[string]any{"type": "integer"}
	case KindInt8:
		if f == FormatConvexJSON {
			return map[string]any{
				"type":         "object",
				"$description": "int64",
				"properties": map[string]any{
					"$integer": map[string]any{"type": "string", "$description": "int64 -> little-endian -> base64"},
				},
			}
		}
		return map[string]any{"type": "string", "$description": "int64 represented as base10 string"}
	case KindFloat4, KindFloat8:
		if f == FormatConvexJSON {
			return map[string]any{
				"$description": "float64",
				"anyOf": []any{
					map[string]any{"type": "number"},
					map[string]any{
						"type":         "object",
						"$description": "-0, -inf, inf, or NaN",
						"properties": map[string]any{
							"$float": map[string]any{"type": "string", "$description": "float64 -> little-endian -> base64"},
						},
					},
				},
			}
		}
		return map[string]any{
			"$description": "float64",
			"anyOf": []any{
				map[string]any{"type": "number"},
				map[string]any{"type": "string", "$description": "-inf, inf, or NaN"},
			},
		}
	case KindNumeric:
		return map[string]any{"type": "string", "$description": "numeric represented as base10 string"}
	case KindBool:
		return map[string]any{"type": "boolean"}
	case KindUUID:
		return map[string]any{"type": "string", "format": "uuid"}
	case KindDate:
		return map[string]any{"type": "string", "format": "date"}
	case KindTime:
		return map[string]any{"type": "string", "$description": "ISO-8601 time without time zone"}
	case KindTimeTZ:
		return map[string]any{"type": "string", "$description": "ISO-8601 time with UTC offset"}
	case KindTimestamp:
		return map[string]any{"type": "string", "$description": "ISO-8601 timestamp without time zone"}
	case KindTimestampTZ:
		return map[string]any{"type": "string", "format": "date-time", "$description": "ISO-8601 timestamp in UTC"}
	case KindInterval:
		return map[string]any{"type": "string", "$description": "ISO-8601 duration"}
	case KindBytea:
		if f == FormatConvexJSON {
			return map[string]any{
				"type":         "object",
				"$description": "base64 bytes",
				"properties":   map[string]any{"$bytes": map[string]any{"type": "string"}},
			}
		}
		return map[string]any{"type": "string", "$description": "base64 bytes"}
	case KindJSON:
		return map[string]any{"$description": "json: any JSON value"}
	case KindJSONB:
		return map[string]any{"$description": "jsonb: any JSON value"}
	case KindEnum:
		vals := make([]any, len(t.EnumValues))
		for i, v := range t.EnumValues {
			vals[i] = v
		}
		return map[string]any{"type": "string", "enum": vals}
	case KindArray:
		return map[string]any{
			"type": "array",
			"items": map[string]any{"anyOf": []any{
				nullable(Schema(t.Elem, f)),
				map[string]any{"type": "array", "$description": "inner dimension of a multidimensional array, nested to its depth; its elements are as above"},
			}},
		}
	default:
		return map[string]any{"type": "string"}
	}
}

// nullable returns s extended to allow null.
func nullable(s map[string]any) map[string]any {
	if len(s) == 0 || (len(s) == 1 && s["$description"] != nil) {
		return s // any value, null included
	}
	if typ, ok := s["type"].(string); ok && s["anyOf"] == nil {
		s["type"] = []any{typ, "null"}
		if e, ok := s["enum"].([]any); ok {
			s["enum"] = append(e, nil)
		}
		return s
	}
	if a, ok := s["anyOf"].([]any); ok {
		s["anyOf"] = append(a, map[string]any{"type": "null"})
		return s
	}
	return map[string]any{"anyOf": []any{s, map[string]any{"type": "null"}}}
}
