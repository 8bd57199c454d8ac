// Package protocol implements the Airbyte protocol for the shapelog
// connectors: message types, a stdin reader, a thread-safe stdout writer,
// a zerolog writer that turns log lines into LOG messages, error traces,
// and the command line every connector shares.
//
// Blobs the platform owns (record data, state, JSON schemas, configs) are
// kept as raw JSON so integers keep their precision and unknown fields
// survive an echo.
package protocol

import (
	"encoding/json"
	"strconv"
	"time"
)

// Message types.
const (
	TypeRecord           = "RECORD"
	TypeState            = "STATE"
	TypeLog              = "LOG"
	TypeSpec             = "SPEC"
	TypeConnectionStatus = "CONNECTION_STATUS"
	TypeCatalog          = "CATALOG"
	TypeTrace            = "TRACE"
	TypeControl          = "CONTROL"
)

// Message is the AirbyteMessage envelope: Type plus the one payload field
// that goes with it.
type Message struct {
	Type             string            `json:"type"`
	Record           *Record           `json:"record,omitempty"`
	State            *State            `json:"state,omitempty"`
	Log              *Log              `json:"log,omitempty"`
	Spec             *Spec             `json:"spec,omitempty"`
	ConnectionStatus *ConnectionStatus `json:"connectionStatus,omitempty"`
	Catalog          *Catalog          `json:"catalog,omitempty"`
	Trace            *Trace            `json:"trace,omitempty"`
	Control          *Control          `json:"control,omitempty"`
}

// Record is an AirbyteRecordMessage. EmittedAt is in milliseconds.
type Record struct {
	Stream    string          `json:"stream"`
	Namespace string          `json:"namespace,omitempty"`
	Data      json.RawMessage `json:"data"`
	EmittedAt int64           `json:"emitted_at"`
	Meta      *RecordMeta     `json:"meta,omitempty"`
}

// RecordMeta lists the changes a connector made to a record's values.
type RecordMeta struct {
	Changes []FieldChange `json:"changes"`
}

// FieldChange says a field was NULLED or TRUNCATED, and why.
type FieldChange struct {
	Field  string `json:"field"`
	Change string `json:"change"`
	Reason string `json:"reason"`
}

// State types.
const (
	StateStream = "STREAM"
	StateGlobal = "GLOBAL"
	StateLegacy = "LEGACY"
)

// State is an AirbyteStateMessage. A destination echoes states it receives
// with Echo, which keeps every field, known or not.
type State struct {
	Type             string           `json:"type,omitempty"`
	Stream           *StreamState     `json:"stream,omitempty"`
	Global           *GlobalState     `json:"global,omitempty"`
	Data             json.RawMessage  `json:"data,omitempty"`
	SourceStats      *StateStats      `json:"sourceStats,omitempty"`
	DestinationStats *StateStats      `json:"destinationStats,omitempty"`
	ID               *json.RawMessage `json:"id,omitempty"`
	// PartitionID ties a STATE to the records naming it (speed mode).
	PartitionID string `json:"partition_id,omitempty"`
}

// StreamState is one stream's state blob.
type StreamState struct {
	StreamDescriptor StreamDescriptor `json:"stream_descriptor"`
	StreamState      json.RawMessage  `json:"stream_state,omitempty"`
}

// GlobalState is shared state plus per-stream states.
type GlobalState struct {
	SharedState  json.RawMessage `json:"shared_state,omitempty"`
	StreamStates []StreamState   `json:"stream_states"`
}

// StateStats carries record counts. Counts are written with a decimal
// point (5.0), as the schema's number type and Java readers expect.
type StateStats struct {
	RecordCount Count `json:"recordCount"`
}

// Count is a record count written as a JSON number with a decimal point.
type Count float64

// MarshalJSON writes c as e.g. 5.0.
func (c Count) MarshalJSON() ([]byte, error) {
	b := strconv.AppendFloat(nil, float64(c), 'f', -1, 64)
	for _, ch := range b {
		if ch == '.' {
			return b, nil
		}
	}
	return append(b, ".0"...), nil
}

// StreamDescriptor names a stream. A nil Namespace and "" are different
// streams in the protocol, so Namespace is a pointer.
type StreamDescriptor struct {
	Name      string  `json:"name"`
	Namespace *string `json:"namespace,omitempty"`
}

// NewDescriptor returns the descriptor of name in namespace ("" = none).
func NewDescriptor(namespace, name string) StreamDescriptor {
	d := StreamDescriptor{Name: name}
	if namespace != "" {
		d.Namespace = &namespace
	}
	return d
}

// NamespaceOrEmpty returns the namespace, "" when there is none.
func (d StreamDescriptor) NamespaceOrEmpty() string {
	if d.Namespace == nil {
		return ""
	}
	return *d.Namespace
}

// String renders the descriptor as namespace.name for messages.
func (d StreamDescriptor) String() string {
	if d.Namespace == nil || *d.Namespace == "" {
		return d.Name
	}
	return *d.Namespace + "." + d.Name
}

// Log levels.
const (
	LevelFatal = "FATAL"
	LevelError = "ERROR"
	LevelWarn  = "WARN"
	LevelInfo  = "INFO"
	LevelDebug = "DEBUG"
	LevelTrace = "TRACE"
)

// Log is an AirbyteLogMessage.
type Log struct {
	Level      string `json:"level"`
	Message    string `json:"message"`
	StackTrace string `json:"stack_trace,omitempty"`
}

// Spec is a ConnectorSpecification.
type Spec struct {
	DocumentationURL              string          `json:"documentationUrl,omitempty"`
	ChangelogURL                  string          `json:"changelogUrl,omitempty"`
	ConnectionSpecification       json.RawMessage `json:"connectionSpecification"`
	SupportsIncremental           bool            `json:"supportsIncremental,omitempty"`
	SupportsNormalization         bool            `json:"supportsNormalization"`
	SupportsDBT                   bool            `json:"supportsDBT"`
	SupportedDestinationSyncModes []string        `json:"supported_destination_sync_modes,omitempty"`
	ProtocolVersion               string          `json:"protocol_version,omitempty"`
}

// Connection statuses.
const (
	StatusSucceeded = "SUCCEEDED"
	StatusFailed    = "FAILED"
)

// ConnectionStatus is the answer to check.
type ConnectionStatus struct {
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
}

// Sync modes.
const (
	SyncFullRefresh = "full_refresh"
	SyncIncremental = "incremental"

	DestinationAppend      = "append"
	DestinationOverwrite   = "overwrite"
	DestinationAppendDedup = "append_dedup"
)

// Catalog is an AirbyteCatalog, the answer to discover.
type Catalog struct {
	Streams []Stream `json:"streams"`
}

// Stream is an AirbyteStream.
type Stream struct {
	Name                    string          `json:"name"`
	Namespace               string          `json:"namespace,omitempty"`
	JSONSchema              json.RawMessage `json:"json_schema"`
	SupportedSyncModes      []string        `json:"supported_sync_modes"`
	SourceDefinedCursor     bool            `json:"source_defined_cursor,omitempty"`
	DefaultCursorField      []string        `json:"default_cursor_field,omitempty"`
	SourceDefinedPrimaryKey [][]string      `json:"source_defined_primary_key,omitempty"`
	IsResumable             bool            `json:"is_resumable,omitempty"`
}

// Descriptor returns the stream's descriptor.
func (s Stream) Descriptor() StreamDescriptor { return NewDescriptor(s.Namespace, s.Name) }

// ConfiguredCatalog is what read and write are given.
type ConfiguredCatalog struct {
	Streams []ConfiguredStream `json:"streams"`
}

// ConfiguredStream is one stream with the modes the user chose.
type ConfiguredStream struct {
	Stream              Stream     `json:"stream"`
	SyncMode            string     `json:"sync_mode"`
	DestinationSyncMode string     `json:"destination_sync_mode"`
	CursorField         []string   `json:"cursor_field,omitempty"`
	PrimaryKey          [][]string `json:"primary_key,omitempty"`
	GenerationID        *int64     `json:"generation_id,omitempty"`
	MinimumGenerationID *int64     `json:"minimum_generation_id,omitempty"`
	SyncID              *int64     `json:"sync_id,omitempty"`
}

// Trace types.
const (
	TraceError        = "ERROR"
	TraceEstimate     = "ESTIMATE"
	TraceStreamStatus = "STREAM_STATUS"
)

// Trace is an AirbyteTraceMessage. EmittedAt is in milliseconds.
type Trace struct {
	Type         string        `json:"type"`
	EmittedAt    float64       `json:"emitted_at"`
	Error        *ErrorTrace   `json:"error,omitempty"`
	Estimate     *Estimate     `json:"estimate,omitempty"`
	StreamStatus *StreamStatus `json:"stream_status,omitempty"`
}

// Failure types of an error trace.
const (
	FailureSystem    = "system_error"
	FailureConfig    = "config_error"
	FailureTransient = "transient_error"
)

// ErrorTrace reports a failure.
type ErrorTrace struct {
	Message          string            `json:"message"`
	InternalMessage  string            `json:"internal_message,omitempty"`
	StackTrace       string            `json:"stack_trace,omitempty"`
	FailureType      string            `json:"failure_type,omitempty"`
	StreamDescriptor *StreamDescriptor `json:"stream_descriptor,omitempty"`
}

// Estimate is a row/byte estimate for a stream.
type Estimate struct {
	Name        string `json:"name"`
	Type        string `json:"type"`
	Namespace   string `json:"namespace,omitempty"`
	RowEstimate int64  `json:"row_estimate"`
}

// Stream statuses.
const (
	StreamStarted    = "STARTED"
	StreamRunning    = "RUNNING"
	StreamComplete   = "COMPLETE"
	StreamIncomplete = "INCOMPLETE"
)

// StreamStatus is a stream's progress.
type StreamStatus struct {
	StreamDescriptor StreamDescriptor `json:"stream_descriptor"`
	Status           string           `json:"status"`
}

// Control is an AirbyteControlMessage.
type Control struct {
	Type            string          `json:"type"`
	EmittedAt       float64         `json:"emitted_at"`
	ConnectorConfig json.RawMessage `json:"connectorConfig,omitempty"`
}

// NowMillis is the current time in epoch milliseconds.
func NowMillis() int64 { return time.Now().UnixMilli() }

// StreamStatusMessage returns a STREAM_STATUS trace.
func StreamStatusMessage(d StreamDescriptor, status string) *Message {
	return &Message{Type: TypeTrace, Trace: &Trace{
		Type: TraceStreamStatus, EmittedAt: float64(NowMillis()),
		StreamStatus: &StreamStatus{StreamDescriptor: d, Status: status},
	}}
}

// EstimateMessage returns a per-stream row estimate trace.
func EstimateMessage(d StreamDescriptor, rows int64) *Message {
	return &Message{Type: TypeTrace, Trace: &Trace{
		Type: TraceEstimate, EmittedAt: float64(NowMillis()),
		Estimate: &Estimate{Name: d.Name, Namespace: d.NamespaceOrEmpty(), Type: "STREAM", RowEstimate: rows},
	}}
}

// LogMessage returns a LOG message.
func LogMessage(level, msg string) *Message {
	return &Message{Type: TypeLog, Log: &Log{Level: level, Message: msg}}
}
