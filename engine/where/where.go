// Package where parses Electric shape where clauses with PostgreSQL's own
// parser (pg_query) and evaluates them in Go on rows of PostgreSQL text
// output, for the subset of SQL Electric supports: comparisons, boolean
// logic, NULL and boolean tests, IN, BETWEEN, LIKE/ILIKE, arithmetic,
// date/time and interval arithmetic, a few functions, casts, parameters and
// one-dimensional arrays.
//
// Nothing the client wrote reaches PostgreSQL: SQL() renders the checked
// tree back, with identifiers quoted and every constant and parameter a
// typed literal. The rendering is chosen so that PostgreSQL computes what
// Match does:
//
//   - text orders byte-wise (COLLATE "C" in SQL, whatever the database's
//     collation); equality is byte-wise in both;
//   - numeric is evaluated as float8, as Electric does (the column is cast
//     to float8 in SQL); float4 is widened to float8 as PostgreSQL does;
//   - integer arithmetic is in int8 (int2/int4 columns are widened in SQL)
//     and overflow and division by zero are Match errors;
//   - timestamps without a zone, and the session, are UTC
//     (catalog.SessionSettings).
//
// lower, upper and ILIKE fold case with Unicode rules; PostgreSQL folds
// with the column's collation, which agrees for UTF-8 and ICU locales but
// folds ASCII only under the C locale.
//
// Columns are referred to by name alone: table.column is rejected as an
// unknown reference. Column types: int2/4/8, oid, float4/8, numeric, bool,
// text, varchar, char(n), name, enums (compared as text), uuid, date, time,
// timestamp, timestamptz, interval and one-dimensional arrays of those;
// any other column (jsonb, inet, domains over text, …) only as col::text.
// Not supported: subqueries, aggregates, non-deterministic functions,
// regular expressions, SIMILAR TO, CASE, row comparisons, subscripts,
// COLLATE and functions other than lower, upper, length, char_length,
// concat, like, ilike, coalesce, greatest and least.
package where

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"github.com/pganalyze/pg_query_go/v6/parser"

	"github.com/shapelog/shapelog/engine/catalog"
)

// Error is an invalid where clause, reported like Electric's.
type Error struct {
	Location int
	Reason   string
}

func (e *Error) Error() string { return fmt.Sprintf("At location %d: %s", e.Location, e.Reason) }

// Filter is a parsed, type-checked where clause.
type Filter struct {
	root node
	sql  string
	cols []int
}

const prefix = "SELECT 1 WHERE "

// Parse parses and type-checks expr for a table with the given columns.
// params holds the values of $1..$n (keys "1", "2", …); every parameter
// used needs one. The clause must keep within MaxLength, MaxNodes,
// MaxDepth, MaxParams and MaxParamsLength. The error is an *Error.
func Parse(expr string, params map[string]string, cols []catalog.Column) (*Filter, error) {
	if strings.IndexByte(expr, 0) >= 0 || !utf8.ValidString(expr) {
		return nil, &Error{Reason: "a where clause must be valid UTF-8 without NUL characters"}
	}
	if err := checkSize(expr, params); err != nil {
		return nil, err
	}
	tree, err := pg_query.Parse(prefix + expr)
	if err != nil {
		loc, msg := 0, err.Error()
		var pe *parser.Error
		if errors.As(err, &pe) {
			// Cursorpos counts characters from 1.
			if pe.Cursorpos > 0 {
				loc = max(pe.Cursorpos-1-utf8.RuneCountInString(prefix), 0)
			}
			msg = pe.Message
		}
		return nil, &Error{Location: loc, Reason: msg}
	}
	if len(tree.Stmts) != 1 {
		return nil, &Error{Reason: "a where clause must be a single expression"}
	}
	sel := tree.Stmts[0].Stmt.GetSelectStmt()
	if sel == nil || sel.WhereClause == nil || len(sel.TargetList) != 1 || len(sel.FromClause) > 0 || len(sel.GroupClause) > 0 ||
		sel.HavingClause != nil || len(sel.SortClause) > 0 || sel.LimitCount != nil || sel.LimitOffset != nil ||
		len(sel.WindowClause) > 0 || sel.Op != pg_query.SetOperation_SETOP_NONE || sel.WithClause != nil || len(sel.LockingClause) > 0 ||
		sel.IntoClause != nil || len(sel.DistinctClause) > 0 || len(sel.ValuesLists) > 0 {
		return nil, &Error{Reason: "a where clause must be a single boolean expression"}
	}
	if err := checkComplexity(sel.WhereClause); err != nil {
		return nil, inCharacters(err, expr)
	}
	c := &compiler{cols: cols, params: params, used: map[int]bool{}}
	root, err := c.compile(sel.WhereClause)
	if err != nil {
		return nil, inCharacters(err, expr)
	}
	if root.typ().k != kBool && root.typ().k != kUnknown {
		return nil, &Error{Reason: "where clause must be a boolean expression, not " + root.typ().String()}
	}
	if root, err = c.coerce(root, typ{k: kBool}, 0); err != nil {
		return nil, inCharacters(err, expr)
	}
	var b strings.Builder
	root.sql(&b)
	f := &Filter{root: root, sql: b.String()}
	for i := range c.used {
		f.cols = append(f.cols, i)
	}
	slices.Sort(f.cols)
	return f, nil
}

// inCharacters turns an *Error's location from a byte offset into expr (the
// parse tree's) into characters, as PostgreSQL counts a syntax error's
// position, so that every location counts the same way in the client's
// clause.
func inCharacters(err error, expr string) error {
	var e *Error
	if errors.As(err, &e) && e.Location > 0 && e.Location <= len(expr) {
		e.Location = utf8.RuneCountInString(expr[:e.Location])
	}
	return err
}

// SQL is the normalized clause for a snapshot query over the table.
func (f *Filter) SQL() string { return f.sql }

// Columns are the indexes of the columns the clause reads, sorted.
func (f *Filter) Columns() []int { return f.cols }

// Match evaluates the clause on a row of text values (nil = NULL) laid out
// like the columns given to Parse; NULL counts as false. An error is a
// runtime failure such as a division by zero.
func (f *Filter) Match(values [][]byte) (bool, error) {
	v, err := f.root.eval(values)
	if err != nil {
		return false, err
	}
	return !v.null && v.b, nil
}

type compiler struct {
	cols   []catalog.Column
	params map[string]string
	used   map[int]bool
}

func errAt(loc int32, format string, args ...any) *Error {
	return &Error{Location: max(int(loc)-len(prefix), 0), Reason: fmt.Sprintf(format, args...)}
}

func stringsOf(nodes []*pg_query.Node) []string {
	out := make([]string, 0, len(nodes))
	for _, n := range nodes {
		if s := n.GetString_(); s != nil {
			out = append(out, s.Sval)
		}
	}
	return out
}

func (c *compiler) compile(n *pg_query.Node) (node, error) {
	switch {
	case n.GetColumnRef() != nil:
		return c.column(n.GetColumnRef(), false)
	case n.GetAConst() != nil:
		return constant(n.GetAConst())
	case n.GetParamRef() != nil:
		p := n.GetParamRef()
		v, ok := c.params[strconv.Itoa(int(p.Number))]
		if !ok {
			return nil, errAt(p.Location, "parameter $%d has no value (send it as params[%d])", p.Number, p.Number)
		}
		if strings.IndexByte(v, 0) >= 0 || !utf8.ValidString(v) {
			return nil, errAt(p.Location, "parameter $%d must be valid UTF-8 without NUL characters", p.Number)
		}
		return &unknownNode{s: v}, nil
	case n.GetTypeCast() != nil:
		tc := n.GetTypeCast()
		names := stringsOf(tc.TypeName.Names)
		name := names[len(names)-1]
		t, ok := castType(name)
		if !ok {
			return nil, errAt(tc.Location, "unsupported type: %s", name)
		}
		if len(tc.TypeName.ArrayBounds) > 0 {
			e := t
			t = typ{k: kArray, elem: &e}
		} else if t.k == kInterval && len(tc.TypeName.Typmods) > 0 {
			return nil, errAt(tc.Location, "interval fields and precision are not supported")
		}
		if cr := tc.Arg.GetColumnRef(); cr != nil && t.k == kText {
			// Any column can be read as its text: enums, domains and
			// types without operators here (jsonb, inet, …) included.
			return c.column(cr, true)
		}
		arg, err := c.compile(tc.Arg)
		if err != nil {
			return nil, err
		}
		return c.cast(arg, t, tc.Location)
	case n.GetBoolExpr() != nil:
		return c.boolExpr(n.GetBoolExpr())
	case n.GetNullTest() != nil:
		nt := n.GetNullTest()
		arg, err := c.compile(nt.Arg)
		if err != nil {
			return nil, err
		}
		if arg.typ().k == kUnknown {
			arg, _ = c.coerce(arg, typ{k: kText}, 0)
		}
		return &nullTest{arg: arg, not: nt.Nulltesttype == pg_query.NullTestType_IS_NOT_NULL}, nil
	case n.GetBooleanTest() != nil:
		bt := n.GetBooleanTest()
		arg, err := c.compile(bt.Arg)
		if err != nil {
			return nil, err
		}
		if arg, err = c.coerce(arg, typ{k: kBool}, bt.Location); err != nil {
			return nil, err
		}
		return &boolTest{arg: arg, test: bt.Booltesttype}, nil
	case n.GetAExpr() != nil:
		return c.aExpr(n.GetAExpr())
	case n.GetFuncCall() != nil:
		return c.funcCall(n.GetFuncCall())
	case n.GetAArrayExpr() != nil:
		ae := n.GetAArrayExpr()
		var elems []node
		for _, e := range ae.Elements {
			en, err := c.compile(e)
			if err != nil {
				return nil, err
			}
			elems = append(elems, en)
		}
		return c.arrayExpr(elems, ae.Location)
	case n.GetSubLink() != nil:
		return nil, errAt(n.GetSubLink().Location, "subqueries are not supported")
	case n.GetCoalesceExpr() != nil:
		ce := n.GetCoalesceExpr()
		return c.function("coalesce", ce.Args, ce.Location)
	case n.GetMinMaxExpr() != nil:
		mm := n.GetMinMaxExpr()
		name := "greatest"
		if mm.Op == pg_query.MinMaxOp_IS_LEAST {
			name = "least"
		}
		return c.function(name, mm.Args, mm.Location)
	}
	loc, what := nodeInfo(n)
	return nil, errAt(loc, "unsupported expression in where clause: %s", what)
}

// nodeInfo is a parse node's location and kind, for error messages.
func nodeInfo(n *pg_query.Node) (int32, string) {
	m := n.ProtoReflect()
	od := m.Descriptor().Oneofs().ByName("node")
	if od == nil {
		return 0, "unknown"
	}
	f := m.WhichOneof(od)
	if f == nil || f.Message() == nil {
		return 0, "unknown"
	}
	inner := m.Get(f).Message()
	what := string(inner.Descriptor().Name())
	if lf := inner.Descriptor().Fields().ByName("location"); lf != nil {
		if loc, ok := inner.Get(lf).Interface().(int32); ok {
			return loc, what
		}
	}
	return 0, what
}

// column resolves a column reference; asText reads the column as its text
// (a cast to text), which every type allows.
func (c *compiler) column(cr *pg_query.ColumnRef, asText bool) (node, error) {
	names := stringsOf(cr.Fields)
	if len(names) != len(cr.Fields) || len(names) == 0 {
		return nil, errAt(cr.Location, "unsupported column reference")
	}
	if len(names) > 1 {
		// Qualified names (table.col) are rejected, as Electric does:
		// the clause is about one table.
		return nil, errAt(cr.Location, "unknown reference %s", strings.Join(names, "."))
	}
	i := slices.IndexFunc(c.cols, func(col catalog.Column) bool { return col.Name == names[0] })
	if i < 0 {
		return nil, errAt(cr.Location, "unknown reference %s", names[0])
	}
	col := c.cols[i]
	ct := col.Type
	t, ok := columnType(ct)
	if !ok && !asText {
		return nil, errAt(cr.Location, "unsupported type: %s (column %s); cast it with ::text to compare it as text", ct.Name, col.Name)
	}
	c.used[i] = true
	n := &colNode{idx: i, name: col.Name, t: t}
	switch {
	case asText && t.k == kBool:
		return c.cast(n, typ{k: kText}, cr.Location) // true/false, not t/f
	case asText, t.k == kText:
		n.t, n.raw = typ{k: kText}, true
		n.padded = ct.Kind == catalog.KindText && ct.Name == "character"
		n.inet = ct.Kind == catalog.KindText && ct.Name == "inet"
		if ct.Kind != catalog.KindText || !textTypes[ct.Name] || n.padded {
			n.sqlCast = "text"
		}
	case t.k == kArray:
		// Array operators need both sides of one type: int4[] @> int8[]
		// does not exist.
		n.sqlCast = t.sqlType()
	case ct.Kind == catalog.KindNumeric:
		// numeric is evaluated as float8 (as Electric does), so the
		// snapshot compares it as float8 too.
		n.sqlCast = "float8"
	case ct.Kind == catalog.KindFloat4:
		n.f32 = true
	case ct.Kind == catalog.KindInt2 || ct.Kind == catalog.KindInt4:
		n.narrow = true
	}
	return n, nil
}

func constant(ac *pg_query.A_Const) (node, error) {
	switch {
	case ac.Isnull:
		return &constNode{v: null, t: typ{k: kUnknown}}, nil
	case ac.GetIval() != nil:
		return &constNode{v: value{i: int64(ac.GetIval().Ival)}, t: typ{k: kInt}, lit: strconv.FormatInt(int64(ac.GetIval().Ival), 10)}, nil
	case ac.GetFval() != nil:
		s := ac.GetFval().Fval
		if i, err := strconv.ParseInt(s, 10, 64); err == nil { // integers too big for int4
			return &constNode{v: value{i: i}, t: typ{k: kInt}, lit: s}, nil
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, errAt(ac.Location, "invalid number %s", s)
		}
		return &constNode{v: value{f: f}, t: typ{k: kFloat}, lit: s}, nil
	case ac.GetSval() != nil:
		return &unknownNode{s: ac.GetSval().Sval}, nil
	case ac.GetBoolval() != nil:
		return &constNode{v: value{b: ac.GetBoolval().Boolval}, t: typ{k: kBool}, lit: strconv.FormatBool(ac.GetBoolval().Boolval)}, nil
	}
	return nil, errAt(ac.Location, "unsupported constant")
}

// coerce makes n of type t: untyped literals are parsed, integers widen to
// floats, dates to timestamps.
func (c *compiler) coerce(n node, t typ, loc int32) (node, error) {
	nt := n.typ()
	switch {
	case nt == t || (nt.k == kArray && t.k == kArray && nt.elem.k == t.elem.k):
		return n, nil
	case nt.k == kUnknown:
		if cn, ok := n.(*constNode); ok && cn.v.null {
			return &constNode{v: null, t: t}, nil
		}
		u := n.(*unknownNode)
		v, err := parseValue(t, u.s)
		if err != nil {
			return nil, errAt(loc, "%v", err)
		}
		return &constNode{v: v, t: t, lit: u.s}, nil
	case nt.k == kInt && t.k == kFloat:
		return &castNode{arg: n, t: t}, nil
	case nt.k == kDate && (t.k == kTimestamp || t.k == kTimestampTZ),
		nt.k == kTimestamp && t.k == kTimestampTZ, nt.k == kTimestampTZ && t.k == kTimestamp:
		return &castNode{arg: n, t: t}, nil
	}
	return nil, errAt(loc, "cannot use %s as %s", nt, t)
}

// unify gives two operands one type for a comparison or arithmetic.
func (c *compiler) unify(l, r node, op string, loc int32) (node, node, typ, error) {
	lt, rt := l.typ(), r.typ()
	var t typ
	switch {
	case lt.k == kUnknown && rt.k == kUnknown:
		t = typ{k: kText}
	case lt.k == kUnknown:
		t = rt
	case rt.k == kUnknown:
		t = lt
	case lt == rt || (lt.k == kArray && rt.k == kArray && lt.elem.k == rt.elem.k):
		t = lt
	case (lt.k == kInt && rt.k == kFloat) || (lt.k == kFloat && rt.k == kInt):
		t = typ{k: kFloat}
	case lt.k == kDate && (rt.k == kTimestamp || rt.k == kTimestampTZ):
		t = rt
	case rt.k == kDate && (lt.k == kTimestamp || lt.k == kTimestampTZ):
		t = lt
	case (lt.k == kTimestamp && rt.k == kTimestampTZ) || (lt.k == kTimestampTZ && rt.k == kTimestamp):
		t = typ{k: kTimestampTZ}
	default:
		return nil, nil, typ{}, errAt(loc, "operator does not exist: %s %s %s", lt, op, rt)
	}
	var err error
	if l, err = c.coerce(l, t, loc); err != nil {
		return nil, nil, typ{}, err
	}
	if r, err = c.coerce(r, t, loc); err != nil {
		return nil, nil, typ{}, err
	}
	return l, r, t, nil
}

func (c *compiler) cast(arg node, t typ, loc int32) (node, error) {
	at := arg.typ()
	switch {
	case at.k == kUnknown:
		return c.coerce(arg, t, loc)
	case at == t:
		return arg, nil
	case t.k == kArray || at.k == kArray:
		if at.k == kArray && t.k == kArray && at.elem.k == t.elem.k {
			return arg, nil
		}
		return nil, errAt(loc, "cannot cast type %s to %s", at, t)
	}
	switch {
	case t.k == kText, at.k == kText, t.k == kFloat && at.k == kInt, t.k == kInt && (at.k == kFloat || at.k == kBool),
		t.k == kBool && at.k == kInt, at.k == kDate && (t.k == kTimestamp || t.k == kTimestampTZ),
		t.k == kDate && (at.k == kTimestamp || at.k == kTimestampTZ), at.k == kTimestamp && t.k == kTimestampTZ,
		at.k == kTimestampTZ && t.k == kTimestamp:
		return &castNode{arg: arg, t: t}, nil
	}
	return nil, errAt(loc, "cannot cast type %s to %s", at, t)
}

func (c *compiler) boolExpr(be *pg_query.BoolExpr) (node, error) {
	var args []node
	for _, a := range be.Args {
		n, err := c.compile(a)
		if err != nil {
			return nil, err
		}
		if n, err = c.coerce(n, typ{k: kBool}, be.Location); err != nil {
			return nil, errAt(be.Location, "argument of %s must be boolean", strings.TrimSuffix(be.Boolop.String(), "_EXPR"))
		}
		args = append(args, n)
	}
	switch be.Boolop {
	case pg_query.BoolExprType_AND_EXPR:
		return &logicNode{and: true, args: args}, nil
	case pg_query.BoolExprType_OR_EXPR:
		return &logicNode{args: args}, nil
	}
	return &notNode{arg: args[0]}, nil
}

var comparisons = map[string]bool{"=": true, "<>": true, "!=": true, "<": true, ">": true, "<=": true, ">=": true}

func (c *compiler) aExpr(ae *pg_query.A_Expr) (node, error) {
	names := stringsOf(ae.Name)
	op := ""
	if len(names) > 0 {
		op = names[len(names)-1]
	}
	var l, r node
	var err error
	if ae.Lexpr != nil {
		if l, err = c.compile(ae.Lexpr); err != nil {
			return nil, err
		}
	}
	switch ae.Kind {
	case pg_query.A_Expr_Kind_AEXPR_SIMILAR:
		return nil, errAt(ae.Location, "unsupported operator SIMILAR TO")
	case pg_query.A_Expr_Kind_AEXPR_IN:
		var list []node
		for _, item := range ae.Rexpr.GetList().GetItems() {
			n, err := c.compile(item)
			if err != nil {
				return nil, err
			}
			list = append(list, n)
		}
		return c.in(l, list, op == "<>", ae.Location)
	case pg_query.A_Expr_Kind_AEXPR_BETWEEN, pg_query.A_Expr_Kind_AEXPR_NOT_BETWEEN,
		pg_query.A_Expr_Kind_AEXPR_BETWEEN_SYM, pg_query.A_Expr_Kind_AEXPR_NOT_BETWEEN_SYM:
		items := ae.Rexpr.GetList().GetItems()
		if len(items) != 2 {
			return nil, errAt(ae.Location, "malformed BETWEEN")
		}
		lo, err := c.compile(items[0])
		if err != nil {
			return nil, err
		}
		hi, err := c.compile(items[1])
		if err != nil {
			return nil, err
		}
		return c.between(l, lo, hi, ae.Kind, ae.Location)
	}
	if ae.Rexpr != nil {
		if r, err = c.compile(ae.Rexpr); err != nil {
			return nil, err
		}
	}
	switch ae.Kind {
	case pg_query.A_Expr_Kind_AEXPR_OP:
		if l == nil {
			return c.unary(op, r, ae.Location)
		}
		return c.binary(op, l, r, ae.Location)
	case pg_query.A_Expr_Kind_AEXPR_OP_ANY, pg_query.A_Expr_Kind_AEXPR_OP_ALL:
		return c.anyAll(op, l, r, ae.Kind == pg_query.A_Expr_Kind_AEXPR_OP_ALL, ae.Location)
	case pg_query.A_Expr_Kind_AEXPR_DISTINCT, pg_query.A_Expr_Kind_AEXPR_NOT_DISTINCT:
		l, r, t, err := c.unify(l, r, "IS DISTINCT FROM", ae.Location)
		if err != nil {
			return nil, err
		}
		return &distinctNode{l: l, r: r, t: t, not: ae.Kind == pg_query.A_Expr_Kind_AEXPR_NOT_DISTINCT}, nil
	case pg_query.A_Expr_Kind_AEXPR_LIKE, pg_query.A_Expr_Kind_AEXPR_ILIKE:
		return c.like(l, r, ae.Kind == pg_query.A_Expr_Kind_AEXPR_ILIKE, op == "!~~" || op == "!~~*", ae.Location)
	}
	return nil, errAt(ae.Location, "unsupported operator %s", op)
}

func (c *compiler) unary(op string, arg node, loc int32) (node, error) {
	switch op {
	case "-", "+":
		if arg.typ().k == kUnknown {
			var err error
			if arg, err = c.coerce(arg, typ{k: kFloat}, loc); err != nil {
				return nil, err
			}
		}
		if k := arg.typ().k; k != kInt && k != kFloat && (k != kInterval || op != "-") {
			return nil, errAt(loc, "operator does not exist: %s%s", op, arg.typ())
		}
		if op == "+" {
			return arg, nil
		}
		return &negNode{arg: arg}, nil
	}
	return nil, errAt(loc, "unsupported operator %s", op)
}

func (c *compiler) binary(op string, l, r node, loc int32) (node, error) {
	switch {
	case comparisons[op]:
		if op == "!=" {
			op = "<>"
		}
		l, r, t, err := c.unify(l, r, op, loc)
		if err != nil {
			return nil, err
		}
		if t.k == kArray && op != "=" && op != "<>" {
			return nil, errAt(loc, "operator does not exist: %s %s %s", t, op, t)
		}
		return fastCompare(&cmpNode{op: op, l: l, r: r, t: t}), nil
	case op == "+" || op == "-" || op == "*" || op == "/" || op == "%":
		return c.arith(op[0], l, r, loc)
	case op == "||":
		if l.typ().k == kArray || r.typ().k == kArray {
			return nil, errAt(loc, "array concatenation is not supported")
		}
		var err error
		if l, err = c.cast(l, typ{k: kText}, loc); err != nil {
			return nil, err
		}
		if r, err = c.cast(r, typ{k: kText}, loc); err != nil {
			return nil, err
		}
		return &funcNode{name: "concat_op", args: []node{l, r}, t: typ{k: kText}}, nil
	case op == "~~" || op == "!~~" || op == "~~*" || op == "!~~*":
		return c.like(l, r, strings.HasSuffix(op, "*"), op[0] == '!', loc)
	case op == "@>" || op == "<@" || op == "&&":
		l, r, t, err := c.unify(l, r, op, loc)
		if err != nil {
			return nil, err
		}
		if t.k != kArray {
			return nil, errAt(loc, "operator does not exist: %s %s %s", t, op, t)
		}
		return &arrayOpNode{op: op, l: l, r: r}, nil
	}
	return nil, errAt(loc, "unsupported operator %s", op)
}

// arith types an arithmetic operator: numbers, and date/time arithmetic
// (date ± integer, date - date, date + time, date/timestamp ± interval,
// timestamp - timestamp, interval ± interval).
func (c *compiler) arith(op byte, l, r node, loc int32) (node, error) {
	lk, rk := l.typ().k, r.typ().k
	if lk == kUnknown && rk == kUnknown {
		return nil, errAt(loc, "operator is not unique: unknown %c unknown", op)
	}
	isTime := func(k kind) bool { return k == kDate || k == kTimestamp || k == kTimestampTZ }
	// An untyped operand of date/time arithmetic: an interval, or, after
	// "date -" or "timestamp -", first a value of the same type (PostgreSQL
	// prefers the same type for an unknown literal).
	if (lk == kUnknown || rk == kUnknown) && (op == '+' || op == '-') {
		other := lk
		if other == kUnknown {
			other = rk
		}
		var cands []kind
		switch {
		case op == '-' && rk == kUnknown && isTime(lk):
			cands = []kind{lk, kInterval}
		case isTime(other) || other == kInterval:
			cands = []kind{kInterval}
		}
		var err error
		for _, k := range cands {
			var n node
			if lk == kUnknown {
				if n, err = c.coerce(l, typ{k: k}, loc); err == nil {
					l = n
				}
			} else if n, err = c.coerce(r, typ{k: k}, loc); err == nil {
				r = n
			}
			if err == nil {
				break
			}
		}
		if err != nil {
			return nil, err
		}
		lk, rk = l.typ().k, r.typ().k
	}
	if op == '+' && ((lk == kInterval && isTime(rk)) || (lk == kInt && rk == kDate) || (lk == kTime && rk == kDate)) {
		l, r, lk, rk = r, l, rk, lk // commutative: keep the date or timestamp on the left
	}
	mk := func(mode arithMode, t typ) (node, error) {
		return &arithNode{op: op, mode: mode, l: l, r: r, t: t}, nil
	}
	switch {
	case op == '+' || op == '-':
		switch {
		case lk == kInterval && rk == kInterval:
			return mk(arInterval, typ{k: kInterval})
		case isTime(lk) && rk == kInterval:
			if lk == kDate {
				l = &castNode{arg: l, t: typ{k: kTimestamp}}
				lk = kTimestamp
			}
			return mk(arTimeIv, typ{k: lk})
		case lk == kDate && rk == kInt:
			return mk(arDateInt, typ{k: kDate})
		case lk == kDate && rk == kTime && op == '+':
			return mk(arDateTime, typ{k: kTimestamp})
		case lk == kDate && rk == kDate && op == '-':
			return mk(arDateDate, typ{k: kInt})
		case isTime(lk) && isTime(rk) && op == '-':
			l, r, t, err := c.unify(l, r, "-", loc)
			if err != nil {
				return nil, err
			}
			if t.k == kDate {
				return mk(arDateDate, typ{k: kInt})
			}
			return &arithNode{op: op, mode: arTsTs, l: l, r: r, t: typ{k: kInterval}}, nil
		}
	}
	l, r, t, err := c.unify(l, r, string(op), loc)
	if err != nil {
		return nil, err
	}
	switch {
	case t.k == kInt:
		return mk(arInt, t)
	case t.k == kFloat && op != '%': // there is no float8 % float8
		return mk(arFloat, t)
	}
	return nil, errAt(loc, "operator does not exist: %s %c %s", l.typ(), op, r.typ())
}

func (c *compiler) in(l node, list []node, not bool, loc int32) (node, error) {
	t := l.typ()
	for _, item := range list {
		_, _, ut, err := c.unify(l, item, "IN", loc)
		if err != nil {
			return nil, err
		}
		if t.k == kUnknown || (t.k == kInt && ut.k == kFloat) {
			t = ut
		}
	}
	if t.k == kUnknown {
		t = typ{k: kText}
	}
	var err error
	if l, err = c.coerce(l, t, loc); err != nil {
		return nil, err
	}
	for i := range list {
		if list[i], err = c.coerce(list[i], t, loc); err != nil {
			return nil, err
		}
	}
	n := &inNode{l: l, list: list, t: t, not: not}
	n.index()
	return n, nil
}

func (c *compiler) between(x, lo, hi node, kind pg_query.A_Expr_Kind, loc int32) (node, error) {
	ge, err := c.binary(">=", x, lo, loc)
	if err != nil {
		return nil, err
	}
	le, err := c.binary("<=", x, hi, loc)
	if err != nil {
		return nil, err
	}
	var n node = &logicNode{and: true, args: []node{ge, le}}
	if kind == pg_query.A_Expr_Kind_AEXPR_BETWEEN_SYM || kind == pg_query.A_Expr_Kind_AEXPR_NOT_BETWEEN_SYM {
		ge2, _ := c.binary(">=", x, hi, loc)
		le2, _ := c.binary("<=", x, lo, loc)
		n = &logicNode{args: []node{n, &logicNode{and: true, args: []node{ge2, le2}}}}
	}
	if kind == pg_query.A_Expr_Kind_AEXPR_NOT_BETWEEN || kind == pg_query.A_Expr_Kind_AEXPR_NOT_BETWEEN_SYM {
		n = &notNode{arg: n}
	}
	return n, nil
}

func (c *compiler) like(l, r node, ci, not bool, loc int32) (node, error) {
	var err error
	if l, err = c.coerce(l, typ{k: kText}, loc); err != nil {
		return nil, err
	}
	if r, err = c.coerce(r, typ{k: kText}, loc); err != nil {
		return nil, err
	}
	n := &likeNode{l: l, r: r, ci: ci, not: not}
	if k, ok := r.(*constNode); ok && !k.v.null {
		if n.pattern, err = compileLike(k.v.s, ci); err != nil {
			return nil, errAt(loc, "%v", err)
		}
	}
	return n, nil
}

func (c *compiler) anyAll(op string, l, arr node, all bool, loc int32) (node, error) {
	if !comparisons[op] {
		return nil, errAt(loc, "unsupported operator %s with ANY/ALL", op)
	}
	if op == "!=" {
		op = "<>"
	}
	at := arr.typ()
	if at.k == kUnknown {
		lt := l.typ()
		if lt.k == kUnknown {
			lt = typ{k: kText}
		}
		var err error
		if arr, err = c.coerce(arr, typ{k: kArray, elem: &lt}, loc); err != nil {
			return nil, err
		}
		at = arr.typ()
	}
	if at.k != kArray {
		return nil, errAt(loc, "op ANY/ALL (array) requires an array on the right, not %s", at)
	}
	var err error
	if l, err = c.coerce(l, *at.elem, loc); err != nil {
		return nil, err
	}
	return &anyNode{op: op, l: l, arr: arr, all: all, k: at.elem.k}, nil
}

func (c *compiler) arrayExpr(elems []node, loc int32) (node, error) {
	t := typ{k: kUnknown}
	for _, e := range elems {
		if et := e.typ(); et.k != kUnknown && (t.k == kUnknown || (t.k == kInt && et.k == kFloat)) {
			t = et
		}
	}
	if t.k == kUnknown {
		t = typ{k: kText}
	}
	if t.k == kArray {
		return nil, errAt(loc, "multidimensional arrays are not supported")
	}
	for i := range elems {
		var err error
		if elems[i], err = c.coerce(elems[i], t, loc); err != nil {
			return nil, err
		}
	}
	return &arrayNode{elems: elems, t: typ{k: kArray, elem: &t}}, nil
}

func (c *compiler) funcCall(fc *pg_query.FuncCall) (node, error) {
	names := stringsOf(fc.Funcname)
	name := strings.ToLower(names[len(names)-1])
	if fc.AggStar || fc.AggDistinct || fc.Over != nil || len(fc.AggOrder) > 0 || fc.AggFilter != nil {
		return nil, errAt(fc.Location, "aggregation is not supported in this context")
	}
	switch name {
	case "count", "sum", "avg", "min", "max", "array_agg", "string_agg", "bool_and", "bool_or", "every":
		return nil, errAt(fc.Location, "aggregation is not supported in this context")
	}
	return c.function(name, fc.Args, fc.Location)
}

func (c *compiler) function(name string, rawArgs []*pg_query.Node, loc int32) (node, error) {
	var args []node
	for _, a := range rawArgs {
		n, err := c.compile(a)
		if err != nil {
			return nil, err
		}
		args = append(args, n)
	}
	unknown := func() (node, error) {
		return nil, errAt(loc, "unknown or unsupported function %s/%d", name, len(args))
	}
	text := typ{k: kText}
	switch name {
	case "lower", "upper", "length", "char_length":
		if len(args) != 1 {
			return unknown()
		}
		a, err := c.coerce(args[0], text, loc)
		if err != nil {
			return nil, err
		}
		t := text
		if name == "length" || name == "char_length" {
			t = typ{k: kInt}
		}
		return &funcNode{name: name, args: []node{a}, t: t}, nil
	case "concat":
		for i := range args {
			var err error
			if args[i], err = c.cast(args[i], text, loc); err != nil {
				return nil, err
			}
		}
		return &funcNode{name: name, args: args, t: text}, nil
	case "like", "ilike":
		if len(args) != 2 {
			return unknown()
		}
		return c.like(args[0], args[1], name == "ilike", false, loc)
	case "coalesce", "greatest", "least":
		if len(args) == 0 {
			return unknown()
		}
		t := typ{k: kUnknown}
		for _, a := range args[1:] {
			_, _, ut, err := c.unify(args[0], a, name, loc)
			if err != nil {
				return nil, err
			}
			if t.k == kUnknown || (t.k == kInt && ut.k == kFloat) {
				t = ut
			}
		}
		if t.k == kUnknown {
			t = args[0].typ()
			if t.k == kUnknown {
				t = text
			}
		}
		for i := range args {
			var err error
			if args[i], err = c.coerce(args[i], t, loc); err != nil {
				return nil, err
			}
		}
		return &funcNode{name: name, args: args, t: t}, nil
	}
	return unknown()
}
