package main

import (
	"encoding/json"
	"fmt"

	"github.com/shapelog/shapelog/engine/recordpb"
	"google.golang.org/protobuf/encoding/protowire"
)

// Slots of a record's value that are not the engine's: the CDC fields the
// source adds, and fields the engine no longer sends (null).
const (
	slotDeletedAt = -1 - iota
	slotLSN
	slotTruncated
	slotUpdatedAt
	slotAbsent
)

// protoRecords builds a stream's protobuf records from the engine's
// protobuf documents: the engine encoded every value, so a record is the
// stream's fields around a copy of the document's data, with the CDC
// values put where their names sort.
type protoRecords struct {
	targets []string // the configured stream's fields, in Airbyte's order
	head    []byte   // stream_namespace and stream_name, encoded
	table   string   // the engine table of the current layout
	plan    []int    // per target: the engine's value index, or a slot
	// direct is set when the targets are CDC fields then the engine's
	// values in their order: the data is copied whole after direct CDC values.
	direct  int
	entries [][]byte
	rec     []byte
}

func newProtoRecords(s *stream, schema json.RawMessage) (*protoRecords, error) {
	var js struct {
		Properties map[string]json.RawMessage `json:"properties"`
	}
	// The configured schema, as the destination reads it: the values'
	// positions follow its fields.
	if err := json.Unmarshal(schema, &js); err != nil {
		return nil, fmt.Errorf("its json_schema is not a JSON Schema object: %w", err)
	}
	if len(js.Properties) == 0 {
		return nil, fmt.Errorf("its json_schema has no properties: refresh the source schema")
	}
	p := &protoRecords{direct: -1}
	for name := range js.Properties {
		p.targets = append(p.targets, name)
	}
	recordpb.SortFieldNames(p.targets)
	if s.desc.Namespace != nil {
		p.head = protowire.AppendTag(p.head, recordpb.RecordNamespace, protowire.BytesType)
		p.head = protowire.AppendString(p.head, *s.desc.Namespace)
	}
	p.head = protowire.AppendTag(p.head, recordpb.RecordStream, protowire.BytesType)
	p.head = protowire.AppendString(p.head, s.desc.Name)
	return p, nil
}

// setFields takes the layout of the documents that follow.
func (p *protoRecords) setFields(f *recordpb.Fields) {
	p.table = f.Table
	index := make(map[string]int, len(f.Names))
	for i, n := range f.Names {
		index[columnName(n)] = i
	}
	p.plan = p.plan[:0]
	for _, t := range p.targets {
		slot := slotAbsent
		switch t {
		case fieldDeletedAt:
			slot = slotDeletedAt
		case fieldLSN:
			slot = slotLSN
		case fieldTruncated:
			slot = slotTruncated
		case fieldUpdatedAt:
			slot = slotUpdatedAt
		default:
			if i, ok := index[t]; ok {
				slot = i
			}
		}
		p.plan = append(p.plan, slot)
	}
	// Direct: some CDC slots, then 0..n-1 in order, covering every value.
	p.direct = -1
	k := 0
	for k < len(p.plan) && p.plan[k] < 0 && p.plan[k] != slotAbsent {
		k++
	}
	if len(p.plan)-k == len(f.Names) {
		ok := true
		for i := k; i < len(p.plan); i++ {
			ok = ok && p.plan[i] == i-k
		}
		if ok {
			p.direct = k
		}
	}
}

// appendRecord appends the length-delimited data-channel message of one
// document (an encoded recordpb.Document).
func (p *protoRecords) appendRecord(dst, doc []byte, emittedAt int64, partition string) ([]byte, error) {
	if p.plan == nil {
		return dst, fmt.Errorf("a document came before its fields")
	}
	d, err := recordpb.ScanDocument(doc)
	if err != nil {
		return dst, err
	}
	rec := append(p.rec[:0], p.head...)
	rec = protowire.AppendTag(rec, recordpb.RecordEmittedAtMs, protowire.VarintType)
	rec = protowire.AppendVarint(rec, uint64(emittedAt))
	rec = protowire.AppendTag(rec, recordpb.RecordPartitionID, protowire.BytesType)
	rec = protowire.AppendString(rec, partition)
	if p.direct >= 0 {
		for _, slot := range p.plan[:p.direct] {
			rec = appendCDC(rec, slot, &d)
		}
		rec = append(rec, d.Data...)
	} else {
		p.entries = p.entries[:0]
		err := recordpb.EachField(d.Data, func(_ protowire.Number, _ protowire.Type, raw []byte, _ uint64) error {
			p.entries = append(p.entries, raw)
			return nil
		})
		if err != nil {
			return dst, err
		}
		for _, slot := range p.plan {
			switch {
			case slot >= len(p.entries):
				return dst, fmt.Errorf("the document has %d values, its fields more", len(p.entries))
			case slot >= 0:
				rec = protowire.AppendTag(rec, recordpb.RecordData, protowire.BytesType)
				rec = protowire.AppendBytes(rec, p.entries[slot])
			default:
				rec = appendCDC(rec, slot, &d)
			}
		}
	}
	if d.Meta != nil {
		rec = protowire.AppendTag(rec, recordpb.RecordMetaField, protowire.BytesType)
		rec = protowire.AppendBytes(rec, d.Meta)
	}
	p.rec = rec
	dst = protowire.AppendVarint(dst, uint64(1+protowire.SizeBytes(len(rec))))
	dst = protowire.AppendTag(dst, recordpb.MessageRecord, protowire.BytesType)
	return protowire.AppendBytes(dst, rec), nil
}

// appendCDC appends the value of a CDC slot (or null) for document d.
func appendCDC(dst []byte, slot int, d *recordpb.DocumentView) []byte {
	switch slot {
	case slotLSN:
		return recordpb.AppendInteger(dst, d.Ts)
	case slotUpdatedAt:
		return appendTimestamp(dst, d.Ts)
	case slotDeletedAt:
		if d.Deleted {
			return appendTimestamp(dst, d.Ts)
		}
	case slotTruncated:
		if d.Truncated {
			return recordpb.AppendBool(dst, true)
		}
	}
	return recordpb.AppendNull(dst)
}

// appendTimestamp appends a commit time (nanoseconds since the epoch) as
// the CDC fields carry it: timestamp_with_timezone, in UTC.
func appendTimestamp(dst []byte, ts int64) []byte {
	sec, nano := ts/1e9, ts%1e9
	if nano < 0 {
		sec, nano = sec-1, nano+1e9
	}
	return recordpb.AppendTimestampWithZone(dst, sec, uint32(nano), 0)
}
