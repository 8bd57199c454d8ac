package catalog

import "testing"

func TestArrayLiteral(t *testing.T) {
	for in, want := range map[string]string{
		`[1,null,3]`:                   `{1,NULL,3}`,
		`[[1,2],[3,4]]`:                `{{1,2},{3,4}}`,
		`["a","b \"q\" \\ ,{}", null]`: `{"a","b \"q\" \\ ,{}",NULL}`,
		`[true,false]`:                 `{true,false}`,
		`[{"k":[1]}]`:                  `{"{\"k\":[1]}"}`,
		`[]`:                           `{}`,
	} {
		got, err := AppendArrayLiteral(nil, []byte(in))
		if err != nil || string(got) != want {
			t.Errorf("%s -> %s (%v), want %s", in, got, err, want)
		}
	}
}
