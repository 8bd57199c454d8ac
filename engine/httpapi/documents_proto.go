package httpapi

import (
	"bytes"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/shapelog/shapelog/engine/catalog"
	"github.com/shapelog/shapelog/engine/recordpb"
)

// Export answers in protobuf (format=protobuf, or Accept:
// application/x-protobuf) are length-delimited recordpb.ExportFrame
// messages: a Fields frame before the first document of each table layout,
// a Document frame per document, and a PageEnd frame last. A renderer in
// protobuf mode writes the Fields and Document frames, the pageWriter the
// rest; the loops that read pages are the JSON answers' own.

// protobufContentType is the media type of protobuf answers.
const protobufContentType = "application/x-protobuf"

// frameDocument is ExportFrame's document field (the Fields and PageEnd
// frames are marshalled from the generated types).
const frameDocument protowire.Number = 2

// protoLayout is what a renderer needs to write one table layout's
// documents as protobuf frames.
type protoLayout struct {
	// order is the column of each field, in the order of the Fields
	// frame: by column name in UTF-16 code units, as Airbyte sorts a
	// record's fields (recordpb.CompareFieldNames; ties keep column order).
	order []int
	// fields is the Fields frame, length-delimited.
	fields []byte
	// changes[j] is field j's entry in a RecordMeta (changes, field 1):
	// {column, NULLED, SOURCE_SERIALIZATION_ERROR}, named as Airbyte names
	// the field (the column, not the exported field name).
	changes [][]byte
}

// newExportRenderer returns a renderer of t's documents in format f, or in
// protobuf frames.
func newExportRenderer(t *catalog.Table, f catalog.Format, protobuf bool) *renderer {
	r := newRenderer(t, f)
	if !protobuf {
		return r
	}
	pb := &protoLayout{order: make([]int, len(t.Columns))}
	for i := range pb.order {
		pb.order[i] = i
	}
	slices.SortStableFunc(pb.order, func(a, b int) int { return recordpb.CompareFieldNames(t.Columns[a].Name, t.Columns[b].Name) })
	names := make([]string, len(pb.order))
	for j, i := range pb.order {
		names[j] = fieldName(t.Columns[i].Name)
		change, _ := proto.Marshal(&recordpb.FieldChange{Field: t.Columns[i].Name, Change: recordpb.ChangeType_NULLED, Reason: recordpb.ChangeReason_SOURCE_SERIALIZATION_ERROR})
		pb.changes = append(pb.changes, protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), change))
	}
	frame, _ := proto.Marshal(&recordpb.ExportFrame{Kind: &recordpb.ExportFrame_Fields{Fields: &recordpb.Fields{Table: catalog.APIName(t.Schema, t.Name), Names: names}}})
	pb.fields = recordpb.AppendDelimited(nil, frame)
	r.pb = pb
	return r
}

// beginFrame starts a length-delimited ExportFrame holding message field
// num, whose content the caller appends: room is left for the frame's
// length and the field's, which endFrame fills in.
func beginFrame(dst []byte, num protowire.Number) ([]byte, int) {
	dst = append(dst, 0, 0, 0, 0, 0, byte(protowire.EncodeTag(num, protowire.BytesType)), 0, 0, 0, 0, 0)
	return dst, len(dst)
}

// endFrame finishes the frame beginFrame started at start: the lengths
// are written and the content moved up to them.
func endFrame(dst []byte, start int) []byte {
	content := len(dst) - start
	var head [11]byte
	h := protowire.AppendVarint(head[:0], uint64(1+protowire.SizeBytes(content)))
	h = append(h, dst[start-6])
	h = protowire.AppendVarint(h, uint64(content))
	base := start - 11
	n := copy(dst[base:], h)
	copy(dst[base+n:], dst[start:])
	return dst[:base+n+content]
}

// Document's fields, besides data and meta.
var (
	docTsTag        = byte(protowire.EncodeTag(recordpb.DocumentTs, protowire.VarintType))
	docDeletedTag   = byte(protowire.EncodeTag(recordpb.DocumentDeleted, protowire.VarintType))
	docTruncatedTag = byte(protowire.EncodeTag(recordpb.DocumentTruncated, protowire.VarintType))
)

// appendProtoDoc writes one document as a Document frame: its values in
// the Fields order, a tombstone's only for the key (null elsewhere), and a
// meta naming the fields whose value was nulled.
func (r *renderer) appendProtoDoc(dst []byte, kind docKind, ts int64, values [][]byte) ([]byte, error) {
	frameStart := len(dst)
	dst, start := beginFrame(dst, frameDocument)
	dst = append(dst, docTsTag)
	dst = protowire.AppendVarint(dst, uint64(ts))
	if kind == docTombstone {
		dst = append(dst, docDeletedTag, 1)
	}
	var nulledBuf [8]int
	nulled := nulledBuf[:0]
	for j, i := range r.pb.order {
		var v []byte
		if i < len(values) && (kind != docTombstone || r.isKey[i]) {
			v = values[i]
		}
		var n bool
		var err error
		if dst, n, err = catalog.AppendProtoValue(dst, r.table.Columns[i].Type, v); err != nil {
			return dst[:frameStart], err
		}
		if n {
			nulled = append(nulled, j)
		}
	}
	if len(nulled) > 0 {
		size := 0
		for _, j := range nulled {
			size += len(r.pb.changes[j])
		}
		dst = protowire.AppendTag(dst, recordpb.RecordMetaField, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(size))
		for _, j := range nulled {
			dst = append(dst, r.pb.changes[j]...)
		}
	}
	return endFrame(dst, start), nil
}

// appendProtoTruncate writes the marker a TRUNCATE leaves as a Document
// frame: deleted and truncated, every value null.
func (r *renderer) appendProtoTruncate(dst []byte, ts int64) []byte {
	dst, start := beginFrame(dst, frameDocument)
	dst = append(dst, docTsTag)
	dst = protowire.AppendVarint(dst, uint64(ts))
	dst = append(dst, docDeletedTag, 1, docTruncatedTag, 1)
	for range r.pb.order {
		dst = recordpb.AppendNull(dst)
	}
	return endFrame(dst, start)
}

// startDoc appends what comes before a document in a buffer of this
// renderer's documents (a snapshot page): in JSON a comma after the first,
// in protobuf the Fields frame before the first.
func (r *renderer) startDoc(buf []byte) []byte {
	switch {
	case r.pb != nil && len(buf) == 0:
		return append(buf, r.pb.fields...)
	case r.pb == nil && len(buf) > 0:
		return append(buf, ',')
	}
	return buf
}

// startValues starts an answer's documents: `{"values":[` in JSON, nothing
// in protobuf.
func (p *pageWriter) startValues(protobuf bool) {
	p.proto = protobuf
	if !protobuf {
		p.buf = append(p.buf, `{"values":[`...)
	}
}

// startDoc appends what comes before a document of rend in an answer that
// may hold several layouts (document_deltas): in JSON a comma after the
// first document; in protobuf the Fields frame of rend's layout unless it
// is the one named last.
func (p *pageWriter) startDoc(rend *renderer, first bool) {
	if !p.proto {
		if !first {
			p.buf = append(p.buf, ',')
		}
		return
	}
	if rend != p.layout && (p.layout == nil || !bytes.Equal(rend.pb.fields, p.layout.pb.fields)) {
		p.buf = append(p.buf, rend.pb.fields...)
	}
	p.layout = rend
}

// contentType is the answer's media type.
func (p *pageWriter) contentType() string {
	if p.proto {
		return protobufContentType
	}
	return "application/json"
}

// appendPageEnd appends the PageEnd frame: snapshot (list_snapshot only),
// cursor (nil: null) and hasMore.
func appendPageEnd(dst []byte, snapshot *int64, cursor *string, hasMore bool) []byte {
	frame, _ := proto.Marshal(&recordpb.ExportFrame{Kind: &recordpb.ExportFrame_End{End: &recordpb.PageEnd{Snapshot: snapshot, Cursor: cursor, HasMore: hasMore}}})
	return recordpb.AppendDelimited(dst, frame)
}
