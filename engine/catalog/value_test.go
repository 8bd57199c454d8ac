package catalog

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"
)

func TestParseFormat(t *testing.T) {
	for in, want := range map[string]Format{
		"": FormatJSON, "json": FormatJSON, "convex_clean_json": FormatJSON,
		"convex_json": FormatConvexJSON, "convex_encoded_json": FormatConvexJSON,
	} {
		if got, err := ParseFormat(in); err != nil || got != want {
			t.Errorf("ParseFormat(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"JSON", "export_json", "xml", " json"} {
		_, err := ParseFormat(in)
		if err == nil || err.Error() != "format param must be one of [`json`, `convex_json`]. Got "+in {
			t.Errorf("ParseFormat(%q): error %v", in, err)
		}
	}
	if FormatJSON.String() != "json" || FormatConvexJSON.String() != "convex_json" {
		t.Error("Format.String")
	}
}

func TestScalarValues(t *testing.T) {
	int8Convex := func(v int64) string {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], uint64(v))
		return `{"$integer":"` + base64.StdEncoding.EncodeToString(b[:]) + `"}`
	}
	cases := []struct {
		oid          uint32
		in           string
		json, convex string // convex "" = same as json
	}{
		{21, "0", "0", ""},
		{23, "-2147483648", "-2147483648", ""},
		{26, "0", "0", ""},
		{20, "0", `"0"`, `{"$integer":"AAAAAAAAAAA="}`},
		{20, "123456789012", `"123456789012"`, int8Convex(123456789012)},
		{20, "-123456789012", `"-123456789012"`, int8Convex(-123456789012)},
		{701, "1.2345678901234567e+300", "1.2345678901234567e+300", ""},
		{701, "5e-324", "5e-324", ""},
		{701, "0", "0", ""},
		{701, "-1.5", "-1.5", ""},
		{700, "Infinity", `"Infinity"`, `{"$float":"AAAAAAAA8H8="}`},
		{1700, "-0.000001", `"-0.000001"`, ""},
		{1700, "Infinity", `"Infinity"`, ""},
		{25, "", `""`, ""},
		{25, "\x00\x1f\"\\/<>&\u2029", `"\u0000\u001f\"\\/<>&` + "\u2029" + `"`, ""},
		{25, "bad \xff utf8 \xe2\x82", `"bad \ufffd utf8 \ufffd\ufffd"`, ""},
		{1114, "2024-01-02 03:04:05", `"2024-01-02T03:04:05"`, ""},
		{1184, "2024-01-02 03:04:05+00", `"2024-01-02T03:04:05Z"`, ""},
		{1184, "2024-01-02 03:04:05+05:30", `"2024-01-02T03:04:05+05:30"`, ""},
		{1184, "2024-01-02 03:04:05.000001+00 BC", `"2024-01-02T03:04:05.000001Z BC"`, ""},
		{17, `\x`, `""`, `{"$bytes":""}`},
		{17, `\xDEADbeef`, `"3q2+7w=="`, `{"$bytes":"3q2+7w=="}`},
		{114, `[1, {"a": null}]`, `[1, {"a": null}]`, ""},
		{16, "t", "true", ""},
	}
	types := NewTypes()
	for _, c := range cases {
		typ := types.cached(c.oid)
		for _, f := range []Format{FormatJSON, FormatConvexJSON} {
			want := c.json
			if f == FormatConvexJSON && c.convex != "" {
				want = c.convex
			}
			got, err := AppendValue(nil, typ, []byte(c.in), f)
			if err != nil || string(got) != want {
				t.Errorf("%s %q %v: %s, %v; want %s", typ.Name, c.in, f, got, err, want)
			}
			if !json.Valid(got) {
				t.Errorf("%s %q %v: invalid JSON %s", typ.Name, c.in, f, got)
			}
		}
	}
}

func TestFloatSpecials(t *testing.T) {
	// The $float constants are base64 of the float64's little-endian bytes.
	// NaN is the canonical quiet NaN, 0x7ff8000000000000.
	for text, want := range map[string]float64{"NaN": math.Float64frombits(0x7ff8000000000000), "Infinity": math.Inf(1), "-Infinity": math.Inf(-1), "-0": math.Copysign(0, -1)} {
		got, err := AppendValue(nil, builtin(701), []byte(text), FormatConvexJSON)
		if err != nil {
			t.Fatal(err)
		}
		var v struct {
			F string `json:"$float"`
		}
		if err := json.Unmarshal(got, &v); err != nil {
			t.Fatal(err)
		}
		b, _ := base64.StdEncoding.DecodeString(v.F)
		bits := binary.LittleEndian.Uint64(b)
		if bits != math.Float64bits(want) {
			t.Errorf("%s: %s decodes to %x, want %x", text, got, bits, math.Float64bits(want))
		}
	}
}

func TestInt8Convex(t *testing.T) {
	for _, v := range []int64{0, 1, -1, 42, math.MaxInt64, math.MinInt64, 1 << 40, -(1 << 53) - 1} {
		got, err := AppendValue(nil, builtin(20), []byte(strconv.FormatInt(v, 10)), FormatConvexJSON)
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			I string `json:"$integer"`
		}
		if err := json.Unmarshal(got, &out); err != nil {
			t.Fatal(err)
		}
		b, _ := base64.StdEncoding.DecodeString(out.I)
		if len(b) != 8 || int64(binary.LittleEndian.Uint64(b)) != v {
			t.Errorf("%d: %s", v, got)
		}
	}
}

func TestScalarErrors(t *testing.T) {
	cases := []struct {
		oid uint32
		in  string
	}{
		{21, ""}, {21, "1.5"}, {23, "01"}, {23, "+1"}, {23, "-"}, {23, "1e5"}, {26, "-1"}, {26, ""},
		{20, ""}, {20, "x"}, {20, "9223372036854775808"}, {20, "-9223372036854775809"}, {20, "99999999999999999999"}, {20, "1.0"},
		{701, ""}, {701, "nan"}, {701, "inf"}, {701, "1."}, {701, ".5"}, {701, "1e"}, {701, "1e+"}, {701, "--1"}, {701, "0x10"},
		{16, ""}, {16, "true"}, {16, "T"},
		{17, ""}, {17, "0102"}, {17, `\x0`}, {17, `\x0g`}, {17, `\xg0`}, {17, `\\x00`},
		{114, ""},
	}
	for _, c := range cases {
		typ := builtin(c.oid)
		for _, f := range []Format{FormatJSON, FormatConvexJSON} {
			got, err := AppendValue([]byte("x"), typ, []byte(c.in), f)
			if err == nil {
				t.Errorf("%s %q %v: no error, got %s", typ.Name, c.in, f, got)
				continue
			}
			if !strings.Contains(err.Error(), typ.Name) {
				t.Errorf("%s %q: error %q does not name the type", typ.Name, c.in, err)
			}
			if string(got) != "x" {
				t.Errorf("%s %q: dst %q after error", typ.Name, c.in, got)
			}
		}
	}
	if _, err := AppendValue(nil, nil, []byte("1"), FormatJSON); err == nil {
		t.Error("nil type: no error")
	}
}

func TestBytea(t *testing.T) {
	// Lengths around the decoder's chunk size.
	for _, n := range []int{0, 1, 2, 3, 95, 96, 97, 191, 192, 193, 1000} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*31 + 7)
		}
		text := `\x` + strings.ToUpper(hexString(b))
		got, err := AppendValue(nil, builtin(17), []byte(text), FormatJSON)
		if want := `"` + base64.StdEncoding.EncodeToString(b) + `"`; err != nil || string(got) != want {
			t.Errorf("%d bytes: %s, %v; want %s", n, got, err, want)
		}
	}
}

func hexString(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		sb.WriteByte(hexDigits[c>>4])
		sb.WriteByte(hexDigits[c&15])
	}
	return sb.String()
}

func TestSchemaShapes(t *testing.T) {
	cases := []struct {
		oid  uint32
		f    Format
		want string
	}{
		{20, FormatJSON, `{"$description":"int64 represented as base10 string","type":"string"}`},
		{20, FormatConvexJSON, `{"$description":"int64","properties":{"$integer":{"$description":"int64 -> little-endian -> base64","type":"string"}},"type":"object"}`},
		{23, FormatJSON, `{"type":"integer"}`},
		{701, FormatJSON, `{"$description":"float64","anyOf":[{"type":"number"},{"$description":"-inf, inf, or NaN","type":"string"}]}`},
		{1700, FormatConvexJSON, `{"$description":"numeric represented as base10 string","type":"string"}`},
		{2950, FormatJSON, `{"format":"uuid","type":"string"}`},
		{1082, FormatJSON, `{"format":"date","type":"string"}`},
		{1184, FormatJSON, `{"$description":"ISO-8601 timestamp in UTC","format":"date-time","type":"string"}`},
		{1186, FormatJSON, `{"$description":"ISO-8601 duration","type":"string"}`},
		{17, FormatJSON, `{"$description":"base64 bytes","type":"string"}`},
		{17, FormatConvexJSON, `{"$description":"base64 bytes","properties":{"$bytes":{"type":"string"}},"type":"object"}`},
		{1007, FormatJSON, `{"items":{"anyOf":[{"type":["integer","null"]},{"$description":"inner dimension of a multidimensional array, nested to its depth; its elements are as above","type":"array"}]},"type":"array"}`},
	}
	for _, c := range cases {
		got := marshal(Schema(builtin(c.oid), c.f))
		if got != c.want {
			t.Errorf("Schema(%s, %v):\n got %s\nwant %s", builtin(c.oid).Name, c.f, got, c.want)
		}
	}
	enum := &Type{Name: "mood", Kind: KindEnum, EnumValues: []string{"sad", "ok"}}
	if got := marshal(Schema(enum, FormatJSON)); got != `{"enum":["sad","ok"],"type":"string"}` {
		t.Errorf("enum schema %s", got)
	}
	arr := &Type{Name: "mood[]", Kind: KindArray, Elem: enum}
	if got := marshal(Schema(arr, FormatJSON)); !strings.Contains(got, `{"enum":["sad","ok",null],"type":["string","null"]}`) {
		t.Errorf("enum array schema %s", got)
	}
	// Schema returns fresh maps: changing one does not change the next.
	s := Schema(enum, FormatJSON)
	s["enum"] = append(s["enum"].([]any), "x")
	if len(enum.EnumValues) != 2 || len(Schema(enum, FormatJSON)["enum"].([]any)) != 2 {
		t.Error("Schema shares state")
	}
}

// marshal writes v as JSON without HTML escaping.
func marshal(v any) string {
	var b strings.Builder
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	if err := e.Encode(v); err != nil {
		panic(err)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// TestAppendValueAllocs checks the scalar paths do not allocate.
func TestAppendValueAllocs(t *testing.T) {
	row := benchRow()
	dst := make([]byte, 0, 4096)
	for _, f := range []Format{FormatJSON, FormatConvexJSON} {
		n := testing.AllocsPerRun(100, func() {
			dst = dst[:0]
			for _, c := range row {
				var err error
				if dst, err = AppendValue(dst, c.typ, c.text, f); err != nil {
					t.Fatal(err)
				}
			}
		})
		if n != 0 {
			t.Errorf("%v: %v allocations per row, want 0", f, n)
		}
	}
}

type benchCol struct {
	typ  *Type
	text []byte
}

// benchRow is a mixed row: ids, counters, amounts, text, flags, times,
// a uuid, jsonb, bytea and arrays.
func benchRow() []benchCol {
	b := func(oid uint32, text string) benchCol { return benchCol{builtin(oid), []byte(text)} }
	return []benchCol{
		b(20, "1234567890"),
		b(23, "42"),
		b(21, "-7"),
		b(701, "3.141592653589793"),
		b(700, "1.5e-07"),
		b(1700, "12345.6789"),
		b(16, "t"),
		b(25, "The quick brown fox jumps over the lazy dog"),
		b(1043, "héllo wörld \"quoted\"\n"),
		b(2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
		b(1082, "2024-01-02"),
		b(1114, "2024-01-02 03:04:05.123456"),
		b(1184, "2024-01-02 03:04:05.123456+00"),
		b(1186, "P1Y2M3DT4H5M6S"),
		b(3802, `{"a": 1, "b": [true, null, "x"]}`),
		b(17, `\x0102030405060708090a0b0c0d0e0f10`),
		b(1007, "{1,2,3,NULL,5}"),
		b(1009, `{alpha,"beta gamma","c\"d",NULL}`),
	}
}

func BenchmarkAppendValue(b *testing.B) {
	row := benchRow()
	var size int
	for _, c := range row {
		size += len(c.text)
	}
	for _, f := range []Format{FormatJSON, FormatConvexJSON} {
		b.Run(f.String(), func(b *testing.B) {
			dst := make([]byte, 0, 4096)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				dst = dst[:0]
				for _, c := range row {
					var err error
					if dst, err = AppendValue(dst, c.typ, c.text, f); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(row)), "ns/value")
		})
	}
}

// TestStringEscapingEveryByte checks the eight-bytes-at-a-time fast path
// against encoding/json for every byte value at every position.
func TestStringEscapingEveryByte(t *testing.T) {
	for pos := 0; pos < 17; pos++ {
		for b := 0; b < 256; b++ {
			s := []byte("abcdefghijklmnopq")
			s[pos] = byte(b)
			got := appendStringBody(nil, s)
			var back string
			if err := json.Unmarshal(append(append([]byte{'"'}, got...), '"'), &back); err != nil {
				t.Fatalf("byte %#x at %d: invalid JSON string %q: %v", b, pos, got, err)
			}
			want := string(s)
			if b >= 0x80 {
				want = strings.ToValidUTF8(want, "\ufffd")
			}
			if back != want {
				t.Fatalf("byte %#x at %d: %q decodes to %q, want %q", b, pos, got, back, want)
			}
		}
	}
}
