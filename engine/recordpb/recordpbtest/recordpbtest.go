// Package recordpbtest holds the expectations the protobuf export's tests
// share: typed temporal values built with Go's time package (an oracle
// independent of the engine's parser), and what shapelog's source makes of
// the JSON export's arrays.
package recordpbtest

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/shapelog/shapelog/engine/recordpb"
)

// Days is the number of days from 1970-01-01 to t's date.
func Days(t time.Time) int64 {
	sec := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC).Unix()
	days := sec / 86400
	if sec%86400 < 0 {
		days--
	}
	return days
}

func nanosOfDay(t time.Time) uint64 {
	return uint64(t.Hour()*3600+t.Minute()*60+t.Second())*1e9 + uint64(t.Nanosecond())
}

// Date is a date value (astronomical years: 1 BC is 0).
func Date(y, m, d int) *recordpb.Value {
	return &recordpb.Value{Kind: &recordpb.Value_Date{Date: Days(time.Date(y, time.Month(m), d, 0, 0, 0, 0, time.UTC))}}
}

// Time is a time of day without zone.
func Time(h, m, s, ns int) *recordpb.Value {
	return &recordpb.Value{Kind: &recordpb.Value_TimeWithoutTimezone{TimeWithoutTimezone: uint64(h*3600+m*60+s)*1e9 + uint64(ns)}}
}

// TimeTZ is a time of day with its UTC offset in seconds.
func TimeTZ(h, m, s, ns, offset int) *recordpb.Value {
	return &recordpb.Value{Kind: &recordpb.Value_TimeWithTimezone{TimeWithTimezone: &recordpb.TimeWithZone{NanosOfDay: uint64(h*3600+m*60+s)*1e9 + uint64(ns), OffsetSeconds: int32(offset)}}}
}

// Timestamp is t as a timestamp with its zone's offset, or without zone.
func Timestamp(t time.Time, zone bool) *recordpb.Value {
	if !zone {
		return &recordpb.Value{Kind: &recordpb.Value_TimestampWithoutTimezone{TimestampWithoutTimezone: &recordpb.LocalTimestamp{
			DateDaysSinceEpoch: Days(t), NanosOfDay: nanosOfDay(t)}}}
	}
	_, off := t.Zone()
	return &recordpb.Value{Kind: &recordpb.Value_TimestampWithTimezone{TimestampWithTimezone: &recordpb.TimestampWithZone{
		EpochSecond: t.Unix(), Nano: uint32(t.Nanosecond()), OffsetSeconds: int32(off)}}}
}

// Temporal is the typed value of the JSON export's text s of a value of
// PostgreSQL type typ: date, time, timetz, timestamp or timestamptz.
func Temporal(typ, s string) (*recordpb.Value, error) {
	parse := func(layouts ...string) (time.Time, error) {
		for _, l := range layouts {
			if v, err := time.Parse(l, s); err == nil {
				return v, nil
			}
		}
		return time.Time{}, fmt.Errorf("%q: no layout parses it as %s", s, typ)
	}
	var layouts []string
	switch typ {
	case "date":
		layouts = []string{"2006-01-02"}
	case "time":
		layouts = []string{"15:04:05.999999999"}
	case "timetz":
		layouts = []string{"15:04:05.999999999Z07", "15:04:05.999999999Z07:00", "15:04:05.999999999Z07:00:00"}
	case "timestamp":
		layouts = []string{"2006-01-02T15:04:05.999999999"}
	case "timestamptz":
		layouts = []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999Z07"}
	default:
		return nil, fmt.Errorf("%s is not a temporal type", typ)
	}
	v, err := parse(layouts...)
	if err != nil {
		return nil, err
	}
	switch typ {
	case "date":
		return Date(v.Year(), int(v.Month()), v.Day()), nil
	case "time":
		return Time(v.Hour(), v.Minute(), v.Second(), v.Nanosecond()), nil
	case "timetz":
		_, off := v.Zone()
		return TimeTZ(v.Hour(), v.Minute(), v.Second(), v.Nanosecond(), off), nil
	}
	return Timestamp(v, typ == "timestamptz"), nil
}

// SourceArray converts a decoded JSON export array as shapelog's source
// does, for elements of elem ("int8", "numeric", "float", or anything
// else): int8 and numeric strings become numbers, and the strings a number
// array holds otherwise (NaN, ±Infinity) null, which it reports.
func SourceArray(v any, elem string) (any, bool) {
	switch x := v.(type) {
	case []any:
		out := make([]any, len(x))
		nulled := false
		for i, e := range x {
			var n bool
			out[i], n = SourceArray(e, elem)
			nulled = nulled || n
		}
		return out, nulled
	case string:
		switch elem {
		case "float":
			return nil, true
		case "int8", "numeric":
			if _, err := strconv.ParseFloat(x, 64); err == nil && !strings.ContainsAny(x, "NnIi") {
				return json.Number(x), false
			}
			return nil, true
		}
	}
	return v, false
}
