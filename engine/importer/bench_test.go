package importer

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand"
	"testing"
)

// benchBody is an import request shaped like the bench's firenibble rows.
func benchBody(n int, key bool) []byte {
	rng := rand.New(rand.NewSource(1))
	pk := "null"
	if key {
		pk = `[["f0"]]`
	}
	var b bytes.Buffer
	b.WriteString(`{"tables":{"t":{"primaryKey":` + pk + `,"jsonSchema":{"type":"object","properties":{
	"f0":{"type":"integer"},"f1":{"type":"integer"},"f2":{"type":"integer"},"f3":{"type":"integer"},
	"f4":{"type":"number"},"f5":{"type":"number"},"f6":{"type":"number"},"f7":{"type":"number"},
	"f8":{"type":"string"},"f9":{"type":"string"},"f10":{"type":"string"},"f11":{"type":"string"},"f12":{"type":"string"},
	"f13":{"type":"string","format":"date"},"f14":{"type":"string","format":"date"},"f15":{"type":"string","format":"date"}}}}},"messages":[`)
	md := func(g int) string { h := md5.Sum([]byte(fmt.Sprint(g))); return hex.EncodeToString(h[:]) }
	for g := 1; g <= n; g++ {
		if g > 1 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"tableName":"t","data":{"f0" : %d, "f1" : %d, "f2" : %d, "f3" : %d, "f4" : %v, "f5" : %v, "f6" : %v, "f7" : %v, "f8" : "%s", "f9" : "%s", "f10" : "%s", "f11" : "%s", "f12" : "%s", "f13" : "2020-%02d-%02d", "f14" : "2021-%02d-%02d", "f15" : "2022-%02d-%02d"}}`,
			g, g*7, g%1000, g%100000, rng.Float64(), rng.Float64()*1000, float64(g)/3, -float64(g)/7,
			md(g), md(g+1), md(g+2), md(g+3), md(g+4), 1+g%12, 1+g%28, 1+g%12, 1+g%28, 1+g%12, 1+g%28)
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

// BenchmarkParseAndEncode measures the engine's CPU per request without
// PostgreSQL: parsing, validating, spooling and rendering COPY text.
func BenchmarkParseAndEncode(b *testing.B) {
	for _, key := range []bool{false, true} {
		body := benchBody(10000, key)
		b.Run(fmt.Sprintf("key=%v", key), func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				req, err := parseRequest(bytes.NewReader(body))
				if err != nil {
					b.Fatal(err)
				}
				for _, s := range req.streams {
					pr, pw := io.Pipe()
					go func() { _ = copySource(s, pw, key, 0) }()
					if _, err := io.Copy(io.Discard, pr); err != nil {
						b.Fatal(err)
					}
				}
				req.close()
			}
		})
	}
}
