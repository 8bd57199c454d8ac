package recordpb

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers the hand-written encoders and scanners use.
const (
	RecordNamespace   protowire.Number = 1
	RecordStream      protowire.Number = 2
	RecordEmittedAtMs protowire.Number = 3
	RecordPartitionID protowire.Number = 4
	RecordData        protowire.Number = 5 // also Document.data and ImportRecord.data
	RecordMetaField   protowire.Number = 6 // also Document.meta
	ImportRecordTable protowire.Number = 16

	MessageRecord          protowire.Number = 1
	MessageProtocolMessage protowire.Number = 2
	MessageProbe           protowire.Number = 3
)

// Value kinds: Value's field numbers.
const (
	KindBoolean         protowire.Number = 1
	KindString          protowire.Number = 2
	KindInteger         protowire.Number = 3
	KindBigInteger      protowire.Number = 4
	KindNumber          protowire.Number = 5
	KindBigDecimal      protowire.Number = 6
	KindDate            protowire.Number = 7
	KindTimeWithZone    protowire.Number = 8
	KindTimeWithoutZone protowire.Number = 9
	KindTimestampZone   protowire.Number = 10
	KindTimestampLocal  protowire.Number = 11
	KindJSON            protowire.Number = 12
	KindNull            protowire.Number = 13 // is_null
)

// tag is the one-byte tag of a field numbered below 16.
func tag(num protowire.Number, typ protowire.Type) byte { return byte(uint64(num)<<3 | uint64(typ)) }

// AppendDelimited appends msg with its varint length before it.
func AppendDelimited(dst, msg []byte) []byte {
	dst = protowire.AppendVarint(dst, uint64(len(msg)))
	return append(dst, msg...)
}

// AppendNull appends a data entry (field 5) holding a null Value.
func AppendNull(dst []byte) []byte {
	return append(dst, tag(RecordData, protowire.BytesType), 2, tag(KindNull, protowire.VarintType), 1)
}

// AppendBool appends a data entry holding a boolean.
func AppendBool(dst []byte, v bool) []byte {
	b := byte(0)
	if v {
		b = 1
	}
	return append(dst, tag(RecordData, protowire.BytesType), 2, tag(KindBoolean, protowire.VarintType), b)
}

// AppendInteger appends a data entry holding an integer (sint64).
func AppendInteger(dst []byte, v int64) []byte {
	return appendVarintKind(dst, KindInteger, protowire.EncodeZigZag(v))
}

// appendVarintKind appends a data entry whose value is varint kind field
// kind holding v.
func appendVarintKind(dst []byte, kind protowire.Number, v uint64) []byte {
	dst = protowire.AppendTag(dst, RecordData, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(1+protowire.SizeVarint(v)))
	dst = append(dst, tag(kind, protowire.VarintType))
	return protowire.AppendVarint(dst, v)
}

// AppendNumber appends a data entry holding a double.
func AppendNumber(dst []byte, v float64) []byte {
	dst = append(dst, tag(RecordData, protowire.BytesType), 9, tag(KindNumber, protowire.Fixed64Type))
	return protowire.AppendFixed64(dst, math.Float64bits(v))
}

// AppendBytesKind appends a data entry holding s as the string-typed kind
// (KindString, KindBigInteger, KindBigDecimal or KindJSON).
func AppendBytesKind(dst []byte, kind protowire.Number, s []byte) []byte {
	inner := 1 + protowire.SizeBytes(len(s))
	dst = protowire.AppendTag(dst, RecordData, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(inner))
	dst = append(dst, tag(kind, protowire.BytesType))
	dst = protowire.AppendVarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// BeginBytesKind starts a data entry of a string-typed kind whose content
// is appended after it and whose length is not known yet; EndBytesKind
// finishes it. It saves rendering a value twice to learn its length.
func BeginBytesKind(dst []byte, kind protowire.Number) ([]byte, int) {
	dst = append(dst, tag(RecordData, protowire.BytesType), 0, 0, 0, 0, 0, tag(kind, protowire.BytesType), 0, 0, 0, 0, 0)
	return dst, len(dst)
}

// EndBytesKind finishes the entry BeginBytesKind started at start: the two
// reserved lengths are written, and the content moved up to them.
func EndBytesKind(dst []byte, start int) []byte {
	content := len(dst) - start
	inner := 1 + protowire.SizeBytes(content)
	head := start - 12
	var lens [22]byte
	l := protowire.AppendVarint(lens[:0], uint64(inner))
	l = append(l, dst[start-6])
	l = protowire.AppendVarint(l, uint64(content))
	n := copy(dst[head+1:], l)
	copy(dst[head+1+n:], dst[start:])
	return dst[:head+1+n+content]
}

// ErrFrameTooLarge is returned for a frame over the reader's limit.
var ErrFrameTooLarge = errors.New("frame too large")

// ReadFrame reads one length-delimited frame into buf (grown as needed).
// It returns io.EOF at a clean end, io.ErrUnexpectedEOF within a frame.
func ReadFrame(r *bufio.Reader, buf []byte, limit int) ([]byte, error) {
	n, err := readVarint(r)
	if err != nil {
		return buf, err
	}
	if n > uint64(limit) {
		return buf, fmt.Errorf("%w: %d bytes (the limit is %d)", ErrFrameTooLarge, n, limit)
	}
	if uint64(cap(buf)) >= n {
		buf = buf[:n]
		_, err := io.ReadFull(r, buf)
		return buf, unexpected(err)
	}
	// A large frame grows as its bytes arrive: a length alone commits no
	// memory.
	buf = buf[:0]
	for remaining := n; remaining > 0; {
		chunk := min(remaining, 1<<20)
		buf = slices.Grow(buf, int(chunk))
		start := len(buf)
		buf = buf[:start+int(chunk)]
		if _, err := io.ReadFull(r, buf[start:]); err != nil {
			return buf, unexpected(err)
		}
		remaining -= chunk
	}
	return buf, nil
}

// unexpected is err, io.ErrUnexpectedEOF for an end within a frame.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func readVarint(r *bufio.Reader) (uint64, error) {
	var x uint64
	for i := 0; i < 10; i++ {
		b, err := r.ReadByte()
		if err != nil {
			if i > 0 && err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		if i == 9 && b > 1 {
			break // past 64 bits
		}
		x |= uint64(b&0x7f) << (7 * i)
		if b < 0x80 {
			return x, nil
		}
	}
	return 0, errors.New("malformed frame length")
}

// EachField calls fn for each field of an encoded message, with its number,
// wire type, and for length-delimited fields the content (for varint and
// fixed fields, raw holds the encoded value and v the decoded number).
func EachField(b []byte, fn func(num protowire.Number, typ protowire.Type, raw []byte, v uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var raw []byte
		var v uint64
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
			if n >= 0 {
				raw = b[:n]
			}
		case protowire.Fixed64Type:
			v, n = protowire.ConsumeFixed64(b)
			if n >= 0 {
				raw = b[:n]
			}
		case protowire.Fixed32Type:
			var v32 uint32
			v32, n = protowire.ConsumeFixed32(b)
			v = uint64(v32)
			if n >= 0 {
				raw = b[:n]
			}
		case protowire.BytesType:
			raw, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := fn(num, typ, raw, v); err != nil {
			return err
		}
	}
	return nil
}
