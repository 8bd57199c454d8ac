package importer

// airbyteFormats check date and time formats the way Airbyte uses them:
// timestamps and times with or without an offset (airbyte_type says which),
// BC dates, years past 9999; anything PostgreSQL's input functions take.
// They are hand-written scanners: they run for every date in every record.
var airbyteFormats = map[string]func(any) bool{}

// formatChecks are the same checks on strings, for the fast path.
var formatChecks = map[string]func(string) bool{
	"date":      func(s string) bool { rest, ok := scanDate(s); return ok && (rest == "" || rest == " BC") },
	"time":      func(s string) bool { rest, ok := scanTime(s); return ok && scanOffset(rest) == "" },
	"date-time": isDateTime,
}

func init() {
	for name, check := range formatChecks {
		airbyteFormats[name] = stringFormat(check)
	}
}

func stringFormat(check func(string) bool) func(any) bool {
	return func(v any) bool {
		s, ok := v.(string)
		return !ok || check(s)
	}
}

func digits(s string, n int) (string, bool) {
	if len(s) < n {
		return s, false
	}
	for i := 0; i < n; i++ {
		if s[i] < '0' || s[i] > '9' {
			return s, false
		}
	}
	return s[n:], true
}

// scanDate accepts YYYY[Y…]-MM-DD and returns what follows.
func scanDate(s string) (string, bool) {
	rest, ok := digits(s, 4)
	for ok && rest != "" && rest[0] >= '0' && rest[0] <= '9' {
		rest = rest[1:]
	}
	if !ok || rest == "" || rest[0] != '-' {
		return s, false
	}
	if rest, ok = digits(rest[1:], 2); !ok || rest == "" || rest[0] != '-' {
		return s, false
	}
	return digits(rest[1:], 2)
}

// scanTime accepts HH:MM[:SS[.fff]] and returns what follows.
func scanTime(s string) (string, bool) {
	rest, ok := digits(s, 2)
	if !ok || rest == "" || rest[0] != ':' {
		return s, false
	}
	if rest, ok = digits(rest[1:], 2); !ok {
		return s, false
	}
	if rest != "" && rest[0] == ':' {
		if rest, ok = digits(rest[1:], 2); !ok {
			return s, false
		}
		if rest != "" && rest[0] == '.' {
			if rest, ok = digits(rest[1:], 1); !ok {
				return s, false
			}
			for rest != "" && rest[0] >= '0' && rest[0] <= '9' {
				rest = rest[1:]
			}
		}
	}
	return rest, true
}

// scanOffset skips an optional Z or ±HH[[:]MM] and returns what follows
// (unchanged when what is there is not an offset).
func scanOffset(s string) string {
	if s == "" {
		return s
	}
	if s[0] == 'Z' || s[0] == 'z' {
		return s[1:]
	}
	if s[0] != '+' && s[0] != '-' {
		return s
	}
	rest, ok := digits(s[1:], 2)
	if !ok {
		return s
	}
	if rest != "" && rest[0] == ':' {
		rest = rest[1:]
	}
	if r, ok := digits(rest, 2); ok {
		rest = r
	}
	return rest
}

func isDateTime(s string) bool {
	rest, ok := scanDate(s)
	if !ok || rest == "" || (rest[0] != 'T' && rest[0] != 't' && rest[0] != ' ') {
		return false
	}
	if rest, ok = scanTime(rest[1:]); !ok {
		return false
	}
	rest = scanOffset(rest)
	return rest == "" || rest == " BC"
}
