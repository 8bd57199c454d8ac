package importer

import (
	"strings"
	"testing"
	"testing/iotest"
)

// TestBodyReaderRefills walks a body through a tiny buffer fed one byte at
// a time, so every value crosses refills, and checks what comes out.
func TestBodyReaderRefills(t *testing.T) {
	body := ` { "skip" : {"x":[1,2,"]\"}"]}, "messages" : [ {"tableName":"t","data":{"s":"a\"b,}]","n":-1.5e3,"o":{"k":[true,null]}}},
		{"data":{"n":2},"tableName":"t"} ] , "tables" : {"t":{"primaryKey":null,"jsonSchema":null}} } `
	for _, size := range []int{1, 3, 7, 64, 1 << 16} {
		br := newBodyReaderSize(iotest.OneByteReader(strings.NewReader(body)), size)
		if err := br.expect('{'); err != nil {
			t.Fatal(err)
		}
		var got []string
		for more := true; more; {
			k, err := br.key()
			if err != nil {
				t.Fatalf("size %d: %v", size, err)
			}
			if k == "messages" {
				if err := br.expect('['); err != nil {
					t.Fatal(err)
				}
				for m := true; m; {
					raw, err := br.value()
					if err != nil {
						t.Fatalf("size %d: %v", size, err)
					}
					table, data, err := splitFields(raw)
					if err != nil {
						t.Fatalf("size %d: %v in %s", size, err, raw)
					}
					got = append(got, table+"="+string(data))
					if m, err = br.next(']'); err != nil {
						t.Fatal(err)
					}
				}
			} else {
				v, err := br.value()
				if err != nil {
					t.Fatalf("size %d: %v", size, err)
				}
				got = append(got, k+"="+string(v))
			}
			if more, err = br.next('}'); err != nil {
				t.Fatal(err)
			}
		}
		want := `skip={"x":[1,2,"]\"}"]}|t={"s":"a\"b,}]","n":-1.5e3,"o":{"k":[true,null]}}|t={"n":2}|tables={"t":{"primaryKey":null,"jsonSchema":null}}`
		if strings.Join(got, "|") != want {
			t.Fatalf("size %d:\n%s\nwant\n%s", size, strings.Join(got, "|"), want)
		}
	}
}

func TestParseRequestErrors(t *testing.T) {
	for _, body := range []string{
		``, `{`, `{"tables":{}`, `{"tables":{},"messages":[{"tableName":"t","data":{}}`, `{"tables":{}} trailing`,
		`{"tables":{},"messages":[{"data":{}}]}`, `{"tables":{},"messages":[1]}`, `{"tables":{"t":{}},"messages":[{"tableName":"t","data":{"a":tru}}]}`,
	} {
		if req, err := parseRequest(strings.NewReader(body)); err == nil {
			req.close()
			t.Errorf("%q parsed without error", body)
		}
	}
}

func TestSplitMessageSkipsDataByBoundaries(t *testing.T) {
	for raw, want := range map[string]string{
		`{"data":{"s":"a\"}b\\","t":[1,"]"]},"tableName":"x"}`: `{"s":"a\"}b\\","t":[1,"]"]}`,
		`{"tableName":"x","data":"str\"ing"}`:                  `"str\"ing"`,
		`{"tableName":"x","data":{"a":"\u00e9"}}`:              `{"a":"\u00e9"}`,
	} {
		table, data, err := splitFields([]byte(raw))
		if err != nil || table != "x" || string(data) != want {
			t.Errorf("splitFields(%s) = %q, %s, %v", raw, table, data, err)
		}
	}
	for _, raw := range []string{`{"tableName":"x","data":{"a":"unterminated}}`, `{"tableName":"x","data":{"a":"\`} {
		if _, _, err := splitFields([]byte(raw)); err == nil {
			t.Errorf("splitFields(%s) accepted", raw)
		}
	}
}
