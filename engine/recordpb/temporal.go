package recordpb

import "google.golang.org/protobuf/encoding/protowire"

// The temporal kinds, typed as Airbyte's destinations require for fields
// declared with an airbyte_type (they refuse a string there).

// AppendDate appends a data entry holding a date: days since 1970-01-01.
func AppendDate(dst []byte, days int64) []byte {
	return appendVarintKind(dst, KindDate, protowire.EncodeZigZag(days))
}

// AppendTimeWithoutZone appends a data entry holding a time of day in
// nanoseconds.
func AppendTimeWithoutZone(dst []byte, nanos uint64) []byte {
	return appendVarintKind(dst, KindTimeWithoutZone, nanos)
}

// AppendTimeWithZone appends a data entry holding a time of day in
// nanoseconds with its UTC offset in seconds.
func AppendTimeWithZone(dst []byte, nanos uint64, offset int32) []byte {
	var inner [24]byte
	b := protowire.AppendTag(inner[:0], 1, protowire.VarintType)
	b = protowire.AppendVarint(b, nanos)
	b = appendNonZero(b, 2, protowire.EncodeZigZag(int64(offset)))
	return appendMessageKind(dst, KindTimeWithZone, b)
}

// AppendTimestampLocal appends a data entry holding a timestamp without
// time zone: its date in days since 1970-01-01 and its time of day.
func AppendTimestampLocal(dst []byte, days int64, nanos uint64) []byte {
	var inner [24]byte
	b := appendNonZero(inner[:0], 1, protowire.EncodeZigZag(days))
	b = appendNonZero(b, 2, nanos)
	return appendMessageKind(dst, KindTimestampLocal, b)
}

// AppendTimestampWithZone appends a data entry holding an instant (seconds
// since the epoch and nanoseconds) and the UTC offset it was written with.
func AppendTimestampWithZone(dst []byte, sec int64, nano uint32, offset int32) []byte {
	var inner [32]byte
	b := appendNonZero(inner[:0], 1, protowire.EncodeZigZag(sec))
	b = appendNonZero(b, 2, uint64(nano))
	b = appendNonZero(b, 3, protowire.EncodeZigZag(int64(offset)))
	return appendMessageKind(dst, KindTimestampZone, b)
}

// appendNonZero appends varint field num unless v is 0, which proto3
// leaves out.
func appendNonZero(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

// appendMessageKind appends a data entry whose kind is the message msg.
func appendMessageKind(dst []byte, kind protowire.Number, msg []byte) []byte {
	inner := 1 + protowire.SizeBytes(len(msg))
	dst = protowire.AppendTag(dst, RecordData, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(inner))
	dst = append(dst, tag(kind, protowire.BytesType))
	return protowire.AppendBytes(dst, msg)
}
