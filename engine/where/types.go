package where

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unsafe"

	"github.com/shapelog/shapelog/engine/catalog"
)

// kind is the type of an expression, after mapping PostgreSQL types onto
// the few the evaluator distinguishes.
type kind int

const (
	kUnknown kind = iota // an untyped string literal or parameter: takes the other operand's type
	kBool
	kInt   // int2, int4, int8, oid
	kFloat // float4, float8, numeric (as Electric does: numeric is compared as a float)
	kText  // text, varchar, bpchar, name, enums (compared byte-wise, like COLLATE "C")
	kUUID
	kDate
	kTime
	kTimestamp
	kTimestampTZ
	kInterval // months, days and microseconds, ordered as PostgreSQL does (a month is 30 days, a day 24 hours)
	kArray
)

var kindNames = map[kind]string{kUnknown: "unknown", kBool: "bool", kInt: "int8", kFloat: "float8", kText: "text", kUUID: "uuid",
	kDate: "date", kTime: "time", kTimestamp: "timestamp", kTimestampTZ: "timestamptz", kInterval: "interval", kArray: "array"}

// typ is an expression's type; arrays have an element type.
type typ struct {
	k    kind
	elem *typ
}

func (t typ) String() string {
	if t.k == kArray && t.elem != nil {
		return t.elem.String() + "[]"
	}
	return kindNames[t.k]
}

// sqlType is the PostgreSQL type literals of t are cast to.
func (t typ) sqlType() string {
	switch t.k {
	case kInt:
		return "int8"
	case kFloat:
		return "float8"
	case kArray:
		return t.elem.sqlType() + "[]"
	}
	return kindNames[t.k]
}

// textTypes are the KindText types compared as text ("" for a Type built
// without a name). Other KindText types (inet, citext, money, domains, …)
// have their own operators in PostgreSQL, so a clause must cast them with
// ::text first.
var textTypes = map[string]bool{"": true, "text": true, "character varying": true, "character": true, "name": true, `"char"`: true}

// columnType maps a column's catalog type; ok=false for types where
// clauses cannot use.
func columnType(t *catalog.Type) (typ, bool) {
	switch t.Kind {
	case catalog.KindInt2, catalog.KindInt4, catalog.KindInt8, catalog.KindOID:
		return typ{k: kInt}, true
	case catalog.KindFloat4, catalog.KindFloat8, catalog.KindNumeric:
		return typ{k: kFloat}, true
	case catalog.KindBool:
		return typ{k: kBool}, true
	case catalog.KindText:
		return typ{k: kText}, textTypes[t.Name]
	case catalog.KindEnum:
		return typ{k: kText}, true
	case catalog.KindUUID:
		return typ{k: kUUID}, true
	case catalog.KindDate:
		return typ{k: kDate}, true
	case catalog.KindTime:
		return typ{k: kTime}, true
	case catalog.KindTimestamp:
		return typ{k: kTimestamp}, true
	case catalog.KindTimestampTZ:
		return typ{k: kTimestampTZ}, true
	case catalog.KindInterval:
		return typ{k: kInterval}, true
	case catalog.KindArray:
		if t.Elem == nil || t.Elem.Kind == catalog.KindEnum {
			return typ{}, false
		}
		e, ok := columnType(t.Elem)
		if !ok || e.k == kArray {
			return typ{}, false
		}
		return typ{k: kArray, elem: &e}, true
	}
	return typ{}, false
}

// castType maps a type name in a cast.
func castType(name string) (typ, bool) {
	switch strings.ToLower(name) {
	case "int2", "int4", "int8", "smallint", "integer", "int", "bigint", "oid":
		return typ{k: kInt}, true
	case "float4", "float8", "real", "double precision", "numeric", "decimal", "float":
		return typ{k: kFloat}, true
	case "bool", "boolean":
		return typ{k: kBool}, true
	case "text", "varchar", "character varying", "bpchar", "char", "character", "name":
		return typ{k: kText}, true
	case "uuid":
		return typ{k: kUUID}, true
	case "date":
		return typ{k: kDate}, true
	case "time", "time without time zone":
		return typ{k: kTime}, true
	case "timestamp", "timestamp without time zone":
		return typ{k: kTimestamp}, true
	case "timestamptz", "timestamp with time zone":
		return typ{k: kTimestampTZ}, true
	case "interval":
		return typ{k: kInterval}, true
	}
	return typ{}, false
}

// value is one evaluated value.
type value struct {
	null bool
	b    bool
	d    int32 // interval days
	i    int64 // ints; dates and timestamps as microseconds since the epoch; time and interval microseconds
	f    float64
	s    string // text, uuid
	a    []value
	m    int32 // interval months
}

var null = value{null: true}

const (
	usPerSec = int64(1e6)
	usPerDay = 86400 * usPerSec
)

// parseValue reads PostgreSQL text output (or a literal) as type t.
func parseValue(t typ, s string) (value, error) {
	switch t.k {
	case kBool:
		switch s {
		case "t":
			return value{b: true}, nil
		case "f":
			return value{}, nil
		}
		switch strings.ToLower(strings.TrimSpace(s)) {
		case "t", "true", "yes", "y", "on", "1":
			return value{b: true}, nil
		case "f", "false", "no", "n", "off", "0":
			return value{b: false}, nil
		}
	case kInt:
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return value{i: i}, nil
		}
		if i, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64); err == nil {
			return value{i: i}, nil
		}
	case kFloat:
		if f, err := strconv.ParseFloat(strings.TrimSpace(s), 64); err == nil || isRange(err) {
			return value{f: f}, nil
		}
	case kText:
		return value{s: s}, nil
	case kUUID:
		if isCanonicalUUID(s) {
			return value{s: s}, nil
		}
		u := strings.ToLower(strings.ReplaceAll(strings.Trim(strings.TrimSpace(s), "{}"), "-", ""))
		if len(u) == 32 {
			if _, err := strconv.ParseUint(u[:16], 16, 64); err == nil {
				if _, err := strconv.ParseUint(u[16:], 16, 64); err == nil {
					return value{s: u[:8] + "-" + u[8:12] + "-" + u[12:16] + "-" + u[16:20] + "-" + u[20:]}, nil
				}
			}
		}
	case kTime:
		if us, ok := parseClock(strings.TrimSpace(s)); ok {
			return value{i: us}, nil
		}
	case kDate, kTimestamp, kTimestampTZ:
		if us, ok := parseTime(strings.TrimSpace(s), t.k); ok {
			return value{i: us}, nil
		}
	case kInterval:
		if v, ok := parseInterval(strings.TrimSpace(s)); ok {
			return v, nil
		}
	case kArray:
		return parseArray(*t.elem, s)
	}
	return value{}, fmt.Errorf("invalid input syntax for type %s: %q", t, s)
}

// isRange reports a float out of float8's range: ParseFloat returns ±Inf
// with it, as PostgreSQL does for float8 overflow in text output it never
// produces, so such input only comes from literals.
func isRange(err error) bool {
	var ne *strconv.NumError
	return errors.As(err, &ne) && ne.Err == strconv.ErrRange
}

func isCanonicalUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
				return false
			}
		}
	}
	return true
}

// digits reads an unsigned decimal number of at least min digits at s[i:].
func digits(s string, i, min int) (n int64, end int, ok bool) {
	end = i
	for end < len(s) && s[end] >= '0' && s[end] <= '9' && end-i < 18 {
		n = n*10 + int64(s[end]-'0')
		end++
	}
	return n, end, end-i >= min
}

// fraction reads ".ffffff" at s[i:] as microseconds, rounding extra digits.
func fraction(s string, i int) (us int64, end int) {
	if i >= len(s) || s[i] != '.' {
		return 0, i
	}
	end = i + 1
	scale := int64(100000)
	for end < len(s) && s[end] >= '0' && s[end] <= '9' {
		d := int64(s[end] - '0')
		switch {
		case scale > 0:
			us += d * scale
			scale /= 10
		case scale == 0:
			if d >= 5 {
				us++
			}
			scale = -1
		}
		end++
	}
	return us, end
}

// parseClock reads HH:MM[:SS[.ffffff]] as microseconds since midnight;
// 24:00:00 is allowed, as in PostgreSQL.
func parseClock(s string) (int64, bool) {
	us, end, ok := clock(s, 0)
	return us, ok && end == len(s)
}

func clock(s string, i int) (int64, int, bool) {
	h, i, ok := digits(s, i, 1)
	if !ok || i >= len(s) || s[i] != ':' {
		return 0, i, false
	}
	m, i, ok := digits(s, i+1, 2)
	if !ok || m > 59 {
		return 0, i, false
	}
	var sec, frac int64
	if i < len(s) && s[i] == ':' {
		if sec, i, ok = digits(s, i+1, 2); !ok || sec > 60 {
			return 0, i, false
		}
		frac, i = fraction(s, i)
	}
	us := ((h*60+m)*60+sec)*usPerSec + frac
	if h > 24 || us > usPerDay {
		return 0, i, false
	}
	return us, i, true
}

// daysFromCivil is the number of days from 1970-01-01 to y-m-d in the
// proleptic Gregorian calendar (Howard Hinnant's algorithm).
func daysFromCivil(y, m, d int64) int64 {
	if m <= 2 {
		y--
	}
	era := y
	if era < 0 {
		era -= 399
	}
	era /= 400
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468
}

// civilFromDays is the inverse of daysFromCivil.
func civilFromDays(z int64) (y, m, d int64) {
	z += 719468
	era := z
	if era < 0 {
		era -= 146096
	}
	era /= 146097
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	y = yoe + era*400
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d = doy - (153*mp+2)/5 + 1
	m = mp + 3
	if m > 12 {
		m -= 12
	}
	if m <= 2 {
		y++
	}
	return y, m, d
}

func daysIn(y, m int64) int64 {
	switch m {
	case 2:
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// parseTime reads a date or timestamp as microseconds since the epoch.
// Values without a zone are taken as UTC, the engine's session time zone;
// timestamp (without time zone) ignores a zone, as PostgreSQL does; dates
// drop the time of day. infinity maps to the extremes.
func parseTime(s string, k kind) (int64, bool) {
	switch strings.ToLower(s) {
	case "infinity", "+infinity":
		return math.MaxInt64, true
	case "-infinity":
		return math.MinInt64, true
	}
	// YYYY-MM-DD[( |T)HH:MM[:SS[.f]]][zone][ BC]: PostgreSQL's ISO output.
	y, i, ok := digits(s, 0, 4)
	if !ok || i+6 > len(s) || s[i] != '-' || s[i+3] != '-' {
		return 0, false
	}
	mo, _, ok1 := digits(s[i+1:i+3], 0, 2)
	d, _, ok2 := digits(s[i+4:i+6], 0, 2)
	i += 6
	if !ok1 || !ok2 || mo < 1 || mo > 12 || d < 1 {
		return 0, false
	}
	var clk, zone int64
	if i < len(s) && (s[i] == ' ' || s[i] == 'T') && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9' {
		if clk, i, ok = clock(s, i+1); !ok {
			return 0, false
		}
		if i < len(s) && (s[i] == '+' || s[i] == '-' || s[i] == 'Z') {
			if s[i] == 'Z' {
				i++
			} else {
				sign := int64(1)
				if s[i] == '-' {
					sign = -1
				}
				zh, j, ok := digits(s, i+1, 2)
				if !ok || j-i-1 > 2 {
					return 0, false
				}
				i = j
				var zm, zs int64
				if i < len(s) && s[i] == ':' {
					if zm, i, ok = digits(s, i+1, 2); !ok {
						return 0, false
					}
					if i < len(s) && s[i] == ':' {
						if zs, i, ok = digits(s, i+1, 2); !ok {
							return 0, false
						}
					}
				} else if zm, j, ok = digits(s, i, 2); ok && j-i == 2 {
					i = j
				}
				if zh > 15 || zm > 59 || zs > 59 {
					return 0, false
				}
				zone = sign * ((zh*60+zm)*60 + zs) * usPerSec
			}
		}
	}
	if rest := s[i:]; rest == " BC" {
		y = 1 - y
	} else if rest != "" {
		return 0, false
	}
	if d > daysIn(y, mo) {
		return 0, false
	}
	days := daysFromCivil(y, mo, d)
	switch k {
	case kDate:
		return days * usPerDay, true
	case kTimestamp:
		zone = 0
	}
	return days*usPerDay + clk - zone, true
}

// parseInterval reads an interval in ISO 8601 form (PostgreSQL's output
// with IntervalStyle=iso_8601: P1Y2M3DT4H5M6.5S) or PostgreSQL's verbose
// input form ("1 year 2 mons 3 days 04:05:06", "-2 hours", "1 day ago").
// Fractional amounts are only accepted where they are exact: seconds, and
// hours, minutes, days and weeks that turn into whole microseconds.
func parseInterval(s string) (value, bool) {
	if s == "" {
		return value{}, false
	}
	if s[0] == 'P' {
		return parseISOInterval(s[1:])
	}
	var v value
	fields := strings.Fields(strings.ToLower(s))
	if len(fields) > 0 && fields[0] == "@" {
		fields = fields[1:]
	}
	ago := false
	if len(fields) > 0 && fields[len(fields)-1] == "ago" {
		ago, fields = true, fields[:len(fields)-1]
	}
	if len(fields) == 0 {
		return value{}, false
	}
	for i := 0; i < len(fields); i++ {
		f := fields[i]
		if strings.Contains(f, ":") {
			neg := strings.HasPrefix(f, "-")
			us, ok := parseClock(strings.TrimLeft(f, "+-"))
			if !ok {
				return value{}, false
			}
			if neg {
				us = -us
			}
			v.i += us
			continue
		}
		num, unit := f, ""
		if j := strings.IndexFunc(f, func(r rune) bool { return r >= 'a' && r <= 'z' }); j > 0 {
			num, unit = f[:j], f[j:]
		} else if i+1 < len(fields) {
			i++
			unit = fields[i]
		}
		if !addIntervalPart(&v, num, unit) {
			return value{}, false
		}
	}
	if ago {
		v = negInterval(v)
	}
	return v, true
}

// intervalUnits are the units of the verbose interval form, in
// microseconds; months and years are counted apart (0 here).
var intervalUnits = map[string]int64{
	"microsecond": 1, "microseconds": 1, "usec": 1, "usecs": 1, "us": 1,
	"millisecond": 1000, "milliseconds": 1000, "msec": 1000, "msecs": 1000, "ms": 1000,
	"second": usPerSec, "seconds": usPerSec, "sec": usPerSec, "secs": usPerSec, "s": usPerSec, "": usPerSec,
	"minute": 60 * usPerSec, "minutes": 60 * usPerSec, "min": 60 * usPerSec, "mins": 60 * usPerSec, "m": 60 * usPerSec,
	"hour": 3600 * usPerSec, "hours": 3600 * usPerSec, "hr": 3600 * usPerSec, "hrs": 3600 * usPerSec, "h": 3600 * usPerSec,
	"day": usPerDay, "days": usPerDay, "d": usPerDay,
	"week": 7 * usPerDay, "weeks": 7 * usPerDay, "w": 7 * usPerDay,
	"month": 0, "months": 0, "mon": 0, "mons": 0,
	"year": -12, "years": -12, "yr": -12, "yrs": -12, "y": -12,
}

func addIntervalPart(v *value, num, unit string) bool {
	per, ok := intervalUnits[unit]
	if !ok {
		return false
	}
	switch {
	case per <= 0: // months, years: whole numbers only
		n, err := strconv.ParseInt(num, 10, 32)
		if err != nil {
			return false
		}
		if per < 0 {
			n *= 12
		}
		n += int64(v.m)
		v.m = int32(n)
		return n == int64(v.m)
	case per >= usPerDay: // days, weeks: whole numbers only
		n, err := strconv.ParseInt(num, 10, 32)
		if err != nil {
			return false
		}
		n = n*(per/usPerDay) + int64(v.d)
		v.d = int32(n)
		return n == int64(v.d)
	}
	us, ok := exactAmount(num, per)
	v.i += us
	return ok && v.i < 1<<62 && v.i > -1<<62
}

// exactAmount is num×per (per at most an hour in microseconds) when that
// is a whole number of microseconds.
func exactAmount(num string, per int64) (int64, bool) {
	whole, frac, _ := strings.Cut(num, ".")
	neg := strings.HasPrefix(whole, "-")
	whole = strings.TrimPrefix(strings.TrimPrefix(whole, "-"), "+")
	if whole == "" && frac == "" || len(frac) > 9 || len(whole) > 12 {
		return 0, false
	}
	var w, f int64
	for _, part := range []struct {
		s string
		n *int64
	}{{whole, &w}, {frac + strings.Repeat("0", 9-len(frac)), &f}} {
		for _, c := range part.s {
			if c < '0' || c > '9' {
				return 0, false
			}
			*part.n = *part.n*10 + int64(c-'0')
		}
	}
	// The amount is (w + f·1e-9)·per; f·per < 1e9·3.6e9 fits in int64.
	if f*per%1e9 != 0 {
		return 0, false
	}
	total := w*per + f*per/1e9
	if neg {
		total = -total
	}
	return total, true
}

// parseISOInterval reads the part after "P" of an ISO 8601 interval with
// designators.
func parseISOInterval(s string) (value, bool) {
	var v value
	inTime := false
	if s == "" {
		return v, false
	}
	for s != "" {
		if s[0] == 'T' {
			if inTime {
				return v, false
			}
			inTime, s = true, s[1:]
			continue
		}
		j := strings.IndexFunc(s, func(r rune) bool { return r >= 'A' && r <= 'Z' })
		if j <= 0 {
			return v, false
		}
		num, unit := s[:j], s[j]
		s = s[j+1:]
		var ok bool
		switch {
		case !inTime && unit == 'Y':
			ok = addIntervalPart(&v, num, "year")
		case !inTime && unit == 'M':
			ok = addIntervalPart(&v, num, "month")
		case !inTime && unit == 'W':
			ok = addIntervalPart(&v, num, "week")
		case !inTime && unit == 'D':
			ok = addIntervalPart(&v, num, "day")
		case inTime && unit == 'H':
			ok = addIntervalPart(&v, num, "hour")
		case inTime && unit == 'M':
			ok = addIntervalPart(&v, num, "minute")
		case inTime && unit == 'S':
			ok = addIntervalPart(&v, num, "second")
		}
		if !ok {
			return v, false
		}
	}
	return v, true
}

func negInterval(v value) value { return value{m: -v.m, d: -v.d, i: -v.i} }

// intervalKey orders intervals as PostgreSQL does: by total span, a
// month counting 30 days and a day 24 hours.
func intervalKey(v value) (days, us int64) {
	days = int64(v.m)*30 + int64(v.d) + v.i/usPerDay
	us = v.i % usPerDay
	if us < 0 {
		us += usPerDay
		days--
	}
	return days, us
}

// formatInterval writes an interval as PostgreSQL does with
// IntervalStyle=iso_8601.
func formatInterval(v value) string {
	if v.m == 0 && v.d == 0 && v.i == 0 {
		return "PT0S"
	}
	var b strings.Builder
	b.WriteByte('P')
	part := func(n int64, unit byte) {
		if n != 0 {
			b.WriteString(strconv.FormatInt(n, 10))
			b.WriteByte(unit)
		}
	}
	part(int64(v.m/12), 'Y')
	part(int64(v.m%12), 'M')
	part(int64(v.d), 'D')
	if v.i != 0 {
		b.WriteByte('T')
		part(v.i/(3600*usPerSec), 'H')
		part(v.i/(60*usPerSec)%60, 'M')
		if us := v.i % (60 * usPerSec); us != 0 {
			if us < 0 {
				b.WriteByte('-')
				us = -us
			}
			b.WriteString(strconv.FormatInt(us/usPerSec, 10))
			if f := us % usPerSec; f != 0 {
				b.WriteString(strings.TrimRight(fmt.Sprintf(".%06d", f), "0"))
			}
			b.WriteByte('S')
		}
	}
	return b.String()
}

// parseArray reads a one-dimensional PostgreSQL array literal.
func parseArray(elem typ, s string) (value, error) {
	s = strings.TrimSpace(s)
	if len(s) < 2 || s[0] != '{' || s[len(s)-1] != '}' {
		return value{}, fmt.Errorf("malformed array literal: %q", s)
	}
	body := s[1 : len(s)-1]
	out := value{a: []value{}}
	if strings.TrimSpace(body) == "" {
		return out, nil
	}
	for i := 0; ; {
		for i < len(body) && isArraySpace(body[i]) {
			i++
		}
		var item strings.Builder
		quoted := false
		if i < len(body) && body[i] == '"' {
			quoted = true
			i++
			for i < len(body) && body[i] != '"' {
				if body[i] == '\\' && i+1 < len(body) {
					i++
				}
				item.WriteByte(body[i])
				i++
			}
			if i >= len(body) {
				return value{}, fmt.Errorf("malformed array literal: %q", s)
			}
			i++
		} else {
			end := 0 // length of item up to its last non-space
			for i < len(body) && body[i] != ',' {
				switch body[i] {
				case '{', '}', '"':
					return value{}, fmt.Errorf("malformed array literal (multidimensional arrays are not supported): %q", s)
				case '\\':
					if i+1 < len(body) {
						i++
					}
				}
				item.WriteByte(body[i])
				i++
				if !isArraySpace(body[i-1]) {
					end = item.Len()
				}
			}
			raw := item.String()[:end]
			if raw == "" {
				return value{}, fmt.Errorf("malformed array literal: %q", s)
			}
			item.Reset()
			item.WriteString(raw)
		}
		raw := item.String()
		if !quoted && strings.EqualFold(raw, "NULL") {
			out.a = append(out.a, null)
		} else {
			v, err := parseValue(elem, raw)
			if err != nil {
				return value{}, err
			}
			out.a = append(out.a, v)
		}
		for i < len(body) && isArraySpace(body[i]) {
			i++
		}
		if i >= len(body) {
			break
		}
		if body[i] != ',' {
			return value{}, fmt.Errorf("malformed array literal: %q", s)
		}
		i++
	}
	return out, nil
}

func isArraySpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

// bytesString views b as a string without copying; the result must not
// outlive b.
func bytesString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// compare orders two non-null values of kind k. Text compares byte-wise,
// which is COLLATE "C" (SQL() adds that collation to text orderings).
func compare(k kind, a, b value) int {
	switch k {
	case kBool:
		switch {
		case a.b == b.b:
			return 0
		case !a.b:
			return -1
		}
		return 1
	case kInt, kDate, kTimestamp, kTimestampTZ, kTime:
		return cmpInt(a.i, b.i)
	case kInterval:
		ad, au := intervalKey(a)
		bd, bu := intervalKey(b)
		if c := cmpInt(ad, bd); c != 0 {
			return c
		}
		return cmpInt(au, bu)
	case kFloat:
		// PostgreSQL orders NaN above every number and equal to itself.
		an, bn := math.IsNaN(a.f), math.IsNaN(b.f)
		switch {
		case an && bn:
			return 0
		case an:
			return 1
		case bn:
			return -1
		case a.f < b.f:
			return -1
		case a.f > b.f:
			return 1
		}
		return 0
	}
	return strings.Compare(a.s, b.s)
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// formatFloat writes a float8 as PostgreSQL does with extra_float_digits
// > 0: the shortest exact digits, in exponent form below 1e-4 and from
// 1e15 up.
func formatFloat(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	case f == 0:
		if math.Signbit(f) {
			return "-0"
		}
		return "0"
	}
	if a := math.Abs(f); a < 1e-4 || a >= 1e15 {
		return strconv.FormatFloat(f, 'e', -1, 64)
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}
