package protocol

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"strings"
	"syscall"

	"github.com/rs/zerolog"
	"github.com/santhosh-tekuri/jsonschema/v5"
)

// Args are a connector's command line: the command and its file flags.
type Args struct {
	Command string
	Config  string
	Catalog string
	State   string
}

// ParseArgs reads `<command> [--config F] [--catalog F] [--state F]`,
// accepting `--flag=value` too. Other flags (the Python CDK's --debug, …)
// are ignored rather than fatal.
func ParseArgs(args []string) (Args, error) {
	var a Args
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if !strings.HasPrefix(arg, "-") {
			if a.Command != "" {
				return a, fmt.Errorf("unexpected argument %q after command %q", arg, a.Command)
			}
			a.Command = arg
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		var dst *string
		switch name {
		case "config":
			dst = &a.Config
		case "catalog":
			dst = &a.Catalog
		case "state":
			dst = &a.State
		default:
			continue
		}
		if !hasValue {
			if i+1 >= len(args) {
				return a, fmt.Errorf("--%s needs a file path", name)
			}
			i++
			value = args[i]
		}
		*dst = value
	}
	if a.Command == "" {
		return a, errors.New("no command given")
	}
	return a, nil
}

// Error is a failure with its Airbyte failure type.
type Error struct {
	FailureType string
	Message     string // for the user: what went wrong and what to do
	Err         error  // the cause, reported as internal_message
	Stream      *StreamDescriptor
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// ConfigError is a failure the user fixes in the configuration, catalog or
// state.
func ConfigError(err error, format string, args ...any) *Error {
	return &Error{FailureType: FailureConfig, Message: fmt.Sprintf(format, args...), Err: err}
}

// TransientError is a failure that may pass if the sync is retried.
func TransientError(err error, format string, args ...any) *Error {
	return &Error{FailureType: FailureTransient, Message: fmt.Sprintf(format, args...), Err: err}
}

// SystemError is any other failure.
func SystemError(err error, format string, args ...any) *Error {
	return &Error{FailureType: FailureSystem, Message: fmt.Sprintf(format, args...), Err: err}
}

// ErrorMessage returns the ERROR trace for err.
func ErrorMessage(err error) *Message {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{FailureType: FailureSystem, Message: "The connector failed: " + err.Error(), Err: err}
	}
	t := &ErrorTrace{Message: e.Message, FailureType: e.FailureType, StreamDescriptor: e.Stream}
	if e.Err != nil {
		t.InternalMessage = e.Err.Error()
	}
	return &Message{Type: TypeTrace, Trace: &Trace{Type: TraceError, EmittedAt: float64(NowMillis()), Error: t}}
}

// Env is what a command runs with.
type Env struct {
	Args Args
	Out  *Writer
	Log  zerolog.Logger
	In   io.Reader
}

// Connector is a connector's spec and commands ("check", "discover",
// "read", "write"). Check returns nil for success; an *Error of type
// config or transient becomes a FAILED status, anything else an ERROR
// trace.
type Connector struct {
	Spec     *Spec
	Commands map[string]func(ctx context.Context, env *Env) error
}

// Main runs the connector with os.Args and exits: 0 on success, 1 after an
// ERROR trace on failure. Nothing but protocol messages reaches stdout.
func Main(c Connector) {
	out := NewWriter(os.Stdout)
	code := Run(c, os.Args[1:], os.Stdin, out)
	_ = out.Flush()
	os.Exit(code)
}

// Run runs one command and returns the exit code.
func Run(c Connector, argv []string, stdin io.Reader, out *Writer) (code int) {
	level := zerolog.InfoLevel
	if l, err := zerolog.ParseLevel(os.Getenv("LOG_LEVEL")); err == nil && l != zerolog.NoLevel {
		level = l
	}
	log := NewLogger(out, level)
	defer func() {
		if p := recover(); p != nil {
			m := ErrorMessage(SystemError(fmt.Errorf("panic: %v", p), "The connector hit an internal error; please report it"))
			m.Trace.Error.StackTrace = string(debug.Stack())
			_ = out.Write(m)
			code = 1
		}
	}()
	args, err := ParseArgs(argv)
	if err != nil {
		_ = out.Write(ErrorMessage(ConfigError(err, "Invalid command line: %v. Usage: spec | check --config F | discover --config F | read --config F --catalog F [--state F] | write --config F --catalog F", err)))
		return 1
	}
	if args.Command == "spec" {
		_ = out.Write(&Message{Type: TypeSpec, Spec: c.Spec})
		return 0
	}
	run, ok := c.Commands[args.Command]
	if !ok {
		names := []string{"spec"}
		for n := range c.Commands {
			names = append(names, n)
		}
		sort.Strings(names)
		_ = out.Write(ErrorMessage(ConfigError(nil, "Unknown command %q: expected one of %s", args.Command, strings.Join(names, ", "))))
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = run(ctx, &Env{Args: args, Out: out, Log: log, In: stdin})
	if args.Command == "check" {
		var e *Error
		if err == nil {
			return writeOrFail(out, &Message{Type: TypeConnectionStatus, ConnectionStatus: &ConnectionStatus{Status: StatusSucceeded}})
		}
		if errors.As(err, &e) && e.FailureType != FailureSystem {
			return writeOrFail(out, &Message{Type: TypeConnectionStatus, ConnectionStatus: &ConnectionStatus{Status: StatusFailed, Message: e.Error()}})
		}
	}
	if err != nil {
		log.Error().Err(err).Msg("command failed")
		_ = out.Write(ErrorMessage(err))
		return 1
	}
	return writeOrFail(out, nil)
}

func writeOrFail(out *Writer, m *Message) int {
	if m != nil {
		if out.Write(m) != nil {
			return 1
		}
	}
	if out.Flush() != nil {
		return 1
	}
	return 0
}

// LoadConfig reads the config file, validates it against the spec's
// connectionSpecification and decodes it into dst. Failures are config
// errors naming the file or the setting.
func LoadConfig(path string, spec *Spec, dst any) error {
	if path == "" {
		return ConfigError(nil, "No configuration: pass --config <file>")
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return ConfigError(err, "Cannot read the configuration file %s", path)
	}
	var doc any
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return ConfigError(err, "The configuration file %s is not valid JSON", path)
	}
	schema, err := compileSchema("connectionSpecification.json", spec.ConnectionSpecification)
	if err != nil {
		return SystemError(err, "The connector's own specification does not compile")
	}
	if err := schema.Validate(doc); err != nil {
		return ConfigError(nil, "Invalid configuration: %s", describeValidation(err))
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return ConfigError(err, "Invalid configuration")
	}
	return nil
}

func compileSchema(name string, schema []byte) (*jsonschema.Schema, error) {
	c := jsonschema.NewCompiler()
	c.Draft = jsonschema.Draft7
	c.AssertFormat = true
	if err := c.AddResource(name, strings.NewReader(string(schema))); err != nil {
		return nil, err
	}
	return c.Compile(name)
}

// describeValidation renders a validation error as "setting `x`: reason"
// lines, deepest causes first.
func describeValidation(err error) string {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return err.Error()
	}
	var parts []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			loc := strings.TrimPrefix(e.InstanceLocation, "/")
			if loc == "" {
				parts = append(parts, e.Message)
			} else {
				parts = append(parts, fmt.Sprintf("setting `%s`: %s", strings.ReplaceAll(loc, "/", "."), e.Message))
			}
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	return strings.Join(parts, "; ")
}

// LoadCatalog reads a configured catalog file.
func LoadCatalog(path string) (*ConfiguredCatalog, error) {
	if path == "" {
		return nil, ConfigError(nil, "No catalog: pass --catalog <file>")
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, ConfigError(err, "Cannot read the catalog file %s", path)
	}
	var c ConfiguredCatalog
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, ConfigError(err, "The catalog file %s is not a valid configured catalog", path)
	}
	for i, s := range c.Streams {
		if s.Stream.Name == "" {
			return nil, ConfigError(nil, "Catalog stream %d has no name", i)
		}
	}
	return &c, nil
}
