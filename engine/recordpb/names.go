package recordpb

import (
	"slices"
	"unicode/utf8"
)

// CompareFieldNames orders field names as Airbyte orders a record's values:
// by UTF-16 code units (Java's String order). It differs from Go's byte
// order only between characters above U+FFFF and those from U+E000 to
// U+FFFF.
func CompareFieldNames(a, b string) int {
	for a != "" && b != "" {
		ra, na := utf8.DecodeRuneInString(a)
		rb, nb := utf8.DecodeRuneInString(b)
		if ra != rb {
			if ka, kb := utf16Key(ra), utf16Key(rb); ka != kb {
				return int(ka) - int(kb)
			}
			return int(ra) - int(rb) // the same high surrogate: the low ones decide, in rune order
		}
		a, b = a[na:], b[nb:]
	}
	return len(a) - len(b)
}

// utf16Key is the first UTF-16 code unit of r: a high surrogate
// (0xD800-0xDBFF) for characters above U+FFFF.
func utf16Key(r rune) rune {
	if r > 0xFFFF {
		return 0xD800 + (r-0x10000)>>10
	}
	return r
}

// SortFieldNames sorts names in place with CompareFieldNames.
func SortFieldNames(names []string) { slices.SortFunc(names, CompareFieldNames) }
