// Package functions makes PostgreSQL functions callable over Convex's
// functions API: a path `module:function` names the function
// `module.function` (`function` alone: schema public), arguments are passed
// by name with their declared types as bind parameters (never spliced into
// SQL), and results come back in the export API's value formats.
//
// Only functions in the schemas the operator exposes are callable. A
// query runs in a READ ONLY transaction and may only call STABLE or
// IMMUTABLE functions; a mutation runs in a read-write transaction; an
// action runs outside an explicit transaction. Calls run as the caller's
// PostgreSQL role (SET ROLE), so the database's grants decide what it may
// do, under a statement timeout.
package functions

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/shapelog/shapelog/engine/catalog"
)

// Config says what may be called and by whom.
type Config struct {
	// Schemas are the exposed schemas; with none, nothing is callable.
	Schemas []string
	// Tokens map bearer tokens to the PostgreSQL role calls run as.
	Tokens map[string]string
	// PublicRole is the role of calls without a token; "" refuses them.
	PublicRole string
	// Timeout is each call's statement_timeout (default 10s).
	Timeout time.Duration
}

// Kind is how a function is called.
type Kind int

// Kinds of calls. Run (/api/run) calls STABLE and IMMUTABLE functions as
// queries and the others as mutations.
const (
	Query Kind = iota
	Mutation
	Action
	Run
)

// Caller is who calls: the admin key runs as the engine's own role.
type Caller struct {
	Admin bool
	Role  string
}

// Result is a call's answer (HTTP 200 either way).
type Result struct {
	Status       string          `json:"status"`
	Value        json.RawMessage `json:"value,omitempty"`
	ErrorMessage string          `json:"errorMessage,omitempty"`
	ErrorData    *ErrorData      `json:"errorData,omitempty"`
	LogLines     []string        `json:"logLines,omitempty"`
}

// ErrorData carries a PostgreSQL error's fields.
type ErrorData struct {
	SQLState string `json:"sqlstate"`
	Detail   string `json:"detail,omitempty"`
	Hint     string `json:"hint,omitempty"`
}

// RequestError is a malformed call, answered with a 4xx.
type RequestError struct {
	Status        int
	Code, Message string
}

func (e *RequestError) Error() string { return e.Message }

// Service calls functions on its own small pool, whose notices become the
// calls' log lines.
type Service struct {
	cfg     Config
	pool    *pgxpool.Pool
	types   *catalog.Types
	log     zerolog.Logger
	notices sync.Map // *pgconn.PgConn -> *[]string
	schemas map[string]bool
}

// New opens the service's pool on databaseURL.
func New(ctx context.Context, databaseURL string, cfg Config, types *catalog.Types, log zerolog.Logger) (*Service, error) {
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	s := &Service{cfg: cfg, types: types, log: log.With().Str("component", "functions").Logger(), schemas: map[string]bool{}}
	for _, sc := range cfg.Schemas {
		s.schemas[sc] = true
	}
	pc, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, err
	}
	for k, v := range catalog.SessionSettings {
		pc.ConnConfig.RuntimeParams[k] = v
	}
	pc.ConnConfig.RuntimeParams["application_name"] = "shapelog functions"
	pc.MaxConns = 10
	pc.ConnConfig.OnNotice = func(c *pgconn.PgConn, n *pgconn.Notice) {
		if lines, ok := s.notices.Load(c); ok {
			l := lines.(*[]string)
			*l = append(*l, fmt.Sprintf("[%s] %s", noticeLevel(n.Severity), n.Message))
		}
	}
	if s.pool, err = pgxpool.NewWithConfig(ctx, pc); err != nil {
		return nil, err
	}
	return s, nil
}

// Close closes the pool.
func (s *Service) Close() { s.pool.Close() }

// Authorize maps an Authorization header to a caller: "Convex <key>" is
// the admin (isAdminKey checks the key), "Bearer <token>" a configured
// token's role, none the public role.
func (s *Service) Authorize(header string, isAdminKey func(string) bool) (Caller, *RequestError) {
	scheme, value, _ := strings.Cut(strings.TrimSpace(header), " ")
	switch {
	case header == "":
		if s.cfg.PublicRole == "" {
			return Caller{}, &RequestError{401, "Unauthenticated", "This engine allows no anonymous function calls: send Authorization: Bearer <token>"}
		}
		return Caller{Role: s.cfg.PublicRole}, nil
	case scheme == "Convex":
		if !isAdminKey(strings.TrimSpace(value)) {
			return Caller{}, &RequestError{401, "BadAdminKey", "The provided admin key was invalid for this instance"}
		}
		return Caller{Admin: true}, nil
	case scheme == "Bearer":
		for token, role := range s.cfg.Tokens {
			if subtle.ConstantTimeCompare([]byte(token), []byte(strings.TrimSpace(value))) == 1 {
				return Caller{Role: role}, nil
			}
		}
		return Caller{}, &RequestError{401, "Unauthenticated", "The bearer token is not valid for this engine"}
	}
	return Caller{}, &RequestError{400, "InvalidAuthHeader", "Authorization must be `Bearer <token>` or `Convex <admin key>`"}
}

// ParsePath splits "module:function" (or "function", in schema public).
func ParsePath(path string) (schema, name string, err *RequestError) {
	bad := &RequestError{400, "BadConvexFunctionIdentifier", fmt.Sprintf("%q is not a valid path to a function: use `schema:function` (a PostgreSQL function schema.function) or `function` (schema public)", path)}
	module, fn, found := strings.Cut(path, ":")
	if !found {
		module, fn = "public", path
	}
	if module == "" || fn == "" || strings.ContainsAny(module, ":/") || strings.Contains(fn, ":") {
		return "", "", bad
	}
	return module, fn, nil
}

// proc is one candidate function.
type proc struct {
	volatile  byte
	retset    bool
	rettype   uint32
	composite bool
	void      bool
	argNames  []string
	argTypes  []uint32
	nDefaults int
	signature string
}

// Call runs one function call. The error is for request-level failures;
// everything the function or the database reports is in the Result.
func (s *Service) Call(ctx context.Context, kind Kind, path string, rawArgs json.RawMessage, format catalog.Format, caller Caller) (*Result, error) {
	schema, name, perr := ParsePath(path)
	if perr != nil {
		return nil, perr
	}
	args := map[string]json.RawMessage{}
	if trimmed := strings.TrimSpace(string(rawArgs)); trimmed != "" && trimmed != "null" {
		if err := json.Unmarshal(rawArgs, &args); err != nil {
			return nil, &RequestError{400, "BadJsonBody", "`args` must be a JSON object of named arguments"}
		}
	}
	notFound := &Result{Status: "error", ErrorMessage: fmt.Sprintf("Could not find public function for '%s'.", path)}
	if !s.schemas[schema] {
		return notFound, nil
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	var lines []string
	s.notices.Store(conn.Conn().PgConn(), &lines)
	defer s.notices.Delete(conn.Conn().PgConn())
	res, clean, err := s.call(ctx, conn.Conn(), kind, schema, name, path, args, format, caller)
	if !clean {
		// Role or settings may still be set on the session: drop it.
		_ = conn.Conn().Close(context.Background())
	}
	conn.Release()
	if err != nil {
		return nil, err
	}
	if res == nil {
		res = notFound
	}
	res.LogLines = lines
	return res, nil
}

// call runs the call on conn; clean says whether conn is back in its
// initial state (no transaction, role or settings left).
func (s *Service) call(ctx context.Context, conn *pgx.Conn, kind Kind, schema, name, path string, args map[string]json.RawMessage, format catalog.Format, caller Caller) (res *Result, clean bool, err error) {
	p, res := s.resolve(ctx, conn, schema, name, path, args)
	if res != nil || p == nil {
		return res, true, nil
	}
	if kind == Run {
		kind = Mutation
		if p.volatile != 'v' {
			kind = Query
		}
	}
	if kind == Query && p.volatile == 'v' {
		return &Result{Status: "error", ErrorMessage: fmt.Sprintf("'%s' is a VOLATILE function: a query may only call STABLE or IMMUTABLE functions; call it as a mutation or an action", path)}, true, nil
	}
	local := "LOCAL "
	switch kind {
	case Query:
		_, err = conn.Exec(ctx, "BEGIN READ ONLY")
	case Mutation:
		_, err = conn.Exec(ctx, "BEGIN")
	default:
		local = ""
	}
	if err != nil {
		return nil, false, err
	}
	finish := func(commit bool) bool {
		end := "ROLLBACK"
		if commit {
			end = "COMMIT"
		}
		if kind != Action {
			_, err := conn.Exec(context.Background(), end)
			return err == nil
		}
		_, err := conn.Exec(context.Background(), "RESET ROLE; RESET statement_timeout; RESET client_min_messages")
		return err == nil
	}
	setup := fmt.Sprintf("SET %sstatement_timeout = %d; SET %sclient_min_messages = log", local, s.cfg.Timeout.Milliseconds(), local)
	if !caller.Admin {
		setup += fmt.Sprintf("; SET %sROLE %s", local, pgx.Identifier{caller.Role}.Sanitize())
	}
	if _, err := conn.Exec(ctx, setup); err != nil {
		return pgError(err), finish(false), nil
	}
	res, err = s.execute(ctx, conn, schema, name, p, args, format)
	if err != nil {
		return nil, finish(false), err
	}
	return res, finish(res.Status == "success"), nil
}

// resolve finds the function whose argument names fit args. A nil proc
// and nil Result means no such function.
func (s *Service) resolve(ctx context.Context, conn *pgx.Conn, schema, name, path string, args map[string]json.RawMessage) (*proc, *Result) {
	rows, err := conn.Query(ctx, `
		SELECT p.provolatile::text, p.proretset, p.prorettype, t.typtype::text, p.pronargdefaults,
		       coalesce(p.proargnames, '{}'), coalesce(p.proargmodes::text[], '{}'), p.proargtypes::oid[],
		       format('%s(%s)', p.proname, pg_get_function_identity_arguments(p.oid))
		FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_type t ON t.oid = p.prorettype
		WHERE n.nspname = $1 AND p.proname = $2 AND p.prokind = 'f'`, schema, name)
	if err != nil {
		return nil, pgError(err)
	}
	var cands []*proc
	for rows.Next() {
		p := &proc{}
		var volatile, typtype string
		var names, modes []string
		if err := rows.Scan(&volatile, &p.retset, &p.rettype, &typtype, &p.nDefaults, &names, &modes, &p.argTypes, &p.signature); err != nil {
			rows.Close()
			return nil, pgError(err)
		}
		p.volatile = volatile[0]
		p.composite = typtype == "c" || p.rettype == 2249 // record
		p.void = p.rettype == 2278
		// proargnames covers every argument, OUT ones included, when modes
		// are present; only input arguments are passed.
		for i, n := range names {
			if len(modes) == 0 || modes[i] == "i" || modes[i] == "b" || modes[i] == "v" {
				p.argNames = append(p.argNames, n)
			}
		}
		cands = append(cands, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, pgError(err)
	}
	if len(cands) == 0 {
		return nil, nil
	}
	given := make([]string, 0, len(args))
	for k := range args {
		given = append(given, k)
	}
	sort.Strings(given)
	var fit []*proc
	for _, p := range cands {
		if fits(p, args) {
			fit = append(fit, p)
		}
	}
	switch len(fit) {
	case 1:
		return fit[0], nil
	case 0:
		var sigs []string
		for _, p := range cands {
			sigs = append(sigs, p.signature)
		}
		return nil, &Result{Status: "error", ErrorMessage: fmt.Sprintf("Wrong arguments for '%s': got (%s), expected %s (arguments are passed by name; those with DEFAULT may be left out)", path, strings.Join(given, ", "), strings.Join(sigs, " or "))}
	}
	return nil, &Result{Status: "error", ErrorMessage: fmt.Sprintf("Ambiguous call of '%s' with arguments (%s): several overloads fit", path, strings.Join(given, ", "))}
}

// fits reports whether args name every required input argument of p and
// nothing else.
func fits(p *proc, args map[string]json.RawMessage) bool {
	if len(p.argNames) != len(p.argTypes) && len(p.argTypes) > 0 {
		return false // unnamed arguments cannot be passed by name
	}
	for k := range args {
		if !slices.Contains(p.argNames, k) {
			return false
		}
	}
	required := len(p.argTypes) - p.nDefaults
	for i := 0; i < required; i++ {
		if _, ok := args[p.argNames[i]]; !ok {
			return false
		}
	}
	return true
}

// execute runs SELECT * FROM schema.name(arg => $n, …) with each argument
// bound as its declared type, and renders the result.
func (s *Service) execute(ctx context.Context, conn *pgx.Conn, schema, name string, p *proc, args map[string]json.RawMessage, format catalog.Format) (*Result, error) {
	var params []string
	var values [][]byte
	var oids []uint32
	for i, n := range p.argNames {
		raw, ok := args[n]
		if !ok {
			continue
		}
		typ, err := s.types.Lookup(ctx, conn, p.argTypes[i])
		if err != nil {
			return nil, err
		}
		v, err := argumentText(raw, typ)
		if err != nil {
			return &Result{Status: "error", ErrorMessage: fmt.Sprintf("Argument %q: %v", n, err)}, nil
		}
		values = append(values, v)
		oids = append(oids, p.argTypes[i])
		params = append(params, fmt.Sprintf("%s => $%d", pgx.Identifier{n}.Sanitize(), len(values)))
	}
	sql := fmt.Sprintf("SELECT * FROM %s(%s)", pgx.Identifier{schema, name}.Sanitize(), strings.Join(params, ", "))
	rr := conn.PgConn().ExecParams(ctx, sql, values, oids, nil, nil)
	fields := rr.FieldDescriptions()
	colTypes := make([]*catalog.Type, len(fields))
	var rows [][][]byte
	for rr.NextRow() {
		vals := rr.Values()
		row := make([][]byte, len(vals))
		for i, v := range vals {
			if v != nil {
				row[i] = append([]byte{}, v...)
			}
		}
		rows = append(rows, row)
	}
	if _, err := rr.Close(); err != nil {
		return pgError(err), nil
	}
	for i, f := range fields {
		t, err := s.types.Lookup(ctx, conn, f.DataTypeOID)
		if err != nil {
			return nil, err
		}
		colTypes[i] = t
	}
	renderRow := func(dst []byte, row [][]byte) ([]byte, error) {
		dst = append(dst, '{')
		for i, f := range fields {
			if i > 0 {
				dst = append(dst, ',')
			}
			k, _ := json.Marshal(f.Name)
			dst = append(append(dst, k...), ':')
			var err error
			if dst, err = renderValue(dst, colTypes[i], row[i], format); err != nil {
				return nil, err
			}
		}
		return append(dst, '}'), nil
	}
	var out []byte
	var err error
	switch {
	case p.retset:
		out = append(out, '[')
		for i, row := range rows {
			if i > 0 {
				out = append(out, ',')
			}
			if out, err = renderRow(out, row); err != nil {
				return nil, err
			}
		}
		out = append(out, ']')
	case len(rows) == 0 || p.void:
		out = []byte("null")
	case p.composite:
		out, err = renderRow(nil, rows[0])
	default:
		out, err = renderValue(nil, colTypes[0], rows[0][0], format)
	}
	if err != nil {
		return nil, err
	}
	return &Result{Status: "success", Value: out}, nil
}

func renderValue(dst []byte, t *catalog.Type, text []byte, f catalog.Format) ([]byte, error) {
	if text == nil {
		return append(dst, "null"...), nil
	}
	return catalog.AppendValue(dst, t, text, f)
}

// argumentText renders a JSON argument as the text input of type t: Convex
// encoded values ($integer, $float, $bytes) decoded, arrays as array
// literals for array types, other objects and arrays as JSON text.
func argumentText(raw json.RawMessage, t *catalog.Type) ([]byte, error) {
	var v any
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, errors.New("not valid JSON")
	}
	switch v := v.(type) {
	case nil:
		return nil, nil
	case string:
		return []byte(v), nil
	case json.Number:
		return []byte(v), nil
	case bool:
		return []byte(strconv.FormatBool(v)), nil
	case []any:
		if t.Kind == catalog.KindArray {
			return catalog.AppendArrayLiteral(nil, raw)
		}
		return raw, nil
	case map[string]any:
		if len(v) == 1 {
			for k, x := range v {
				s, _ := x.(string)
				b, err := base64.StdEncoding.DecodeString(s)
				switch {
				case k == "$integer" && err == nil && len(b) == 8:
					return strconv.AppendInt(nil, int64(binary.LittleEndian.Uint64(b)), 10), nil
				case k == "$float" && err == nil && len(b) == 8:
					return strconv.AppendFloat(nil, math.Float64frombits(binary.LittleEndian.Uint64(b)), 'g', -1, 64), nil
				case k == "$bytes" && err == nil:
					return append([]byte(`\x`), hex.EncodeToString(b)...), nil
				}
			}
		}
		return raw, nil
	}
	return raw, nil
}

// pgError turns a database error into an error result.
func pgError(err error) *Result {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return &Result{Status: "error", ErrorMessage: pe.Message, ErrorData: &ErrorData{SQLState: pe.Code, Detail: pe.Detail, Hint: pe.Hint}}
	}
	return &Result{Status: "error", ErrorMessage: err.Error()}
}

// noticeLevel maps a notice's severity to Convex's log levels.
func noticeLevel(severity string) string {
	switch severity {
	case "WARNING":
		return "WARN"
	case "INFO":
		return "INFO"
	case "DEBUG":
		return "DEBUG"
	case "ERROR":
		return "ERROR"
	}
	return "LOG" // NOTICE, LOG
}
