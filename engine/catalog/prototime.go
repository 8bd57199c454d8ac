package catalog

import (
	"bytes"

	"github.com/shapelog/shapelog/engine/recordpb"
)

// Temporal values in protobuf are typed (Airbyte's destinations refuse a
// string for a field declared date, time or timestamp), parsed from
// PostgreSQL's ISO text (DateStyle ISO, TimeZone UTC). ±infinity has no
// typed form: it becomes null, and the record's meta says NULLED.

// appendProtoTemporal appends the typed value of a date, time, timetz,
// timestamp or timestamptz text.
func appendProtoTemporal(dst []byte, t *Type, text []byte) ([]byte, bool, error) {
	if bytes.HasSuffix(text, []byte("infinity")) {
		return recordpb.AppendNull(dst), true, nil
	}
	bad := func() ([]byte, bool, error) {
		return dst, false, valueError(t, text, "not an ISO date/time PostgreSQL writes")
	}
	body, bc := bytes.CutSuffix(text, []byte(" BC"))
	switch t.Kind {
	case KindDate:
		days, rest, ok := parseDate(body, bc)
		if !ok || len(rest) != 0 {
			return bad()
		}
		return recordpb.AppendDate(dst, days), false, nil
	case KindTime:
		nanos, rest, ok := parseClock(text)
		if !ok || len(rest) != 0 {
			return bad()
		}
		return recordpb.AppendTimeWithoutZone(dst, nanos), false, nil
	case KindTimeTZ:
		nanos, rest, ok := parseClock(text)
		offset, ok2 := parseOffset(rest)
		if !ok || !ok2 {
			return bad()
		}
		return recordpb.AppendTimeWithZone(dst, nanos, offset), false, nil
	}
	days, rest, ok := parseDate(body, bc)
	if !ok || len(rest) == 0 || rest[0] != ' ' {
		return bad()
	}
	nanos, rest, ok := parseClock(rest[1:])
	if !ok {
		return bad()
	}
	if t.Kind == KindTimestamp {
		if len(rest) != 0 {
			return bad()
		}
		return recordpb.AppendTimestampLocal(dst, days, nanos), false, nil
	}
	offset, ok := parseOffset(rest)
	if !ok {
		return bad()
	}
	sec := days*86400 + int64(nanos/1e9) - int64(offset)
	return recordpb.AppendTimestampWithZone(dst, sec, uint32(nanos%1e9), offset), false, nil
}

// parseDate reads Y…Y-MM-DD (four or more year digits; bc: before Christ)
// and returns its days since 1970-01-01 in the proleptic Gregorian
// calendar.
func parseDate(b []byte, bc bool) (days int64, rest []byte, ok bool) {
	i := 0
	var y int64
	for i < len(b) && b[i] >= '0' && b[i] <= '9' && i < 9 {
		y = y*10 + int64(b[i]-'0')
		i++
	}
	if i < 4 || len(b) < i+6 || b[i] != '-' || b[i+3] != '-' {
		return 0, b, false
	}
	m, ok1 := twoDigits(b[i+1:])
	d, ok2 := twoDigits(b[i+4:])
	if !ok1 || !ok2 || m < 1 || m > 12 || d < 1 || d > 31 {
		return 0, b, false
	}
	if bc {
		y = 1 - y // 1 BC is year 0
	}
	return daysFromCivil(y, int64(m), int64(d)), b[i+6:], true
}

// daysFromCivil is the number of days from 1970-01-01 to y-m-d (Howard
// Hinnant's algorithm, valid for any year).
func daysFromCivil(y, m, d int64) int64 {
	if m <= 2 {
		y--
	}
	era := y / 400
	if y < 0 && y%400 != 0 {
		era--
	}
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468
}

// parseClock reads HH:MM:SS[.f…] and returns nanoseconds since midnight.
func parseClock(b []byte) (nanos uint64, rest []byte, ok bool) {
	if len(b) < 8 || b[2] != ':' || b[5] != ':' {
		return 0, b, false
	}
	h, ok1 := twoDigits(b)
	m, ok2 := twoDigits(b[3:])
	s, ok3 := twoDigits(b[6:])
	if !ok1 || !ok2 || !ok3 || h > 24 || m > 59 || s > 60 {
		return 0, b, false
	}
	nanos = (uint64(h)*3600 + uint64(m)*60 + uint64(s)) * 1e9
	b = b[8:]
	if len(b) > 0 && b[0] == '.' {
		scale := uint64(1e8)
		i := 1
		for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
			nanos += uint64(b[i]-'0') * scale
			scale /= 10
		}
		if i == 1 {
			return 0, b, false
		}
		b = b[i:]
	}
	return nanos, b, true
}

// parseOffset reads ±HH[:MM[:SS]], the whole of b, into seconds.
func parseOffset(b []byte) (int32, bool) {
	if len(b) < 3 || (b[0] != '+' && b[0] != '-') {
		return 0, false
	}
	sign := int32(1)
	if b[0] == '-' {
		sign = -1
	}
	total := int32(0)
	for i, unit := 1, int32(3600); ; i, unit = i+3, unit/60 {
		v, ok := twoDigits(b[i:])
		if !ok || unit == 0 {
			return 0, false
		}
		total += int32(v) * unit
		if i+2 == len(b) {
			return sign * total, true
		}
		if b[i+2] != ':' {
			return 0, false
		}
	}
}

func twoDigits(b []byte) (int, bool) {
	if len(b) < 2 || b[0] < '0' || b[0] > '9' || b[1] < '0' || b[1] > '9' {
		return 0, false
	}
	return int(b[0]-'0')*10 + int(b[1]-'0'), true
}
