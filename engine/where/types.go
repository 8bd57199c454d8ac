package where

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
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
	kArray
)

var kindNames = map[kind]string{kUnknown: "unknown", kBool: "bool", kInt: "int8", kFloat: "float8", kText: "text", kUUID: "uuid",
	kDate: "date", kTime: "time", kTimestamp: "timestamp", kTimestampTZ: "timestamptz", kArray: "array"}

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
	case catalog.KindText, catalog.KindEnum:
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
	case catalog.KindArray:
		if t.Elem == nil {
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
	}
	return typ{}, false
}

// value is one evaluated value.
type value struct {
	null bool
	b    bool
	i    int64 // ints; dates and timestamps as microseconds since the epoch
	f    float64
	s    string // text, uuid, time
	a    []value
}

var null = value{null: true}

// parseValue reads PostgreSQL text output (or a literal) as type t.
func parseValue(t typ, s string) (value, error) {
	switch t.k {
	case kBool:
		switch strings.ToLower(strings.TrimSpace(s)) {
		case "t", "true", "yes", "y", "on", "1":
			return value{b: true}, nil
		case "f", "false", "no", "n", "off", "0":
			return value{b: false}, nil
		}
	case kInt:
		if i, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64); err == nil {
			return value{i: i}, nil
		}
	case kFloat:
		if f, err := strconv.ParseFloat(strings.TrimSpace(s), 64); err == nil {
			return value{f: f}, nil
		}
	case kText:
		return value{s: s}, nil
	case kUUID:
		u := strings.ToLower(strings.ReplaceAll(strings.Trim(s, "{}"), "-", ""))
		if len(u) == 32 {
			if _, err := strconv.ParseUint(u[:16], 16, 64); err == nil {
				if _, err := strconv.ParseUint(u[16:], 16, 64); err == nil {
					return value{s: u[:8] + "-" + u[8:12] + "-" + u[12:16] + "-" + u[16:20] + "-" + u[20:]}, nil
				}
			}
		}
	case kTime:
		if tm, err := time.Parse("15:04:05.999999", strings.TrimSpace(s)); err == nil {
			return value{i: int64(tm.Hour())*3600e6 + int64(tm.Minute())*60e6 + int64(tm.Second())*1e6 + int64(tm.Nanosecond()/1000)}, nil
		}
		if tm, err := time.Parse("15:04", strings.TrimSpace(s)); err == nil {
			return value{i: int64(tm.Hour())*3600e6 + int64(tm.Minute())*60e6}, nil
		}
	case kDate, kTimestamp, kTimestampTZ:
		if us, ok := parseTime(strings.TrimSpace(s), t.k); ok {
			return value{i: us}, nil
		}
	case kArray:
		return parseArray(*t.elem, s)
	}
	return value{}, fmt.Errorf("invalid input syntax for type %s: %q", t, s)
}

var timeLayouts = []string{
	"2006-01-02 15:04:05.999999999Z07:00:00", "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999Z07",
	"2006-01-02T15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999", "2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04", "2006-01-02",
}

// parseTime reads a date or timestamp as microseconds since the epoch
// (UTC; values without a zone are taken as UTC, which is the engine's
// session time zone). infinity maps to the extremes.
func parseTime(s string, k kind) (int64, bool) {
	switch strings.ToLower(s) {
	case "infinity":
		return math.MaxInt64, true
	case "-infinity":
		return math.MinInt64, true
	}
	for _, layout := range timeLayouts {
		if tm, err := time.Parse(layout, s); err == nil {
			if k == kDate {
				tm = time.Date(tm.Year(), tm.Month(), tm.Day(), 0, 0, 0, 0, time.UTC)
			}
			return tm.UnixMicro(), true
		}
	}
	return 0, false
}

// parseArray reads a one-dimensional PostgreSQL array literal.
func parseArray(elem typ, s string) (value, error) {
	s = strings.TrimSpace(s)
	if len(s) < 2 || s[0] != '{' || s[len(s)-1] != '}' {
		return value{}, fmt.Errorf("malformed array literal: %q", s)
	}
	body := s[1 : len(s)-1]
	out := value{a: []value{}}
	for i := 0; i < len(body); {
		for i < len(body) && body[i] == ' ' {
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
			for i < len(body) && body[i] != ',' {
				if body[i] == '{' {
					return value{}, fmt.Errorf("multidimensional arrays are not supported: %q", s)
				}
				item.WriteByte(body[i])
				i++
			}
		}
		raw := item.String()
		if !quoted {
			raw = strings.TrimSpace(raw)
		}
		if !quoted && strings.EqualFold(raw, "NULL") {
			out.a = append(out.a, null)
		} else {
			v, err := parseValue(elem, raw)
			if err != nil {
				return value{}, err
			}
			out.a = append(out.a, v)
		}
		for i < len(body) && body[i] == ' ' {
			i++
		}
		if i < len(body) {
			if body[i] != ',' {
				return value{}, fmt.Errorf("malformed array literal: %q", s)
			}
			i++
		}
	}
	return out, nil
}

// bytesString views b as a string without copying; the result must not
// outlive b.
func bytesString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// compare orders two non-null values of kind k.
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
		switch {
		case a.i < b.i:
			return -1
		case a.i > b.i:
			return 1
		}
		return 0
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
