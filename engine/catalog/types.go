package catalog

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
)

// Kind is the family a PostgreSQL type belongs to, after resolving domains to
// their base type. It decides how values are encoded (AppendValue) and
// described (Schema). Every type without a kind of its own (composite,
// range, inet, money, xml, geometric, tsvector, …) is KindText: its text
// output is sent as a JSON string.
type Kind int

const (
	KindText        Kind = iota // text, varchar, bpchar, name and every type without a kind of its own
	KindInt2                    // smallint
	KindInt4                    // integer
	KindInt8                    // bigint
	KindOID                     // oid, xid, cid: unsigned 32-bit integers
	KindFloat4                  // real
	KindFloat8                  // double precision
	KindNumeric                 // numeric
	KindBool                    // boolean
	KindUUID                    // uuid
	KindDate                    // date
	KindTime                    // time without time zone
	KindTimeTZ                  // time with time zone
	KindTimestamp               // timestamp without time zone
	KindTimestampTZ             // timestamp with time zone
	KindInterval                // interval
	KindBytea                   // bytea
	KindJSON                    // json
	KindJSONB                   // jsonb
	KindArray                   // any array type; Type.Elem is the element type
	KindEnum                    // enum types; Type.EnumValues are the labels
)

var kindNames = [...]string{
	KindText: "text", KindInt2: "int2", KindInt4: "int4", KindInt8: "int8", KindOID: "oid",
	KindFloat4: "float4", KindFloat8: "float8", KindNumeric: "numeric", KindBool: "bool",
	KindUUID: "uuid", KindDate: "date", KindTime: "time", KindTimeTZ: "timetz",
	KindTimestamp: "timestamp", KindTimestampTZ: "timestamptz", KindInterval: "interval",
	KindBytea: "bytea", KindJSON: "json", KindJSONB: "jsonb", KindArray: "array", KindEnum: "enum",
}

// String names the kind (the PostgreSQL short type name of its family).
func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Type describes one PostgreSQL type as the engine needs it. Types are
// shared and must not be modified once built.
type Type struct {
	OID  uint32
	Name string // format_type() style name: "integer", "character varying", "my_enum", "integer[]"
	Kind Kind   // of the base type for domains
	// Elem is the element type of a KindArray type (domains resolved).
	Elem *Type
	// Delim is the array element delimiter: for an array type, the one its
	// elements are separated by (the element type's typdelim); for other
	// types their own typdelim. It is ',' for every type except box (';').
	// Zero means ','.
	Delim byte
	// EnumValues are a KindEnum type's labels in sort order.
	EnumValues []string
}

// name is the type's name for error messages.
func (t *Type) name() string {
	if t.Name != "" {
		return t.Name
	}
	return t.Kind.String()
}

// Querier is what Types and the table loaders need to query the catalog
// (pgx.Conn, pgxpool.Pool and pgx.Tx all satisfy it).
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Types resolves type OIDs to Types, caching them; it is safe for concurrent
// use. Built-in types are known without a query (use NewTypes; the zero
// value works but queries every type). Cached types are never
// refreshed on their own: call Forget after DDL that changes a type in
// place (ALTER TYPE … ADD VALUE, ALTER DOMAIN).
type Types struct {
	mu sync.RWMutex
	m  map[uint32]*Type
}

// builtin scalar types: oid, format_type name, kind.
var builtins = []struct {
	oid, arrayOID uint32
	name          string
	kind          Kind
}{
	{16, 1000, "boolean", KindBool},
	{17, 1001, "bytea", KindBytea},
	{19, 1003, "name", KindText},
	{20, 1016, "bigint", KindInt8},
	{21, 1005, "smallint", KindInt2},
	{23, 1007, "integer", KindInt4},
	{25, 1009, "text", KindText},
	{26, 1028, "oid", KindOID},
	{28, 1011, "xid", KindOID},
	{29, 1012, "cid", KindOID},
	{114, 199, "json", KindJSON},
	{700, 1021, "real", KindFloat4},
	{701, 1022, "double precision", KindFloat8},
	{1042, 1014, "character", KindText},
	{1043, 1015, "character varying", KindText},
	{1082, 1182, "date", KindDate},
	{1083, 1183, "time without time zone", KindTime},
	{1114, 1115, "timestamp without time zone", KindTimestamp},
	{1184, 1185, "timestamp with time zone", KindTimestampTZ},
	{1186, 1187, "interval", KindInterval},
	{1266, 1270, "time with time zone", KindTimeTZ},
	{1700, 1231, "numeric", KindNumeric},
	{2950, 2951, "uuid", KindUUID},
	{3802, 3807, "jsonb", KindJSONB},
}

// NewTypes returns a resolver that knows the built-in types (the integer,
// float, numeric, bool, text-like, uuid, date/time, interval, bytea, json and
// jsonb types and their array types) without querying.
func NewTypes() *Types {
	t := &Types{m: make(map[uint32]*Type, 2*len(builtins))}
	for _, b := range builtins {
		elem := &Type{OID: b.oid, Name: b.name, Kind: b.kind, Delim: ','}
		t.m[b.oid] = elem
		t.m[b.arrayOID] = &Type{OID: b.arrayOID, Name: b.name + "[]", Kind: KindArray, Elem: elem, Delim: ','}
	}
	return t
}

// Forget drops cached types so the next Lookup queries them again; with no
// OIDs it drops every type that is not built in.
func (t *Types) Forget(oids ...uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(oids) > 0 {
		for _, oid := range oids {
			if !isBuiltin(oid) {
				delete(t.m, oid)
			}
		}
		return
	}
	for oid := range t.m {
		if !isBuiltin(oid) {
			delete(t.m, oid)
		}
	}
}

func isBuiltin(oid uint32) bool {
	for _, b := range builtins {
		if b.oid == oid || b.arrayOID == oid {
			return true
		}
	}
	return false
}

func (t *Types) cached(oid uint32) *Type {
	t.mu.RLock()
	typ := t.m[oid]
	t.mu.RUnlock()
	return typ
}

// typeQuery reads one pg_type row. is_array is true only for true array
// types (the element's typarray points back), so that int2vector, oidvector,
// point and name, which also have a typelem, stay text.
const typeQuery = `SELECT format_type(t.oid, NULL), t.typtype::text, t.typdelim::text, t.typelem, t.typbasetype,
	t.typelem <> 0 AND EXISTS (SELECT 1 FROM pg_type e WHERE e.oid = t.typelem AND e.typarray = t.oid),
	COALESCE((SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid), '{}'::text[])
FROM pg_type t WHERE t.oid = $1`

// Lookup returns the type with the given OID, querying pg_type through q the
// first time an OID that is not built in is seen. Domains take the kind (and
// element type, enum labels) of their base type, recursively; arrays resolve
// their element type (arrays of domains and enums too); enums read their
// labels from pg_enum in sort order; every other type is KindText.
func (t *Types) Lookup(ctx context.Context, q Querier, oid uint32) (*Type, error) {
	return t.lookup(ctx, q, oid, 0)
}

func (t *Types) lookup(ctx context.Context, q Querier, oid uint32, depth int) (*Type, error) {
	if typ := t.cached(oid); typ != nil {
		return typ, nil
	}
	if depth > 32 {
		return nil, fmt.Errorf("catalog: type %d: domains or arrays nested too deeply", oid)
	}
	var (
		name, typtype, delim string
		elemOID, baseOID     uint32
		isArray              bool
		labels               []string
	)
	err := q.QueryRow(ctx, typeQuery, oid).Scan(&name, &typtype, &delim, &elemOID, &baseOID, &isArray, &labels)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("catalog: type %d does not exist", oid)
	}
	if err != nil {
		return nil, fmt.Errorf("catalog: looking up type %d: %w", oid, err)
	}
	typ := &Type{OID: oid, Name: name, Kind: KindText, Delim: ','}
	if len(delim) == 1 {
		typ.Delim = delim[0]
	}
	switch {
	case typtype == "d" && baseOID != 0:
		base, err := t.lookup(ctx, q, baseOID, depth+1)
		if err != nil {
			return nil, err
		}
		typ.Kind, typ.Elem, typ.EnumValues = base.Kind, base.Elem, base.EnumValues
		if base.Kind == KindArray {
			typ.Delim = base.Delim
		}
	case isArray:
		elem, err := t.lookup(ctx, q, elemOID, depth+1)
		if err != nil {
			return nil, err
		}
		typ.Kind, typ.Elem, typ.Delim = KindArray, elem, elem.Delim
		if elem.Kind == KindArray {
			// An array of a domain over an array: the element's delimiter
			// is its own typdelim, not the one its elements use.
			typ.Delim = ','
		}
		if typ.Delim == 0 {
			typ.Delim = ','
		}
	case typtype == "e":
		typ.Kind, typ.EnumValues = KindEnum, labels
	}
	t.mu.Lock()
	if t.m == nil {
		t.m = map[uint32]*Type{}
	}
	if prev := t.m[oid]; prev != nil {
		typ = prev // another goroutine won; keep one instance
	} else {
		t.m[oid] = typ
	}
	t.mu.Unlock()
	return typ, nil
}
