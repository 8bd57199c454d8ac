package catalog

import (
	"errors"
	"strings"
)

// APIName is a table's name on the Convex API: the bare table name for
// schema public when it contains neither '.' nor '"'; otherwise
// schema.table, where a part containing '.' or '"' is written in double
// quotes with '"' doubled. Case is preserved.
func APIName(schema, table string) string {
	if schema == "public" && !needsQuotes(table) {
		return table
	}
	return quoteAPIPart(schema) + "." + quoteAPIPart(table)
}

func needsQuotes(s string) bool { return strings.ContainsAny(s, `."`) }

func quoteAPIPart(s string) string {
	if !needsQuotes(s) {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// ParseAPIName inverts APIName, and also accepts any part quoted:
// "t" → (public, t); "s.t" → (s, t); `"a.b"` → (public, a.b);
// `s."a.b"` → (s, a.b); `"s"."t"` → (s, t). Empty names, empty parts,
// unbalanced quotes and more than two parts are errors.
func ParseAPIName(name string) (schema, table string, err error) {
	if name == "" {
		return "", "", errors.New("empty table name")
	}
	var parts [2]string
	n := 0
	for i := 0; ; {
		if n == len(parts) {
			return "", "", errors.New("table name " + quoteForMsg(name) + " has more than two dot-separated parts (quote a part that contains a dot)")
		}
		var part string
		if name[i] == '"' {
			var b strings.Builder
			i++
			closed := false
			for i < len(name) {
				if name[i] == '"' {
					if i+1 < len(name) && name[i+1] == '"' {
						b.WriteByte('"')
						i += 2
						continue
					}
					i++
					closed = true
					break
				}
				b.WriteByte(name[i])
				i++
			}
			if !closed {
				return "", "", errors.New("table name " + quoteForMsg(name) + " has an unbalanced double quote")
			}
			if i < len(name) && name[i] != '.' {
				return "", "", errors.New("table name " + quoteForMsg(name) + ` has characters after a closing double quote (write a " inside a quoted part as "")`)
			}
			part = b.String()
		} else {
			j := strings.IndexByte(name[i:], '.')
			if j < 0 {
				j = len(name) - i
			}
			part = name[i : i+j]
			if strings.IndexByte(part, '"') >= 0 {
				return "", "", errors.New("table name " + quoteForMsg(name) + ` has an unbalanced double quote (quote the whole part: "a""b")`)
			}
			i += j
		}
		if part == "" {
			return "", "", errors.New("table name " + quoteForMsg(name) + " has an empty part")
		}
		parts[n] = part
		n++
		if i == len(name) {
			break
		}
		i++ // the '.'
		if i == len(name) {
			return "", "", errors.New("table name " + quoteForMsg(name) + " has an empty part")
		}
	}
	if n == 1 {
		return "public", parts[0], nil
	}
	return parts[0], parts[1], nil
}

func quoteForMsg(s string) string {
	return "`" + s + "`"
}
