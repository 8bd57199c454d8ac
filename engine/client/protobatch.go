package client

import (
	"encoding/json"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/shapelog/shapelog/engine/recordpb"
)

// ProtobufContentType is the Content-Type of an import_airbyte_records body
// in protobuf.
const ProtobufContentType = "application/x-protobuf"

// ProtoBatch is an import_airbyte_records body in protobuf, built one
// record at a time from encoded Airbyte records (recordpb.Record, as a
// data channel carries them): each record's bytes are copied as they are,
// with the values the caller adds and the record's table, into the frame
// that is sent; the engine decodes the values. Reset keeps the buffers for
// the next batch.
//
// The body is an ImportHeader frame (each declared table: its name, its
// declaration as the JSON body's `tables` holds it, and the field of each
// position of its records' data), then one ImportRecord frame per record.
type ProtoBatch struct {
	tables  []protoTable
	index   map[string]uint32
	records []byte   // the ImportRecord frames
	tableOf []uint32 // each record's table
	extra   []byte   // the extra data entries of the record being added
}

type protoTable struct {
	name        string
	declaration []byte // {"primaryKey":…,"jsonSchema":…}
	fields      []string
}

// Declare gives table's primary key, JSON Schema and the field of each
// position of its records' data (the record's own values, then those the
// extra function of AddRecordBytes appends), and returns the index its
// records are added with. Declaring a table again replaces its spec and
// fields, for the records already added too, and keeps its index.
func (b *ProtoBatch) Declare(table string, spec TableSpec, fields []string) uint32 {
	// The declaration is written by hand so that it cannot fail: the JSON
	// Schema goes as it is, as records do (the engine checks both).
	pk, _ := json.Marshal(spec.PrimaryKey)
	decl := append(append([]byte(`{"primaryKey":`), pk...), `,"jsonSchema":`...)
	if len(spec.JSONSchema) == 0 {
		decl = append(decl, "null"...)
	} else {
		decl = append(decl, spec.JSONSchema...)
	}
	decl = append(decl, '}')
	t := protoTable{name: table, declaration: decl, fields: append([]string(nil), fields...)}
	if i, ok := b.index[table]; ok {
		b.tables[i] = t
		return i
	}
	if b.index == nil {
		b.index = map[string]uint32{}
	}
	i := uint32(len(b.tables))
	b.index[table] = i
	b.tables = append(b.tables, t)
	return i
}

// Declared returns the index of a table declared since the last Reset.
func (b *ProtoBatch) Declared(table string) (uint32, bool) {
	i, ok := b.index[table]
	return i, ok
}

// AddRecordBytes appends a record of the table declared with index:
// record is an encoded recordpb.Record, copied as it is (the engine reads
// its data and ignores its other fields), and extra, when not nil, appends
// more data entries (recordpb.AppendNull, AppendInteger, …: the values of
// the declared fields after the record's own).
func (b *ProtoBatch) AddRecordBytes(index uint32, record []byte, extra func(dst []byte) []byte) {
	b.extra = b.extra[:0]
	if extra != nil {
		b.extra = extra(b.extra)
	}
	// The table comes last, and always (a zero too): the last value of a
	// field wins, so a table field the record carried cannot send it
	// elsewhere.
	size := len(record) + len(b.extra) + protowire.SizeTag(recordpb.ImportRecordTable) + protowire.SizeVarint(uint64(index))
	b.records = protowire.AppendVarint(b.records, uint64(size))
	b.records = append(b.records, record...)
	b.records = append(b.records, b.extra...)
	b.records = protowire.AppendTag(b.records, recordpb.ImportRecordTable, protowire.VarintType)
	b.records = protowire.AppendVarint(b.records, uint64(index))
	b.tableOf = append(b.tableOf, index)
}

// Len is the number of records.
func (b *ProtoBatch) Len() int { return len(b.tableOf) }

// Size is the records' size in bytes (their frames).
func (b *ProtoBatch) Size() int { return len(b.records) }

// Table is the table of record i.
func (b *ProtoBatch) Table(i int) string { return b.tables[b.tableOf[i]].name }

// Reset empties b, declarations included, keeping its buffers.
func (b *ProtoBatch) Reset() {
	b.tables = b.tables[:0]
	clear(b.index)
	b.records, b.tableOf = b.records[:0], b.tableOf[:0]
}

// Bytes is the whole body, in a new buffer (ImportProtoBatch sends it
// without that copy).
func (b *ProtoBatch) Bytes() []byte {
	head := b.header()
	return append(append(make([]byte, 0, len(head)+len(b.records)), head...), b.records...)
}

// header is the body's first frame, the ImportHeader.
func (b *ProtoBatch) header() []byte {
	const (
		headerTables = 1 // ImportHeader.tables
		tableName    = 1 // ImportTable's fields
		tableDecl    = 2
		tableFields  = 3
	)
	tableSize := func(t *protoTable) int {
		n := protowire.SizeTag(tableName) + protowire.SizeBytes(len(t.name)) +
			protowire.SizeTag(tableDecl) + protowire.SizeBytes(len(t.declaration))
		for _, f := range t.fields {
			n += protowire.SizeTag(tableFields) + protowire.SizeBytes(len(f))
		}
		return n
	}
	size := 0
	for i := range b.tables {
		size += protowire.SizeTag(headerTables) + protowire.SizeBytes(tableSize(&b.tables[i]))
	}
	h := make([]byte, 0, protowire.SizeVarint(uint64(size))+size)
	h = protowire.AppendVarint(h, uint64(size))
	for i := range b.tables {
		t := &b.tables[i]
		h = protowire.AppendTag(h, headerTables, protowire.BytesType)
		h = protowire.AppendVarint(h, uint64(tableSize(t)))
		h = protowire.AppendTag(h, tableName, protowire.BytesType)
		h = protowire.AppendString(h, t.name)
		h = protowire.AppendTag(h, tableDecl, protowire.BytesType)
		h = protowire.AppendBytes(h, t.declaration)
		for _, f := range t.fields {
			h = protowire.AppendTag(h, tableFields, protowire.BytesType)
			h = protowire.AppendString(h, f)
		}
	}
	return h
}
