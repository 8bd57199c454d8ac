package catalog

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func builtin(oid uint32) *Type {
	return NewTypes().cached(oid)
}

func TestParseArray(t *testing.T) {
	int4s, texts, int8s, jsonbs, byteas := builtin(1007), builtin(1009), builtin(1016), builtin(3807), builtin(1001)
	box := &Type{Name: "box", Kind: KindText, Delim: ';'}
	boxes := &Type{Name: "box[]", Kind: KindArray, Elem: box} // Delim 0: taken from the element
	cases := []struct {
		typ        *Type
		in, json   string
		convexJSON string
	}{
		{int4s, `{}`, `[]`, ""},
		{int4s, `{1,2,NULL}`, `[1,2,null]`, ""},
		{int4s, `{null,Null}`, `[null,null]`, ""},
		{int4s, `{-1}`, `[-1]`, ""},
		{int4s, `{{1,2},{3,4}}`, `[[1,2],[3,4]]`, ""},
		{int4s, `{{{1}},{{2}}}`, `[[[1]],[[2]]]`, ""},
		{int4s, `{{},{}}`, `[[],[]]`, ""},
		{int4s, `[0:1]={1,2}`, `[1,2]`, ""},
		{int4s, `[-5:-4][1:1]={{1},{2}}`, `[[1],[2]]`, ""},
		{int4s, `[2]={7}`, `[7]`, ""},
		{int4s, ` { 1 , 2 } `, `[1,2]`, ""},
		{int4s, "{\t1\n,\r2\f}", `[1,2]`, ""},
		{int4s, `{"1", "2"}`, `[1,2]`, ""},
		{texts, `{"a b","c\"d",NULL,"NULL","","x\\y","a,b"}`, `["a b","c\"d",null,"NULL","","x\\y","a,b"]`, ""},
		{texts, `{a b,  c  }`, `["a b","c"]`, ""},
		{texts, `{a\,b,c\ ,\N\U\L\L,\"}`, `["a,b","c ","NULL","\""]`, ""},
		{texts, `{"{}","}","{"}`, `["{}","}","{"]`, ""},
		{texts, `{é,"🎉 \"x\""}`, `["é","🎉 \"x\""]`, ""},
		{texts, `{"tab	here","new` + "\n" + `line"}`, `["tab\there","new\nline"]`, ""},
		{texts, `{{a,b},{"c",NULL}}`, `[["a","b"],["c",null]]`, ""},
		{int8s, `{1,-9223372036854775808}`, `["1","-9223372036854775808"]`, `[{"$integer":"AQAAAAAAAAA="},{"$integer":"AAAAAAAAAIA="}]`},
		{jsonbs, `{"{\"a\": [1, \"\\\\\"]}",null,"null","[]"}`, `[{"a": [1, "\\"]},null,null,[]]`, ""},
		{byteas, `{"\\x01ff",NULL,"\\x"}`, `["Af8=",null,""]`, `[{"$bytes":"Af8="},null,{"$bytes":""}]`},
		{boxes, `{(1,1),(0,0);(3,3),(2,2)}`, `["(1,1),(0,0)","(3,3),(2,2)"]`, ""},
		{boxes, `{(1,1),(0,0)}`, `["(1,1),(0,0)"]`, ""},
	}
	for _, c := range cases {
		for _, f := range []Format{FormatJSON, FormatConvexJSON} {
			want := c.json
			if f == FormatConvexJSON && c.convexJSON != "" {
				want = c.convexJSON
			}
			got, err := AppendValue([]byte("x"), c.typ, []byte(c.in), f)
			if err != nil {
				t.Errorf("%s %s %v: %v", c.typ.Name, c.in, f, err)
				continue
			}
			if string(got) != "x"+want {
				t.Errorf("%s %s %v:\n got %s\nwant x%s", c.typ.Name, c.in, f, got, want)
			}
			if !json.Valid(got[1:]) {
				t.Errorf("%s %s %v: invalid JSON %s", c.typ.Name, c.in, f, got[1:])
			}
		}
	}
}

func TestParseArrayErrors(t *testing.T) {
	int4s, texts, byteas := builtin(1007), builtin(1009), builtin(1001)
	cases := []struct {
		typ *Type
		in  string
	}{
		{int4s, ``},
		{int4s, `   `},
		{int4s, `1,2`},
		{int4s, `{`},
		{int4s, `{1`},
		{int4s, `{1,`},
		{int4s, `{1,}`},
		{int4s, `{,1}`},
		{int4s, `{1,,2}`},
		{int4s, `{1}}`},
		{int4s, `{1} x`},
		{int4s, `{{1},2}`},
		{int4s, `{1,{2}}`},
		{int4s, `{{1}`},
		{int4s, `{{{{{{{1}}}}}}}`}, // 7 dimensions
		{int4s, `{1 2}`},           // int4 "1 2" is not a number
		{int4s, `{x}`},
		{int4s, `{"1"2}`},
		{int4s, `[0:1]{1,2}`},
		{int4s, `[0:1={1,2}`},
		{int4s, `[a:1]={1,2}`},
		{int4s, `[0:]={1,2}`},
		{int4s, `[]={1}`},
		{int4s, `[1][1][1][1][1][1][1]={1}`},
		{texts, `{"a}`},
		{texts, `{"a\"}`},
		{texts, `{a"b"}`},
		{texts, `{a{b}`},
		{texts, `{a\`},
		{texts, `{"a" "b"}`},
		{byteas, `{"\\xzz"}`},
		{byteas, `{"\\x1"}`},
		{byteas, `{abc}`},
		{&Type{Name: "broken[]", Kind: KindArray}, `{1}`},
	}
	for _, c := range cases {
		for _, f := range []Format{FormatJSON, FormatConvexJSON} {
			got, err := AppendValue([]byte("x"), c.typ, []byte(c.in), f)
			if err == nil {
				t.Errorf("%s %q %v: no error, got %s", c.typ.Name, c.in, f, got)
				continue
			}
			var ve *ValueError
			if !errors.As(err, &ve) || !strings.Contains(err.Error(), c.typ.Name) {
				t.Errorf("%s %q: error %v should be a ValueError naming the type", c.typ.Name, c.in, err)
			}
			if string(got) != "x" {
				t.Errorf("%s %q: dst %q after error, want it restored", c.typ.Name, c.in, got)
			}
		}
	}
}

// FuzzParseArray feeds arbitrary text to the array decoder for several
// element types: it must not panic, and whatever it accepts must be JSON.
func FuzzParseArray(f *testing.F) {
	for _, s := range []string{
		`{}`, `{1,2,NULL}`, `{{1,2},{3,4}}`, `[0:1]={1,2}`, `{"a b","c\"d",NULL,"NULL"}`,
		`{"\\x01ff"}`, `{"{\"a\": 1}"}`, `{NaN,-Infinity,1e+300,-0}`, `{t,f}`, `{(1,1),(0,0);(2,2),(1,1)}`,
		`{"2024-01-02 03:04:05+00"}`, `{a\,b}`, `{{{{{{1}}}}}}`,
	} {
		f.Add(s)
	}
	tp := NewTypes()
	ints := &Type{Name: "ints", Kind: KindArray, Elem: tp.cached(1007)} // array of arrays
	var types []*Type
	for _, oid := range []uint32{1007, 1009, 1016, 1022, 1231, 1000, 1001, 3807, 1185, 1115} {
		types = append(types, tp.cached(oid))
	}
	types = append(types,
		&Type{Name: "box[]", Kind: KindArray, Elem: &Type{Name: "box", Delim: ';'}, Delim: ';'},
		&Type{Name: "ints[]", Kind: KindArray, Elem: ints},
	)
	f.Fuzz(func(t *testing.T, in string) {
		for _, typ := range types {
			for _, fm := range []Format{FormatJSON, FormatConvexJSON} {
				out, err := AppendValue(nil, typ, []byte(in), fm)
				if err == nil && !json.Valid(out) && typ.Elem.Kind != KindJSONB {
					// jsonb elements are trusted to be JSON, so garbage in
					// them passes through; everything else must be valid.
					t.Fatalf("%s %q %v: invalid JSON %s", typ.Name, in, fm, out)
				}
			}
		}
	})
}
