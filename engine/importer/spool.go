package importer

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// JSON kinds of spooled values.
const (
	kindNull   = 'z'
	kindString = 's' // the decoded string
	kindNumber = 'n' // the number's JSON text
	kindBool   = 'b' // 't' or 'f'
	kindJSON   = 'j' // an object or array's JSON text
)

// spool holds one table's validated records between parsing the request
// and loading them, in memory up to spoolMemory bytes and in a temporary
// file beyond, so a request's size never shows in the engine's memory.
//
// Record: uvarint(field count), deleted byte, then per field
// uvarint(column index), kind byte, uvarint(len), bytes.
type spool struct {
	mem     [][]byte // chunks, so growing never copies
	memSize int
	file    *os.File
	w       *bufio.Writer
	n       int
	tmp     []byte
}

// spoolMemory is how much of a table's records a request keeps in memory
// before spilling to a file: a 10,000-record batch of typical rows fits.
const spoolMemory = 4 << 20

const spoolChunk = 256 << 10

// spoolLongValue is the length from which add copies a value on its own.
const spoolLongValue = 4 << 10

type field struct {
	col   int
	kind  byte
	value []byte
}

// add appends one record. It is assembled in tmp, but for long values,
// which are copied straight into memory or the file: tmp stays small.
func (s *spool) add(deleted bool, fields []field) error {
	size := 0
	for _, f := range fields {
		size += len(f.value)
	}
	h := s.tmp[:0]
	h = binary.AppendUvarint(h, uint64(len(fields)))
	if deleted {
		h = append(h, 1)
	} else {
		h = append(h, 0)
	}
	s.n++
	if s.w == nil && s.memSize+len(h)+size+len(fields)*(2*binary.MaxVarintLen64+1) > spoolMemory {
		if err := s.spill(); err != nil {
			return err
		}
	}
	for _, f := range fields {
		h = binary.AppendUvarint(h, uint64(f.col))
		h = append(h, f.kind)
		h = binary.AppendUvarint(h, uint64(len(f.value)))
		if len(f.value) < spoolLongValue {
			h = append(h, f.value...)
			continue
		}
		if err := s.write(h); err != nil {
			return err
		}
		if err := s.write(f.value); err != nil {
			return err
		}
		h = h[:0]
	}
	s.tmp = h
	return s.write(h)
}

// spill moves the spool to a temporary file.
func (s *spool) spill() error {
	f, err := os.CreateTemp("", "shapelog-import-")
	if err != nil {
		return err
	}
	_ = os.Remove(f.Name()) // unlinked: it disappears with the handle
	s.file, s.w = f, bufio.NewWriterSize(f, 256<<10)
	for _, c := range s.mem {
		if _, err := s.w.Write(c); err != nil {
			return err
		}
	}
	s.mem, s.memSize = nil, 0
	return nil
}

// write appends b to the file or the memory chunks.
func (s *spool) write(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if s.w != nil {
		_, err := s.w.Write(b)
		return err
	}
	if len(s.mem) == 0 || cap(s.mem[len(s.mem)-1])-len(s.mem[len(s.mem)-1]) < len(b) {
		s.mem = append(s.mem, make([]byte, 0, max(spoolChunk, len(b))))
	}
	last := &s.mem[len(s.mem)-1]
	*last = append(*last, b...)
	s.memSize += len(b)
	return nil
}

// reader replays the records.
func (s *spool) reader() (*bufio.Reader, error) {
	if s.w == nil {
		readers := make([]io.Reader, len(s.mem))
		for i, c := range s.mem {
			readers[i] = bytes.NewReader(c)
		}
		return bufio.NewReader(io.MultiReader(readers...)), nil
	}
	if err := s.w.Flush(); err != nil {
		return nil, err
	}
	if _, err := s.file.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return bufio.NewReaderSize(s.file, 256<<10), nil
}

func (s *spool) close() {
	if s.file != nil {
		s.file.Close()
	}
}

// record is one replayed record; fields alias a reused buffer.
type record struct {
	deleted bool
	fields  []field
	buf     []byte
}

func readRecord(r *bufio.Reader, rec *record) error {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return err
	}
	d, err := r.ReadByte()
	if err != nil {
		return err
	}
	rec.deleted = d == 1
	rec.fields = rec.fields[:0]
	rec.buf = rec.buf[:0]
	type span struct{ col, start, end int }
	var spans [64]span
	sp := spans[:0]
	kinds := make([]byte, 0, n)
	for i := uint64(0); i < n; i++ {
		col, err := binary.ReadUvarint(r)
		if err != nil {
			return err
		}
		kind, err := r.ReadByte()
		if err != nil {
			return err
		}
		l, err := binary.ReadUvarint(r)
		if err != nil {
			return err
		}
		start := len(rec.buf)
		if cap(rec.buf)-len(rec.buf) < int(l) {
			nb := make([]byte, len(rec.buf), 2*cap(rec.buf)+int(l))
			copy(nb, rec.buf)
			rec.buf = nb
		}
		rec.buf = rec.buf[:start+int(l)]
		if _, err := io.ReadFull(r, rec.buf[start:]); err != nil {
			return fmt.Errorf("spool truncated: %w", err)
		}
		sp = append(sp, span{int(col), start, start + int(l)})
		kinds = append(kinds, kind)
	}
	for i, s := range sp {
		rec.fields = append(rec.fields, field{col: s.col, kind: kinds[i], value: rec.buf[s.start:s.end]})
	}
	return nil
}
