package protocol

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
)

func TestReaderHugeLinesBlankLinesAndLineNumbers(t *testing.T) {
	huge := strings.Repeat("x", 5<<20)
	in := `{"type":"RECORD","record":{"stream":"s","data":{"v":"` + huge + `"},"emitted_at":1}}` + "\n\n" +
		`{"type":"STATE","state":{"type":"STREAM","stream":{"stream_descriptor":{"name":"s"}},"id":7}}` + "\n" +
		"not json\n" +
		`{"type":"RECORD","record":{"stream":"s","data":{},"emitted_at":1}}` // no final newline
	r := NewReader(strings.NewReader(in))
	m, err := r.ReadMessage()
	if err != nil || m.Type != TypeRecord || len(m.Record.Data) != len(huge)+8 {
		t.Fatalf("first message: %v %+v", err, m)
	}
	m, err = r.ReadMessage()
	if err != nil || m.Type != TypeState || r.Line() != 3 {
		t.Fatalf("state: %v line %d", err, r.Line())
	}
	_, err = r.ReadMessage()
	var le *LineError
	if !errors.As(err, &le) || le.Line != 4 {
		t.Fatalf("malformed line: got %v", err)
	}
	if m, err = r.ReadMessage(); err != nil || m.Record.Stream != "s" {
		t.Fatalf("last line without newline: %v", err)
	}
	if _, err = r.ReadMessage(); err != io.EOF {
		t.Fatalf("want EOF, got %v", err)
	}
}

func TestReaderRejectsIncompleteMessages(t *testing.T) {
	for _, line := range []string{
		`{"record":{}}`,
		`{"type":"RECORD"}`,
		`{"type":"RECORD","record":{"stream":"s","data":[1]}}`,
		`{"type":"STATE","state":null}`,
		`[1,2]`,
	} {
		_, err := NewReader(strings.NewReader(line)).ReadMessage()
		var le *LineError
		if !errors.As(err, &le) || le.Line != 1 {
			t.Errorf("%s: want a LineError for line 1, got %v", line, err)
		}
	}
}

// TestScanMessageAgreesWithEncodingJSON: whenever the one-pass reader
// takes a line, encoding/json decodes it to the same message; lines it
// leaves alone go to encoding/json.
func TestScanMessageAgreesWithEncodingJSON(t *testing.T) {
	seeds := []string{
		`{"type":"RECORD","record":{"stream":"s","namespace":"public","data":{"a":1,"b":"x\u00e9","c":[null,{"d":true}]},"emitted_at":1700000000000}}`,
		`{"record":{"namespace":null,"emitted_at":-5,"data":{},"stream":"s","meta":{"changes":[{"field":"f","change":"NULLED","reason":"SOURCE_FIELD_SIZE_LIMITATION"}]}},"type":"RECORD","extra":[1,2]}`,
		`{"type":"STATE","state":{"type":"STREAM","stream":{"stream_descriptor":{"name":"s"},"stream_state":{"c":1}},"id":3}}`,
		`{"type":"TRACE","trace":{"type":"STREAM_STATUS","emitted_at":1.5,"stream_status":{"stream_descriptor":{"name":"s"},"status":"COMPLETE"}}}`,
		`{"type":"LOG","log":{"level":"INFO","message":"m"}}`,
		` {"Type":"RECORD","Record":{"Stream":"s","Data":{}}} `,
		`{"type":"RECORD","record":{"stream":"s","data":{},"emitted_at":1e3}}`,
		`{"type":"RECORD","record":{"stream":"s","data":{},"emitted_at":1},"record":{"namespace":"n"}}`,
		`{"type":"RECORD","record":null}`,
	}
	rng := rand.New(rand.NewSource(11))
	var lines []string
	for _, s := range seeds {
		lines = append(lines, s)
		for i := 0; i < 300; i++ {
			b := []byte(s)
			k := rng.Intn(len(b))
			switch rng.Intn(3) {
			case 0:
				b = append(b[:k], b[k+1:]...)
			case 1:
				b[k] = `{}[]",:01-n tT`[rng.Intn(14)]
			default:
				b = append(b[:k], append([]byte{`{}[]",:1 `[rng.Intn(9)]}, b[k:]...)...)
			}
			lines = append(lines, string(b))
		}
	}
	taken := 0
	for _, line := range lines {
		fast, ok := scanMessage([]byte(line))
		if !ok {
			continue
		}
		taken++
		var slow InputMessage
		if err := json.Unmarshal([]byte(line), &slow); err != nil {
			t.Errorf("%s: read in one pass, but encoding/json says %v", line, err)
			continue
		}
		a, _ := json.Marshal(fast)
		b, _ := json.Marshal(&slow)
		if !bytes.Equal(a, b) {
			t.Errorf("%s:\none pass      %s\nencoding/json %s", line, a, b)
		}
	}
	for _, s := range seeds[:5] {
		if _, ok := scanMessage([]byte(s)); !ok {
			t.Errorf("the one-pass reader left %s to encoding/json", s)
		}
	}
	t.Logf("the one-pass reader took %d of %d lines", taken, len(lines))
}

func TestEchoStateKeepsEveryFieldAndAddsStats(t *testing.T) {
	state := json.RawMessage(`{"type":"STREAM","stream":{"stream_descriptor":{"name":"s","namespace":"n"},"stream_state":{"c":12345678901234567890}},"sourceStats":{"recordCount":3.0},"id":42,"future_field":{"x":[1]}}`)
	line, err := EchoState(state, 3)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Type  string                     `json:"type"`
		State map[string]json.RawMessage `json:"state"`
	}
	if err := json.Unmarshal(line, &got); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		"id": "42", "future_field": `{"x":[1]}`, "destinationStats": `{"recordCount":3.0}`,
		"stream": `{"stream_descriptor":{"name":"s","namespace":"n"},"stream_state":{"c":12345678901234567890}}`,
	} {
		if string(got.State[k]) != want {
			t.Errorf("%s = %s, want %s", k, got.State[k], want)
		}
	}
	v, err := NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Validate(line); err != nil {
		t.Errorf("echoed state does not validate: %v", err)
	}
}

func TestCountHasDecimalPoint(t *testing.T) {
	for c, want := range map[Count]string{0: "0.0", 5: "5.0", 1e15: "1000000000000000.0"} {
		b, _ := json.Marshal(c)
		if string(b) != want {
			t.Errorf("%v -> %s, want %s", float64(c), b, want)
		}
	}
}

func TestParseArgs(t *testing.T) {
	a, err := ParseArgs([]string{"read", "--config", "c.json", "--catalog=k.json", "--debug", "--state", "s.json"})
	if err != nil || a != (Args{Command: "read", Config: "c.json", Catalog: "k.json", State: "s.json"}) {
		t.Fatalf("%+v %v", a, err)
	}
	for _, bad := range [][]string{{}, {"read", "--config"}, {"read", "extra"}} {
		if _, err := ParseArgs(bad); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}

var testSpec = &Spec{ConnectionSpecification: json.RawMessage(`{
	"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
	"required": ["deployment_url"], "additionalProperties": true,
	"properties": {"deployment_url": {"type": "string", "format": "uri"}, "page_size": {"type": "integer", "minimum": 1}}}`)}

func TestLoadConfigNamesTheSetting(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "config.json")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var cfg struct {
		DeploymentURL string `json:"deployment_url"`
	}
	if err := LoadConfig(write(`{"deployment_url":"http://h:1"}`), testSpec, &cfg); err != nil || cfg.DeploymentURL != "http://h:1" {
		t.Fatalf("valid config: %v", err)
	}
	for in, want := range map[string]string{
		`{"deployment_url":"http://h","page_size":0}`: "setting `page_size`",
		`{}`:                 "deployment_url",
		`{"deployment_url":`: "not valid JSON",
	} {
		err := LoadConfig(write(in), testSpec, &cfg)
		var e *Error
		if !errors.As(err, &e) || e.FailureType != FailureConfig || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want a config error mentioning %q", in, err, want)
		}
	}
	if err := LoadConfig(filepath.Join(dir, "missing.json"), testSpec, &cfg); err == nil {
		t.Error("missing file: want an error")
	}
}

// TestRunEmitsOnlyValidMessages runs commands through Run the way main
// does, including failures and a panic, and validates every output line.
func TestRunEmitsOnlyValidMessages(t *testing.T) {
	v, err := NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	c := Connector{Spec: testSpec, Commands: map[string]func(ctx context.Context, env *Env) error{
		"check": func(_ context.Context, env *Env) error {
			env.Log.Info().Str("table", "a b").Int("rows", 3).Msg("checking")
			return ConfigError(nil, "wrong key")
		},
		"discover": func(_ context.Context, env *Env) error { panic("boom") },
		"read": func(_ context.Context, env *Env) error {
			return TransientError(errors.New("connection refused"), "engine unreachable")
		},
	}}
	cases := []struct {
		args     []string
		code     int
		contains string
	}{
		{[]string{"spec"}, 0, `"type":"SPEC"`},
		{[]string{"check", "--config", "x"}, 0, `"status":"FAILED","message":"wrong key"`},
		{[]string{"discover"}, 1, `"failure_type":"system_error"`},
		{[]string{"read"}, 1, `"failure_type":"transient_error"`},
		{[]string{"nope"}, 1, `Unknown command`},
		{nil, 1, `"failure_type":"config_error"`},
	}
	for _, tc := range cases {
		var buf bytes.Buffer
		out := NewWriter(&buf)
		code := Run(c, tc.args, strings.NewReader(""), out)
		_ = out.Flush()
		if code != tc.code || !strings.Contains(buf.String(), tc.contains) {
			t.Errorf("%q: exit %d, output %s; want exit %d and %s", tc.args, code, buf.String(), tc.code, tc.contains)
		}
		for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			if err := v.Validate([]byte(line)); err != nil {
				t.Errorf("%q: invalid message %s: %v", tc.args, line, err)
			}
		}
	}
}

func TestLoggerWritesLogMessagesConcurrently(t *testing.T) {
	var buf bytes.Buffer
	out := NewWriter(&buf)
	log := NewLogger(out, zerolog.DebugLevel)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				log.Warn().Int("worker", i).Str("q", `say "hi"`).Msg("working")
			}
		}()
	}
	wg.Wait()
	_ = out.Flush()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 800 {
		t.Fatalf("%d lines, want 800", len(lines))
	}
	var m Message
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil || m.Type != TypeLog || m.Log.Level != LevelWarn ||
		!strings.HasPrefix(m.Log.Message, `working q="say \"hi\"" worker=`) {
		t.Fatalf("bad log line %s (%v)", lines[0], err)
	}
}
