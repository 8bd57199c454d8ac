package importer

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strconv"
	"strings"

	"github.com/shapelog/shapelog/engine/catalog"
)

// rowWriter renders records as COPY text rows into w. It buffers about
// rowFlush bytes and passes a long value on in pieces as it renders it, so
// neither a row nor one huge value of it is ever held whole: a record's
// values are the only copy of it in memory.
type rowWriter struct {
	w   io.Writer
	buf []byte
	err error // w's first error: the COPY is over
}

// rowFlush is how much rendered text a rowWriter holds before writing.
const rowFlush = 64 << 10

func newRowWriter(w io.Writer) *rowWriter {
	return &rowWriter{w: w, buf: make([]byte, 0, 2*rowFlush)}
}

// flush writes what is buffered.
func (rw *rowWriter) flush() error {
	if len(rw.buf) > 0 && rw.err == nil {
		_, rw.err = rw.w.Write(rw.buf)
	}
	rw.buf = rw.buf[:0]
	return rw.err
}

// spill writes the buffer once it holds rowFlush bytes.
func (rw *rowWriter) spill() error {
	if len(rw.buf) < rowFlush {
		return rw.err
	}
	return rw.flush()
}

// row renders one record: every column, preceded by the sequence and
// deleted flag when staged. vals are the record's values by column (nil:
// absent); msg is its message index, for errors. A value the column
// cannot take is an *Error; any other error is the writer's.
func (rw *rowWriter) row(s *stream, staged bool, seq int, deleted bool, vals []*field, msg int32) error {
	if staged {
		rw.buf = strconv.AppendInt(rw.buf, int64(seq), 10)
		if deleted {
			rw.buf = append(rw.buf, "\tt\t"...)
		} else {
			rw.buf = append(rw.buf, "\tf\t"...)
		}
	}
	for i, f := range vals {
		if i > 0 {
			rw.buf = append(rw.buf, '\t')
		}
		if f == nil {
			rw.buf = append(rw.buf, `\N`...)
			continue
		}
		if err := rw.value(*f, s.cols[i].typ); err != nil {
			if rw.err != nil {
				return rw.err
			}
			return badRequest("InvalidValue", "message %d (table %s), field %s: %v (column type %s)", msg, s.t.api, s.cols[i].field, err, s.cols[i].typ)
		}
	}
	rw.buf = append(rw.buf, '\n')
	return rw.spill()
}

// value renders one value for COPY's text format into a column of type
// typ.
func (rw *rowWriter) value(f field, typ string) error {
	switch f.kind { // the common cases first
	case kindNull:
		rw.buf = append(rw.buf, `\N`...)
		return nil
	case kindNumber:
		if nonFinite(f.value) { // NaN, Infinity, -Infinity: only from protobuf bodies
			if !takesNonFinite(typ) {
				return fmt.Errorf("%s is not a value this column can hold", f.value)
			}
			rw.buf = append(rw.buf, f.value...)
			return nil
		}
		if !fracOrExp(f.value) || !isIntColumn(typ) {
			rw.buf = append(rw.buf, f.value...) // a number needs no escaping
			return nil
		}
	case kindString:
		switch typ {
		case typeJSONB, "json":
			return rw.jsonString(f.value)
		case typeBytea:
			return rw.bytea(f.value)
		}
		return rw.escaped(f.value)
	}
	v := f.value
	switch {
	case f.kind == kindJSON && strings.HasSuffix(typ, "[]"):
		var err error
		if v, err = catalog.AppendArrayLiteral(nil, f.value); err != nil {
			return err
		}
	case f.kind == kindNumber:
		v = integralText(f.value)
	case f.kind == kindBool && typ != typeBoolean:
		v = []byte(strconv.FormatBool(f.value[0] == 't'))
	}
	return rw.escaped(v)
}

// copyEscapes are the bytes COPY's text format escapes, and NUL, which
// PostgreSQL text cannot hold.
var copyEscapes = [256]byte{0: '0', '\\': '\\', '\n': 'n', '\r': 'r', '\t': 't'}

// mayEscape says whether any of the 8 bytes of x may be one of
// copyEscapes: a byte below 0x0e or a backslash (escaped skips 8 bytes at
// a time while none is).
func mayEscape(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	bs := x ^ ('\\' * ones) // a zero byte where x has a backslash
	return ((x-0x0e*ones)&^x|(bs-ones)&^bs)&highs != 0
}

// errNUL refuses a value PostgreSQL could not store.
var errNUL = errors.New(`a NUL character (\u0000) cannot be stored in PostgreSQL text`)

// escaped renders v escaped for COPY's text format, copying the runs
// between escapes whole.
func (rw *rowWriter) escaped(v []byte) error {
	for len(v) > 0 {
		part := v[:min(len(v), rowFlush)]
		v = v[len(part):]
		start := 0
		for i := 0; i < len(part); i++ {
			for i+8 <= len(part) && !mayEscape(binary.LittleEndian.Uint64(part[i:])) {
				i += 8
			}
			if i == len(part) {
				break
			}
			if c := part[i]; copyEscapes[c] != 0 {
				if c == 0 {
					return errNUL
				}
				rw.buf = append(rw.buf, part[start:i]...)
				rw.buf = append(rw.buf, '\\', copyEscapes[c])
				start = i + 1
			}
		}
		rw.buf = append(rw.buf, part[start:]...)
		if err := rw.spill(); err != nil {
			return err
		}
	}
	return nil
}

// jsonString renders the (valid UTF-8) string s as a JSON string for a
// json or jsonb column, escaped for COPY on top: JSON's escapes start with
// a backslash, which COPY doubles.
func (rw *rowWriter) jsonString(s []byte) error {
	const hexDigits = "0123456789abcdef"
	rw.buf = append(rw.buf, '"')
	for len(s) > 0 {
		part := s[:min(len(s), rowFlush)]
		s = s[len(part):]
		start := 0
		for i, c := range part {
			if c >= 0x20 && c != '"' && c != '\\' {
				continue
			}
			rw.buf = append(rw.buf, part[start:i]...)
			switch c {
			case '"':
				rw.buf = append(rw.buf, `\\"`...)
			case '\\':
				rw.buf = append(rw.buf, `\\\\`...)
			case '\n':
				rw.buf = append(rw.buf, `\\n`...)
			case '\r':
				rw.buf = append(rw.buf, `\\r`...)
			case '\t':
				rw.buf = append(rw.buf, `\\t`...)
			default:
				rw.buf = append(rw.buf, '\\', '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			start = i + 1
		}
		rw.buf = append(rw.buf, part[start:]...)
		if err := rw.spill(); err != nil {
			return err
		}
	}
	rw.buf = append(rw.buf, '"')
	return nil
}

// bytea renders base64 (padded or not) as bytea's hex input, \x….
func (rw *rowWriter) bytea(b64 []byte) error {
	enc := base64.StdEncoding
	if len(b64)%4 != 0 {
		enc = base64.RawStdEncoding
	}
	raw := make([]byte, enc.DecodedLen(len(b64)))
	n, err := enc.Decode(raw, b64)
	if err != nil {
		return fmt.Errorf("not base64: %v", err)
	}
	rw.buf = append(rw.buf, `\\x`...) // the backslash escaped for COPY
	for raw = raw[:n]; len(raw) > 0; {
		part := raw[:min(len(raw), rowFlush/2)]
		raw = raw[len(part):]
		rw.buf = hex.AppendEncode(rw.buf, part)
		if err := rw.spill(); err != nil {
			return err
		}
	}
	return nil
}

// fracOrExp says whether a number is written with a fraction or exponent.
func fracOrExp(num []byte) bool {
	for _, c := range num {
		if c == '.' || c == 'e' || c == 'E' {
			return true
		}
	}
	return false
}

// nonFinite says whether a number is NaN, Infinity or -Infinity, as
// protobuf bodies write them (JSON has no such numbers).
func nonFinite(num []byte) bool {
	return len(num) > 0 && (num[0] == 'N' || num[0] == 'I' || (num[0] == '-' && len(num) > 1 && num[1] == 'I'))
}

// takesNonFinite says whether a column of type typ can hold NaN and
// ±Infinity given as numbers: floats and numeric do, text keeps the word,
// and types read from strings are left to PostgreSQL; integers, booleans,
// dates, times, json and arrays cannot.
func takesNonFinite(typ string) bool {
	switch f, _ := classify(typ); f {
	case famFloat, famNumeric, famText, famString:
		return true
	}
	return false
}

func isIntColumn(typ string) bool {
	f, _ := classify(typ)
	return f == famInt
}

// integralText writes a whole number given as 1.0 or 2e3 (JSON Schema's
// "integer" accepts them) the way integer columns read numbers; any other
// number is left as it is, for PostgreSQL to refuse. The precision covers
// every digit written, so no fraction rounds away.
func integralText(num []byte) []byte {
	x, _, err := big.ParseFloat(string(num), 10, uint(4*len(num)+64), big.ToNearestEven)
	if err != nil || !x.IsInt() || x.MantExp(nil) > 64 {
		return num
	}
	return x.Append(nil, 'f', 0)
}

// copySource streams a stream's spooled records as COPY text rows: every
// column, preceded by the sequence and deleted flag when staged.
func copySource(s *stream, w *io.PipeWriter, staged bool, seq0 int) (err error) {
	defer func() { w.CloseWithError(err) }()
	rd, err := s.spool.reader()
	if err != nil {
		return err
	}
	rw := newRowWriter(w)
	var rec record
	vals := make([]*field, len(s.cols))
	for seq := 0; seq < s.spool.n; seq++ {
		if err := readRecord(rd, &rec); err != nil {
			return err
		}
		for i := range vals {
			vals[i] = nil
		}
		for i := range rec.fields {
			vals[rec.fields[i].col] = &rec.fields[i]
		}
		if err := rw.row(s, staged, seq0+seq, rec.deleted, vals, s.msgIdx[seq]); err != nil {
			return err
		}
	}
	return rw.flush()
}
