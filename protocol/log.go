package protocol

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/rs/zerolog"
)

// logWriter turns zerolog's JSON lines into LOG messages on the Writer.
type logWriter struct{ out *Writer }

// NewLogger returns a zerolog logger whose lines become LOG messages:
// level mapped, the message followed by the other fields as key=value in
// key order, so logs stay structured and greppable in the Airbyte UI.
func NewLogger(out *Writer, level zerolog.Level) zerolog.Logger {
	return zerolog.New(logWriter{out}).Level(level).With().Timestamp().Logger()
}

var logLevels = map[string]string{
	"trace": LevelTrace, "debug": LevelDebug, "info": LevelInfo, "warn": LevelWarn,
	"error": LevelError, "fatal": LevelFatal, "panic": LevelFatal,
}

func (w logWriter) Write(p []byte) (int, error) {
	var fields map[string]any
	if err := json.Unmarshal(p, &fields); err != nil {
		fields = map[string]any{zerolog.MessageFieldName: strings.TrimSpace(string(p))}
	}
	level := logLevels[fmt.Sprint(fields[zerolog.LevelFieldName])]
	if level == "" {
		level = LevelInfo
	}
	msg, _ := fields[zerolog.MessageFieldName].(string)
	delete(fields, zerolog.MessageFieldName)
	delete(fields, zerolog.LevelFieldName)
	delete(fields, zerolog.TimestampFieldName)
	stack, _ := fields[zerolog.ErrorStackFieldName].(string)
	delete(fields, zerolog.ErrorStackFieldName)
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(msg)
	for _, k := range keys {
		v, err := json.Marshal(fields[k])
		if err != nil {
			v = []byte(fmt.Sprint(fields[k]))
		}
		if s, ok := fields[k].(string); ok && !strings.ContainsAny(s, " \"=") && s != "" {
			v = []byte(s)
		}
		fmt.Fprintf(&b, " %s=%s", k, v)
	}
	m := &Message{Type: TypeLog, Log: &Log{Level: level, Message: b.String(), StackTrace: stack}}
	if err := w.out.Write(m); err != nil {
		return 0, err
	}
	return len(p), nil
}
