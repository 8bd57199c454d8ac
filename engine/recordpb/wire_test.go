package recordpb

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
)

// The hand-written encoders produce what the generated code decodes.
func TestAppendValuesDecode(t *testing.T) {
	var data []byte
	data = AppendNull(data)
	data = AppendBool(data, true)
	data = AppendBool(data, false)
	data = AppendInteger(data, -5)
	data = AppendInteger(data, math.MinInt64)
	data = AppendNumber(data, math.NaN())
	data = AppendNumber(data, math.Inf(-1))
	data = AppendBytesKind(data, KindBigDecimal, []byte("NaN"))
	data = AppendBytesKind(data, KindString, []byte(strings.Repeat("é", 100)))
	var start int
	data, start = BeginBytesKind(data, KindJSON)
	data = append(data, `{"a":[1,2]}`...)
	data = EndBytesKind(data, start)
	data, start = BeginBytesKind(data, KindString)
	data = append(data, strings.Repeat("x", 300)...)
	data = EndBytesKind(data, start)

	var rec Record
	if err := proto.Unmarshal(data, &rec); err != nil {
		t.Fatal(err)
	}
	v := rec.Data
	if len(v) != 11 {
		t.Fatalf("%d values", len(v))
	}
	if !v[0].IsNull || !v[1].GetBoolean() || v[2].GetKind() == nil || v[2].GetBoolean() {
		t.Fatalf("null/bool: %v %v %v", v[0], v[1], v[2])
	}
	if v[3].GetInteger() != -5 || v[4].GetInteger() != math.MinInt64 {
		t.Fatalf("integers: %v %v", v[3], v[4])
	}
	if !math.IsNaN(v[5].GetNumber()) || !math.IsInf(v[6].GetNumber(), -1) {
		t.Fatalf("numbers: %v %v", v[5], v[6])
	}
	if v[7].GetBigDecimal() != "NaN" || v[8].GetString_() != strings.Repeat("é", 100) {
		t.Fatalf("strings: %v %v", v[7], v[8])
	}
	if string(v[9].GetJson()) != `{"a":[1,2]}` || v[10].GetString_() != strings.Repeat("x", 300) {
		t.Fatalf("begun values: %q %q", v[9].GetJson(), v[10].GetString_())
	}
}

func TestReadFrame(t *testing.T) {
	var body []byte
	body = AppendDelimited(body, []byte("one"))
	body = AppendDelimited(body, nil)
	body = AppendDelimited(body, bytes.Repeat([]byte{7}, 200))
	r := bufio.NewReader(bytes.NewReader(body))
	var buf []byte
	var got []string
	for {
		f, err := ReadFrame(r, buf, 1<<10)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(f))
		buf = f
	}
	if len(got) != 3 || got[0] != "one" || got[1] != "" || len(got[2]) != 200 {
		t.Fatalf("%q", got)
	}
	if _, err := ReadFrame(bufio.NewReader(bytes.NewReader(body[:len(body)-1])), nil, 1<<10); err != nil {
		// first frame reads fine
		t.Fatal(err)
	}
	if _, err := ReadFrame(bufio.NewReader(bytes.NewReader(body[5:])), nil, 100); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("limit: %v", err)
	}
	short := AppendDelimited(nil, []byte("abcdef"))[:4]
	if _, err := ReadFrame(bufio.NewReader(bytes.NewReader(short)), nil, 100); err != io.ErrUnexpectedEOF {
		t.Fatalf("short: %v", err)
	}
}

func TestScanDocument(t *testing.T) {
	doc := &Document{Ts: 1700000000123456789, Deleted: true, Data: []*Value{{Kind: &Value_Integer{Integer: 7}}, {IsNull: true}},
		Meta: &RecordMeta{Changes: []*FieldChange{{Field: "f", Change: ChangeType_NULLED, Reason: ChangeReason_SOURCE_SERIALIZATION_ERROR}}}}
	b, err := proto.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	d, err := ScanDocument(b)
	if err != nil {
		t.Fatal(err)
	}
	if d.Ts != doc.Ts || !d.Deleted || d.Truncated || d.Values != 2 || d.Meta == nil {
		t.Fatalf("%+v", d)
	}
	var rec Record
	if err := proto.Unmarshal(d.Data, &rec); err != nil || len(rec.Data) != 2 || rec.Data[0].GetInteger() != 7 || !rec.Data[1].IsNull {
		t.Fatalf("data copied into a record: %v %v", &rec, err)
	}
	if _, err := ScanDocument(b[:len(b)-1]); err == nil {
		t.Fatal("a cut document scanned")
	}
}

func TestSortFieldNames(t *testing.T) {
	names := []string{"b", "_ab_cdc_lsn", "A", "a", "\U0001F600", "\uFF21", "ab", "_ab_cdc_deleted_at", ""}
	SortFieldNames(names)
	want := []string{"", "A", "_ab_cdc_deleted_at", "_ab_cdc_lsn", "a", "ab", "b", "\U0001F600", "\uFF21"}
	if strings.Join(names, "|") != strings.Join(want, "|") {
		t.Fatalf("%q", names)
	}
}

func TestTemporalKinds(t *testing.T) {
	var data []byte
	data = AppendDate(data, -719528)
	data = AppendTimeWithoutZone(data, 86399999999999)
	data = AppendTimeWithZone(data, 45296000000000, -19800)
	data = AppendTimestampLocal(data, 19723, 1)
	data = AppendTimestampWithZone(data, -62135596800, 999999000, 0)
	var rec Record
	if err := proto.Unmarshal(data, &rec); err != nil {
		t.Fatal(err)
	}
	v := rec.Data
	if v[0].GetDate() != -719528 || v[1].GetTimeWithoutTimezone() != 86399999999999 {
		t.Fatalf("%v %v", v[0], v[1])
	}
	if tz := v[2].GetTimeWithTimezone(); tz.GetNanosOfDay() != 45296000000000 || tz.GetOffsetSeconds() != -19800 {
		t.Fatalf("%v", v[2])
	}
	if ts := v[3].GetTimestampWithoutTimezone(); ts.GetDateDaysSinceEpoch() != 19723 || ts.GetNanosOfDay() != 1 {
		t.Fatalf("%v", v[3])
	}
	if ts := v[4].GetTimestampWithTimezone(); ts.GetEpochSecond() != -62135596800 || ts.GetNano() != 999999000 || ts.GetOffsetSeconds() != 0 || v[4].GetKind() == nil {
		t.Fatalf("%v", v[4])
	}
	names := []string{"\U0001F601", "\U0001F600"}
	SortFieldNames(names)
	if names[0] != "\U0001F600" {
		t.Fatalf("same high surrogate: %q", names)
	}
}

// A length past 64 bits is refused, and a large frame is read whole.
func TestReadFrameLengths(t *testing.T) {
	over := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02}
	if _, err := ReadFrame(bufio.NewReader(bytes.NewReader(over)), nil, 1<<30); err == nil || err == io.EOF {
		t.Fatalf("an overflowing length: %v", err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 200_000) // 3.2 MB: several chunks
	f, err := ReadFrame(bufio.NewReader(bytes.NewReader(AppendDelimited(nil, big))), make([]byte, 10), 1<<30)
	if err != nil || !bytes.Equal(f, big) {
		t.Fatalf("large frame: %d bytes, %v", len(f), err)
	}
	claims := AppendDelimited(nil, big)[:100] // a length with few bytes behind it
	if _, err := ReadFrame(bufio.NewReader(bytes.NewReader(claims)), nil, 1<<30); err != io.ErrUnexpectedEOF {
		t.Fatalf("a frame cut short: %v", err)
	}
}
