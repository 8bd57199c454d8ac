package recordpb

import (
	"errors"

	"google.golang.org/protobuf/encoding/protowire"
)

// Document field numbers.
const (
	DocumentTs        protowire.Number = 1
	DocumentDeleted   protowire.Number = 2
	DocumentTruncated protowire.Number = 3
)

// DocumentView is an encoded Document, read without copying.
type DocumentView struct {
	Ts        int64
	Deleted   bool
	Truncated bool
	// Data is the encoded data entries (tags included), as they are to be
	// copied into a Record; Values counts them.
	Data   []byte
	Values int
	// Meta is the content of the meta field, nil without one.
	Meta []byte
}

// ScanDocument reads an encoded Document. Its data entries must be
// contiguous, as the engine writes them.
func ScanDocument(b []byte) (DocumentView, error) {
	var d DocumentView
	dataStart, dataEnd := -1, -1
	for pos := 0; pos < len(b); {
		num, typ, n := protowire.ConsumeTag(b[pos:])
		if n < 0 {
			return d, protowire.ParseError(n)
		}
		fieldStart := pos
		pos += n
		switch {
		case num == RecordData && typ == protowire.BytesType:
			_, m := protowire.ConsumeBytes(b[pos:])
			if m < 0 {
				return d, protowire.ParseError(m)
			}
			if dataStart < 0 {
				dataStart = fieldStart
			} else if dataEnd != fieldStart {
				return d, errors.New("document data entries are not contiguous")
			}
			pos += m
			dataEnd = pos
			d.Values++
			continue
		case num == RecordMetaField && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b[pos:])
			if m < 0 {
				return d, protowire.ParseError(m)
			}
			d.Meta = v
			pos += m
			continue
		case typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(b[pos:])
			if m < 0 {
				return d, protowire.ParseError(m)
			}
			switch num {
			case DocumentTs:
				d.Ts = int64(v)
			case DocumentDeleted:
				d.Deleted = v != 0
			case DocumentTruncated:
				d.Truncated = v != 0
			}
			pos += m
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b[pos:])
		if m < 0 {
			return d, protowire.ParseError(m)
		}
		pos += m
	}
	if dataStart >= 0 {
		d.Data = b[dataStart:dataEnd]
	}
	return d, nil
}
