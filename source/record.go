package main

import (
	"bytes"
	"fmt"
	"strconv"
	"time"

	"github.com/shapelog/shapelog/engine/client"
	"github.com/shapelog/shapelog/protocol"
)

// recordWriter turns engine documents of one stream into RECORD lines.
type recordWriter struct {
	s       *stream
	enc     *protocol.RecordEncoder
	data    []byte
	changes []protocol.FieldChange
}

func newRecordWriter(s *stream) *recordWriter {
	return &recordWriter{s: s, enc: protocol.NewRecordEncoder(s.desc)}
}

// appendRecord appends the RECORD line (and newline) for one document; a
// partition (speed mode) names the STATE that will cover it.
func (w *recordWriter) appendRecord(dst []byte, doc []byte, emittedAt int64, partition string) ([]byte, error) {
	data := append(w.data[:0], '{')
	w.changes = w.changes[:0]
	var ts int64
	deleted, truncated := false, false
	err := client.ObjectFields(doc, func(key, value []byte) error {
		field := key[1 : len(key)-1]
		switch string(field) {
		case "_ts":
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil {
				return fmt.Errorf("bad _ts %s", value)
			}
			ts = n
			return nil
		case "_deleted":
			deleted = string(value) == "true"
			return nil
		case "_truncated":
			truncated = string(value) == "true"
			return nil
		case "_id", "_table", "_component":
			return nil
		}
		col := w.s.columns[string(field)]
		if col == nil {
			// A column added after discovery: passed through as it is.
			name, err := client.FieldName(key)
			if err != nil {
				return err
			}
			col = &column{key: append(append([]byte(nil), key...), ':'), name: columnName(name)}
			w.s.columns[string(field)] = col
		}
		if len(data) > 1 {
			data = append(data, ',')
		}
		data = append(data, col.key...)
		var ok bool
		data, ok = convert(data, value, col.conv)
		if !ok {
			w.changes = append(w.changes, protocol.FieldChange{Field: col.name, Change: "NULLED", Reason: "SOURCE_SERIALIZATION_ERROR"})
		}
		return nil
	})
	if err != nil {
		return dst, fmt.Errorf("malformed document from the engine: %w", err)
	}
	if len(data) > 1 {
		data = append(data, ',')
	}
	when := time.Unix(0, ts).UTC()
	data = append(data, `"`+fieldLSN+`":`...)
	data = strconv.AppendInt(data, ts, 10)
	data = append(data, `,"`+fieldUpdatedAt+`":"`...)
	data = when.AppendFormat(data, time.RFC3339Nano)
	data = append(data, `","`+fieldDeletedAt+`":`...)
	if deleted {
		data = append(data, '"')
		data = when.AppendFormat(data, time.RFC3339Nano)
		data = append(data, '"')
	} else {
		data = append(data, "null"...)
	}
	if truncated {
		data = append(data, `,"`+fieldTruncated+`":true`...)
	}
	data = append(data, '}')
	w.data = data
	var meta *protocol.RecordMeta
	if len(w.changes) > 0 {
		meta = &protocol.RecordMeta{Changes: w.changes}
	}
	dst = w.enc.Append(dst, emittedAt, data, meta, partition)
	return append(dst, '\n'), nil
}

// convert appends value converted; ok is false when a value Airbyte cannot
// represent (NaN, ±Infinity in a number) was replaced by null.
func convert(dst, value []byte, conv conversion) ([]byte, bool) {
	if conv == asIs || len(value) == 0 {
		return append(dst, value...), true
	}
	switch value[0] {
	case '[':
		return convertArray(dst, value, conv)
	case '"':
		inner := value[1 : len(value)-1]
		switch {
		case conv == timeWithZone:
			return appendTimeWithZone(dst, inner), true
		case conv == floatOrSpecial || !isJSONNumber(inner):
			return append(dst, "null"...), false
		}
		return append(dst, inner...), true
	}
	return append(dst, value...), true
}

// appendTimeWithZone appends, as a JSON string, a timetz value as
// PostgreSQL prints it (HH:MM:SS[.ffffff]±HH[:MM[:SS]]) in Airbyte's
// time_with_timezone form, an RFC 3339 full-time: the offset always has its
// minutes ("12:34:56+02" -> "12:34:56+02:00"). An offset with seconds,
// which RFC 3339 cannot write, becomes the same time in UTC
// ("12:00:00+05:30:15" -> "06:29:45Z"), as PostgreSQL's AT TIME ZONE 'UTC'
// gives it. Anything else is passed through as it is.
func appendTimeWithZone(dst, t []byte) []byte {
	dst = append(dst, '"')
	i := bytes.LastIndexAny(t, "+-")
	if i < 0 {
		return append(append(dst, t...), '"')
	}
	clock, offset := t[:i], t[i+1:]
	parts := bytes.Split(offset, []byte{':'})
	for _, p := range parts {
		if len(p) != 2 || !isDigits(p) {
			return append(append(dst, t...), '"')
		}
	}
	switch len(parts) {
	case 1:
		dst = append(append(dst, t...), ":00"...)
	case 2:
		dst = append(dst, t...)
	case 3:
		dst = appendUTCClock(dst, clock, t[i] == '-', parts)
	default:
		dst = append(dst, t...)
	}
	return append(dst, '"')
}

// appendUTCClock appends clock (HH:MM:SS[.ffffff]) at UTC offset ±HH:MM:SS
// (negative when west) as the same time of day in UTC, with a Z.
func appendUTCClock(dst, clock []byte, west bool, offset [][]byte) []byte {
	frac := []byte(nil)
	if j := bytes.IndexByte(clock, '.'); j >= 0 {
		clock, frac = clock[:j], clock[j:]
	}
	hms := bytes.Split(clock, []byte{':'})
	if len(hms) != 3 {
		return append(append(append(dst, clock...), frac...), 'Z')
	}
	secs := func(p [][]byte) int {
		n := 0
		for _, x := range p {
			v, _ := strconv.Atoi(string(x))
			n = n*60 + v
		}
		return n
	}
	off := secs(offset)
	if west {
		off = -off
	}
	const day = 24 * 3600
	s := ((secs(hms)-off)%day + day) % day
	dst = fmt.Appendf(dst, "%02d:%02d:%02d", s/3600, s/60%60, s%60)
	return append(append(dst, frac...), 'Z')
}

// isDigits reports whether b is all ASCII digits.
func isDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// convertArray converts the elements of a (possibly nested) array.
func convertArray(dst, value []byte, conv conversion) ([]byte, bool) {
	ok := true
	dst = append(dst, '[')
	i, first := 1, true
	for i < len(value) {
		c := value[i]
		switch {
		case c == ']' || c == ',' || c == ' ':
			i++
			continue
		}
		end := elementEnd(value, i)
		if !first {
			dst = append(dst, ',')
		}
		first = false
		var elemOK bool
		dst, elemOK = convert(dst, value[i:end], conv)
		ok = ok && elemOK
		i = end
	}
	return append(dst, ']'), ok
}

// elementEnd returns where the array element starting at i ends. Elements
// of the arrays converted here are strings, numbers, null or arrays.
func elementEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		for j := i + 1; j < len(b); j++ {
			if b[j] == '\\' {
				j++
			} else if b[j] == '"' {
				return j + 1
			}
		}
		return len(b)
	case '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				j = elementEnd(b, j) - 1
			case '[':
				depth++
			case ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return len(b)
	}
	j := i
	for j < len(b) && b[j] != ',' && b[j] != ']' {
		j++
	}
	return j
}

// isJSONNumber reports whether s is a JSON number (so "NaN", "Infinity"
// and other non-finite spellings are not).
func isJSONNumber(s []byte) bool {
	if len(s) == 0 {
		return false
	}
	s = bytes.TrimPrefix(s, []byte{'-'})
	if len(s) == 0 || s[0] < '0' || s[0] > '9' || (s[0] == '0' && len(s) > 1 && s[1] >= '0' && s[1] <= '9') {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && c != '.' && c != 'e' && c != 'E' && c != '+' && c != '-' {
			return false
		}
	}
	return true
}
