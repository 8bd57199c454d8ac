package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Pages are decoded with a small scanner instead of encoding/json: it only
// finds where each top-level value and each document starts and ends, which
// is most of the client's work on a large snapshot. Documents are handed out
// as raw JSON slices of the body for the caller to decode as it likes.

var errSyntax = errors.New("malformed JSON in response")

// decodeObject splits a JSON object into its members' raw values.
func decodeObject(b []byte, fields map[string]*json.RawMessage) error {
	return ObjectFields(b, func(key, value []byte) error {
		name, err := FieldName(key)
		if err != nil {
			return err
		}
		if dst := fields[name]; dst != nil {
			*dst = value
		}
		return nil
	})
}

// ObjectFields calls fn with each member of the JSON object b: the key as
// written (a JSON string, quotes included; see FieldName) and the raw value.
// Both slices alias b. It checks the structure, not every value's syntax.
func ObjectFields(b []byte, fn func(key, value []byte) error) error {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return errSyntax
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return errSyntax
		}
		keyEnd, err := scanValue(b, i)
		if err != nil {
			return err
		}
		key := b[i:keyEnd:keyEnd]
		i = skipSpace(b, keyEnd)
		if i >= len(b) || b[i] != ':' {
			return errSyntax
		}
		i = skipSpace(b, i+1)
		end, err := scanValue(b, i)
		if err != nil {
			return err
		}
		if err := fn(key, b[i:end:end]); err != nil {
			return err
		}
		i = skipSpace(b, end)
		if i >= len(b) {
			return errSyntax
		}
		if b[i] == '}' {
			return nil
		}
		if b[i] != ',' {
			return errSyntax
		}
		i = skipSpace(b, i+1)
	}
}

// FieldName decodes a key ObjectFields returned.
func FieldName(key []byte) (string, error) {
	if bytes.IndexByte(key, '\\') < 0 {
		return string(key[1 : len(key)-1]), nil
	}
	var name string
	err := json.Unmarshal(key, &name)
	return name, err
}

// splitArray returns the raw elements of a JSON array.
func splitArray(b []byte) ([]json.RawMessage, error) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '[' {
		return nil, errSyntax
	}
	var out []json.RawMessage
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return out, nil
	}
	for {
		end, err := scanValue(b, i)
		if err != nil {
			return nil, err
		}
		out = append(out, b[i:end:end])
		i = skipSpace(b, end)
		if i >= len(b) {
			return nil, errSyntax
		}
		if b[i] == ']' {
			return out, nil
		}
		if b[i] != ',' {
			return nil, errSyntax
		}
		i = skipSpace(b, i+1)
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\t' || b[i] == '\r') {
		i++
	}
	return i
}

// scanValue returns the end of the JSON value starting at b[i].
func scanValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errSyntax
	}
	switch b[i] {
	case '"':
		return scanString(b, i)
	case '{', '[':
		// One pass over the bytes: strings are skipped inline, which beats
		// a call per (usually short) string.
		depth, inString := 0, false
		for j := i; j < len(b); j++ {
			c := b[j]
			if inString {
				if c == '\\' {
					j++
				} else if c == '"' {
					inString = false
				}
				continue
			}
			switch c {
			case '"':
				inString = true
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, errSyntax
	default:
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\n' && b[j] != '\t' && b[j] != '\r' {
			j++
		}
		if j == i {
			return 0, errSyntax
		}
		return j, nil
	}
}

// scanString returns the end of the string starting at b[i], jumping from
// quote to quote.
func scanString(b []byte, i int) (int, error) {
	j := i + 1
	for {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			return 0, errSyntax
		}
		j += k
		// The quote is escaped if an odd number of backslashes precede it.
		n := 0
		for p := j - 1; p > i && b[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			return j + 1, nil
		}
		j++
	}
}

// decodePage reads a list_snapshot or document_deltas body.
func decodePage(r io.Reader, size int64, values *[]json.RawMessage, scalars map[string]any) error {
	buf := bytes.NewBuffer(make([]byte, 0, max(size, 0)+bytes.MinRead))
	if _, err := buf.ReadFrom(r); err != nil {
		return err
	}
	body := buf.Bytes()
	var err error
	raw := map[string]*json.RawMessage{}
	var rawValues json.RawMessage
	raw["values"] = &rawValues
	parts := map[string]*json.RawMessage{}
	for k := range scalars {
		parts[k] = new(json.RawMessage)
		raw[k] = parts[k]
	}
	if err := decodeObject(body, raw); err != nil {
		return err
	}
	if rawValues == nil {
		return fmt.Errorf("%w: no values", errSyntax)
	}
	if *values, err = splitArray(rawValues); err != nil {
		return err
	}
	for k, dst := range scalars {
		if len(*parts[k]) == 0 {
			return fmt.Errorf("%w: no %s", errSyntax, k)
		}
		if err := json.Unmarshal(*parts[k], dst); err != nil {
			return fmt.Errorf("decoding %s: %w", k, err)
		}
	}
	return nil
}
