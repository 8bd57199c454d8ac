package importer

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/shapelog/shapelog/engine/recordpb"
)

// TestProtobufCopyText renders tricky values of a protobuf body as the
// live copy sends them (COPY text, staged: with the deleted flag), and the
// refusals of invalid ones, against a golden file: the bytes PostgreSQL
// gets and what clients are told must not change with the decoder's speed.
func TestProtobufCopyText(t *testing.T) {
	const decl = `{"primaryKey":[["id"]],"jsonSchema":{"type":"object","required":["id"],"properties":{
	"id":{"type":"integer"},"s":{"type":["null","string"]},"n":{"type":["null","number"]},
	"nb":{"type":["null","number"],"airbyte_type":"integer"},"b":{"type":["null","boolean"]},
	"d":{"type":["null","string"],"format":"date"},
	"ts":{"type":["null","string"],"format":"date-time","airbyte_type":"timestamp_without_timezone"},
	"tstz":{"type":["null","string"],"format":"date-time","airbyte_type":"timestamp_with_timezone"},
	"tm":{"type":["null","string"],"format":"time","airbyte_type":"time_without_timezone"},
	"tmtz":{"type":["null","string"],"format":"time","airbyte_type":"time_with_timezone"},
	"j":{"type":["null","object","array"]},"any":{},
	"by":{"type":["null","string"],"contentEncoding":"base64"}}}}`
	fields := []string{"id", "s", "n", "nb", "b", "d", "ts", "tstz", "tm", "tmtz", "j", "any", "by", "extra", "_ab_cdc_deleted_at"}
	row := func(id int64, vals map[string]*recordpb.Value) []*recordpb.Value {
		out := []*recordpb.Value{vInt(id)}
		for _, f := range fields[1:] {
			v := vals[f]
			if v == nil {
				v = vNull()
			}
			out = append(out, v)
		}
		return out
	}
	huge := strings.Repeat("ab\\c\td\ne\rf 😀 ", 20000)
	rows := []map[string]*recordpb.Value{
		{}, // all null
		{"s": &recordpb.Value{}, "n": &recordpb.Value{}, "j": &recordpb.Value{}}, // nothing set: null too
		{"s": vStr("héllo ✓ 😀 \"quoted\" 'single'"), "n": vDec("1.5"), "nb": vInt(-9223372036854775808), "b": vBool(true), "any": vStr("x\ty\\z\"\x01")},
		{"s": vStr("a\\b\tc\nd\re\x01\x7f"), "n": vNum(math.NaN()), "nb": vDec("2e3"), "b": vBool(false), "extra": vStr("new\\field")},
		{"s": vStr(huge), "n": vNum(math.Inf(1)), "nb": vNum(2000), "any": vStr(huge), "extra": vNum(1.25)},
		{"s": vStr(""), "n": vNum(math.Inf(-1)), "nb": vBigInt("12345678901234567890123")},
		{"n": vDec("NaN"), "nb": vDec("-0"), "j": vJSON(" { \"a\" : \"\\n\\\\\" , \"b\" : [1, 2.5e3, null, true] } ")},
		{"n": vDec("Infinity"), "j": vJSON(`[1,"\t",{"k":"é"}]`), "any": vJSON(`"just a string"`)},
		{"n": vDec("-Infinity"), "any": vJSON(`12.50`), "extra": vJSON(`{"x":1}`)},
		{"n": vDec("-123456789012345678901234567890.123456789012345678901234567890"), "any": vNum(1e21)},
		{"n": vNum(1e-7), "any": vNum(math.Copysign(0, -1)), "nb": vNum(0)},
		{"n": vNum(5e-324), "any": vNum(123456789012345680000), "by": vStr("aGk=")},
		{"n": vNum(1.7976931348623157e308), "by": vStr("aGk"), "any": vBool(true)},
		{"d": vDate(0), "ts": vTS(0, 0), "tstz": vTSTZ(0, 0, 0), "tm": vTime(0), "tmtz": vTimeTZ(0, 0)},
		{"d": vDate(daysOf(-4712, 1, 1)), "ts": vTS(daysOf(-43, 3, 15), nanosOf(12, 0, 0, 0)), "tstz": vTSTZ(time.Date(-43, 3, 15, 12, 0, 0, 0, time.UTC).Unix(), 0, 3600), "tm": vTime(nanosOf(24, 0, 0, 0)), "tmtz": vTimeTZ(nanosOf(12, 0, 0, 0), 1172)},
		{"d": vDate(daysOf(99999, 12, 31)), "ts": vTS(daysOf(12345, 6, 7), nanosOf(1, 2, 3, 4000)), "tstz": vTSTZ(time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC).Unix(), 5000, 1172), "tm": vTime(1), "tmtz": vTimeTZ(1, -12*3600)},
		{"d": vDate(-1), "ts": vTS(-1, nanosOf(23, 59, 59, 999999999)), "tstz": vTSTZ(-1, 999999999, -3600), "tmtz": vTimeTZ(0, -1)},
		{"d": vStr("2024-02-29"), "ts": vStr("2024-01-01T00:00:00"), "tstz": vStr("2024-01-01 10:00:00.123+05:30"), "tm": vStr("10:00"), "tmtz": vStr("10:00:00-03")},
		{"d": vStr("0044-03-15 BC"), "ts": vStr("12345-06-07T01:02:03 BC"), "tstz": vStr("2024-01-01T00:00:00Z"), "_ab_cdc_deleted_at": vStr("2024-01-01T00:00:00Z")},
	}
	b := &pbBody{tables: []pbTable{{name: "public.t", decl: decl, fields: fields}}}
	for i, r := range rows {
		b.addRecord(0, row(int64(i+1), r)...)
	}
	var out strings.Builder
	for _, line := range strings.SplitAfter(renderProtobuf(t, b.bytes()), "\n") {
		if len(line) > 1000 { // the huge values: their start and digest
			line = fmt.Sprintf("%s… (%d bytes, sha256 %x)\n", line[:200], len(line), sha256.Sum256([]byte(line)))
		}
		out.WriteString(line)
	}

	// Refused records, one per body, each after a valid one.
	bad := []map[string]*recordpb.Value{
		{"s": vStr(invalidUTF8)},
		{"s": vInt(1)},
		{"n": vStr("1")},
		{"b": vInt(1)},
		{"tstz": vStr("infinity")},
		{"tstz": vStr("-infinity")},
		{"d": vStr("infinity")},
		{"d": vTS(0, 0)},
		{"ts": vDate(1)},
		{"nb": vBigInt("1.5")},
		{"n": vDec("abc")},
		{"n": vDec("1e")},
		{"d": vDate(1 << 40)},
		{"tm": vTime(nanosOf(24, 0, 0, 1))},
		{"tmtz": vTimeTZ(0, 24*3600)},
		{"tstz": vTSTZ(1<<50, 0, 0)},
		{"tstz": vTSTZ(0, 1e9, 0)},
		{"j": vJSON(`{"a":`)},
		{"j": vJSON("\"\xff\"")},
		{"j": vStr("{}")},
		{"s": vStr("nul\x00here")},
		{"by": vStr("not base64!")},
		{"nb": vNum(math.NaN())},
		{"nb": vDec("Infinity")},
		{"nb": vNum(1.5)},
		{"b": {Kind: &recordpb.Value_Boolean{Boolean: true}, IsNull: true}},
	}
	out.WriteString("--- refusals\n")
	for i, r := range bad {
		body := &pbBody{tables: b.tables}
		body.addRecord(0, row(1, nil)...).addRecord(0, row(2, r)...)
		// The generated code refuses to encode invalid UTF-8 in a string.
		raw := bytes.ReplaceAll(body.bytes(), []byte(invalidUTF8), []byte("\xffinvalid>"))
		fmt.Fprintf(&out, "%d: %v\n", i, renderError(raw))
	}
	short := &pbBody{tables: b.tables}
	short.add(0, vInt(1))
	noKey := &pbBody{tables: b.tables}
	noKey.addRecord(0, append([]*recordpb.Value{vNull()}, row(1, nil)[1:]...)...)
	for _, body := range []*pbBody{short, noKey} {
		fmt.Fprintf(&out, "%v\n", renderError(body.bytes()))
	}
	golden(t, "protobuf_copytext", out.String())
}

// invalidUTF8 stands for a string that is not valid UTF-8 in a body,
// replaced in its bytes by one as long.
const invalidUTF8 = "<invalid>"

// renderProtobuf is the COPY text of a protobuf body's records.
func renderProtobuf(t *testing.T, body []byte) string {
	var got bytes.Buffer
	if err := renderCopyText(body, &got); err != nil {
		t.Fatal(err)
	}
	return got.String()
}

// renderError is the error that rendering a protobuf body's records ends
// with, or nil.
func renderError(body []byte) error { return renderCopyText(body, io.Discard) }

func renderCopyText(body []byte, w io.Writer) error {
	sink := &copyTextSink{rows: newRowWriter(w), staged: true}
	req, err := parseProtobufRequestInto(bytes.NewReader(body), sink)
	if err != nil {
		return err
	}
	defer req.close()
	return sink.rows.flush()
}

// TestEscapedMatchesBytewise: escaped, which skips 8 bytes at a time,
// writes what escaping byte by byte writes.
func TestEscapedMatchesBytewise(t *testing.T) {
	bytewise := func(v []byte) ([]byte, error) {
		var out []byte
		for _, c := range v {
			switch e := copyEscapes[c]; {
			case c == 0:
				return nil, errNUL
			case e != 0:
				out = append(out, '\\', e)
			default:
				out = append(out, c)
			}
		}
		return out, nil
	}
	var got bytes.Buffer
	rw := newRowWriter(&got)
	check := func(v []byte) {
		t.Helper()
		want, wantErr := bytewise(v)
		got.Reset()
		rw.buf = rw.buf[:0]
		err := rw.escaped(v)
		if err == nil {
			err = rw.flush()
		}
		if err != wantErr || (err == nil && !bytes.Equal(got.Bytes(), want)) {
			t.Fatalf("escaped(%q) = %q, %v; want %q, %v", v, got.Bytes(), err, want, wantErr)
		}
	}
	// Every byte at every position of a string longer than two words.
	for c := 0; c < 256; c++ {
		for pos := 0; pos < 19; pos++ {
			v := []byte("abcdefghijklmnopqrs")
			v[pos] = byte(c)
			check(v)
		}
	}
	rng := rand.New(rand.NewSource(1))
	alphabet := []byte("aZ09 \\\t\n\r\x00\x01\x0b\x0c\x0d\x0e\x1f\x5b\x5c\x5d\x7f\x80\xdc\xff")
	for i := 0; i < 20000; i++ {
		v := make([]byte, rng.Intn(40))
		for j := range v {
			v[j] = alphabet[rng.Intn(len(alphabet))]
		}
		check(v)
	}
	check(bytes.Repeat([]byte("0123456789abcde\\"), rowFlush/8)) // across the writer's flushes
}
