package catalog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// AppendArrayLiteral writes the JSON array value as a PostgreSQL array
// literal ({1,NULL,"a \"b\""}, nested for several dimensions): strings
// and objects quoted, numbers and booleans as they are, null as NULL.
func AppendArrayLiteral(dst, value []byte) ([]byte, error) {
	var v any
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	arr, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("not an array")
	}
	return appendArrayElements(dst, arr)
}

func appendArrayElements(dst []byte, arr []any) ([]byte, error) {
	dst = append(dst, '{')
	for i, e := range arr {
		if i > 0 {
			dst = append(dst, ',')
		}
		switch e := e.(type) {
		case nil:
			dst = append(dst, "NULL"...)
		case json.Number:
			dst = append(dst, e...)
		case bool:
			dst = strconv.AppendBool(dst, e)
		case []any:
			var err error
			if dst, err = appendArrayElements(dst, e); err != nil {
				return nil, err
			}
		case string:
			dst = appendQuotedElement(dst, e)
		default:
			b, err := json.Marshal(e)
			if err != nil {
				return nil, err
			}
			dst = appendQuotedElement(dst, string(b))
		}
	}
	return append(dst, '}'), nil
}

func appendQuotedElement(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			dst = append(dst, '\\')
		}
		dst = append(dst, s[i])
	}
	return append(dst, '"')
}
