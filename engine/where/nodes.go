package where

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// node is a checked expression.
type node interface {
	eval(row [][]byte) (value, error)
	typ() typ
	// sql writes the expression as PostgreSQL SQL.
	sql(b *strings.Builder)
}

var errDivisionByZero = errors.New("division by zero")

type colNode struct {
	idx      int
	name     string
	t        typ
	padded   bool // bpchar: compared without trailing spaces, as PostgreSQL's text cast does
	castText bool // enums and bpchar are compared as text
}

func (n *colNode) typ() typ { return n.t }
func (n *colNode) eval(row [][]byte) (value, error) {
	if n.idx >= len(row) || row[n.idx] == nil {
		return null, nil
	}
	s := bytesString(row[n.idx])
	if n.padded {
		s = strings.TrimRight(s, " ")
	}
	return parseValue(n.t, s)
}
func (n *colNode) sql(b *strings.Builder) {
	switch {
	case n.t.k == kArray:
		// Array operators need both sides of one type: int4[] @> int8[]
		// does not exist.
		b.WriteString("(" + pgx.Identifier{n.name}.Sanitize() + ")::" + n.t.sqlType())
	case n.castText:
		b.WriteString(pgx.Identifier{n.name}.Sanitize() + "::text")
	default:
		b.WriteString(pgx.Identifier{n.name}.Sanitize())
	}
}

// unknownNode is an untyped literal or parameter not yet given a type.
type unknownNode struct{ s string }

func (n *unknownNode) typ() typ { return typ{k: kUnknown} }
func (n *unknownNode) eval([][]byte) (value, error) {
	return value{s: n.s}, nil
}
func (n *unknownNode) sql(b *strings.Builder) { writeLiteral(b, n.s, "text") }

func writeLiteral(b *strings.Builder, s, typeName string) {
	b.WriteString("'" + strings.ReplaceAll(s, "'", "''") + "'::" + typeName)
}

type constNode struct {
	v   value
	t   typ
	lit string
}

func (n *constNode) typ() typ                     { return n.t }
func (n *constNode) eval([][]byte) (value, error) { return n.v, nil }
func (n *constNode) sql(b *strings.Builder) {
	switch {
	case n.v.null:
		b.WriteString("NULL")
		if n.t.k != kUnknown {
			b.WriteString("::" + n.t.sqlType())
		}
	case n.t.k == kBool:
		b.WriteString(strconv.FormatBool(n.v.b))
	default:
		writeLiteral(b, n.lit, n.t.sqlType())
	}
}

type castNode struct {
	arg node
	t   typ
}

func (n *castNode) typ() typ { return n.t }
func (n *castNode) eval(row [][]byte) (value, error) {
	v, err := n.arg.eval(row)
	if err != nil || v.null {
		return v, err
	}
	from := n.arg.typ().k
	switch {
	case n.t.k == kText:
		return value{s: formatValue(from, v)}, nil
	case from == kText:
		return parseValue(n.t, v.s)
	case n.t.k == kFloat && from == kInt:
		return value{f: float64(v.i)}, nil
	case n.t.k == kInt && from == kFloat:
		if math.IsNaN(v.f) || math.Abs(v.f) > math.MaxInt64 {
			return value{}, errors.New("integer out of range")
		}
		return value{i: int64(math.RoundToEven(v.f))}, nil
	case n.t.k == kInt && from == kBool:
		if v.b {
			return value{i: 1}, nil
		}
		return value{i: 0}, nil
	case n.t.k == kBool && from == kInt:
		return value{b: v.i != 0}, nil
	case n.t.k == kDate:
		if v.i == math.MaxInt64 || v.i == math.MinInt64 {
			return v, nil
		}
		const day = 86400e6
		return value{i: int64(math.Floor(float64(v.i)/day)) * day}, nil
	}
	return v, nil // date → timestamp, timestamp ↔ timestamptz (UTC): same microseconds
}
func (n *castNode) sql(b *strings.Builder) {
	b.WriteString("(")
	n.arg.sql(b)
	b.WriteString(")::" + n.t.sqlType())
}

// formatValue renders a value as PostgreSQL text output.
func formatValue(k kind, v value) string {
	switch k {
	case kBool:
		if v.b {
			return "true"
		}
		return "false"
	case kInt:
		return strconv.FormatInt(v.i, 10)
	case kFloat:
		switch {
		case math.IsNaN(v.f):
			return "NaN"
		case math.IsInf(v.f, 1):
			return "Infinity"
		case math.IsInf(v.f, -1):
			return "-Infinity"
		}
		return strconv.FormatFloat(v.f, 'g', -1, 64)
	case kDate, kTimestamp, kTimestampTZ:
		switch v.i {
		case math.MaxInt64:
			return "infinity"
		case math.MinInt64:
			return "-infinity"
		}
		t := time.UnixMicro(v.i).UTC()
		switch k {
		case kDate:
			return t.Format("2006-01-02")
		case kTimestamp:
			return t.Format("2006-01-02 15:04:05.999999")
		}
		return t.Format("2006-01-02 15:04:05.999999Z07")
	case kTime:
		return time.UnixMicro(v.i).UTC().Format("15:04:05.999999")
	}
	return v.s
}

type logicNode struct {
	and  bool
	args []node
}

func (n *logicNode) typ() typ { return typ{k: kBool} }
func (n *logicNode) eval(row [][]byte) (value, error) {
	sawNull := false
	for _, a := range n.args {
		v, err := a.eval(row)
		if err != nil {
			return value{}, err
		}
		switch {
		case v.null:
			sawNull = true
		case v.b != n.and: // false in AND, true in OR decides
			return value{b: v.b}, nil
		}
	}
	if sawNull {
		return null, nil
	}
	return value{b: n.and}, nil
}
func (n *logicNode) sql(b *strings.Builder) {
	op := " OR "
	if n.and {
		op = " AND "
	}
	b.WriteString("(")
	for i, a := range n.args {
		if i > 0 {
			b.WriteString(op)
		}
		a.sql(b)
	}
	b.WriteString(")")
}

type notNode struct{ arg node }

func (n *notNode) typ() typ { return typ{k: kBool} }
func (n *notNode) eval(row [][]byte) (value, error) {
	v, err := n.arg.eval(row)
	if err != nil || v.null {
		return v, err
	}
	return value{b: !v.b}, nil
}
func (n *notNode) sql(b *strings.Builder) {
	b.WriteString("(NOT ")
	n.arg.sql(b)
	b.WriteString(")")
}

type nullTest struct {
	arg node
	not bool
}

func (n *nullTest) typ() typ { return typ{k: kBool} }
func (n *nullTest) eval(row [][]byte) (value, error) {
	v, err := n.arg.eval(row)
	if err != nil {
		return value{}, err
	}
	return value{b: v.null != n.not}, nil
}
func (n *nullTest) sql(b *strings.Builder) {
	b.WriteString("(")
	n.arg.sql(b)
	if n.not {
		b.WriteString(" IS NOT NULL)")
	} else {
		b.WriteString(" IS NULL)")
	}
}

type boolTest struct {
	arg  node
	test pg_query.BoolTestType
}

var boolTestSQL = map[pg_query.BoolTestType]string{
	pg_query.BoolTestType_IS_TRUE: "IS TRUE", pg_query.BoolTestType_IS_NOT_TRUE: "IS NOT TRUE",
	pg_query.BoolTestType_IS_FALSE: "IS FALSE", pg_query.BoolTestType_IS_NOT_FALSE: "IS NOT FALSE",
	pg_query.BoolTestType_IS_UNKNOWN: "IS UNKNOWN", pg_query.BoolTestType_IS_NOT_UNKNOWN: "IS NOT UNKNOWN",
}

func (n *boolTest) typ() typ { return typ{k: kBool} }
func (n *boolTest) eval(row [][]byte) (value, error) {
	v, err := n.arg.eval(row)
	if err != nil {
		return value{}, err
	}
	var r bool
	switch n.test {
	case pg_query.BoolTestType_IS_TRUE:
		r = !v.null && v.b
	case pg_query.BoolTestType_IS_NOT_TRUE:
		r = v.null || !v.b
	case pg_query.BoolTestType_IS_FALSE:
		r = !v.null && !v.b
	case pg_query.BoolTestType_IS_NOT_FALSE:
		r = v.null || v.b
	case pg_query.BoolTestType_IS_UNKNOWN:
		r = v.null
	default:
		r = !v.null
	}
	return value{b: r}, nil
}
func (n *boolTest) sql(b *strings.Builder) {
	b.WriteString("(")
	n.arg.sql(b)
	b.WriteString(" " + boolTestSQL[n.test] + ")")
}

type cmpNode struct {
	op   string
	l, r node
	t    typ
}

func (n *cmpNode) typ() typ { return typ{k: kBool} }
func (n *cmpNode) eval(row [][]byte) (value, error) {
	l, err := n.l.eval(row)
	if err != nil || l.null {
		return l, err
	}
	r, err := n.r.eval(row)
	if err != nil || r.null {
		return r, err
	}
	var c int
	if n.t.k == kArray {
		c = compareArrays(n.t.elem.k, l, r)
	} else {
		c = compare(n.t.k, l, r)
	}
	return value{b: cmpResult(n.op, c)}, nil
}
func (n *cmpNode) sql(b *strings.Builder) { binarySQL(b, n.l, n.op, n.r) }

func cmpResult(op string, c int) bool {
	switch op {
	case "=":
		return c == 0
	case "<>":
		return c != 0
	case "<":
		return c < 0
	case ">":
		return c > 0
	case "<=":
		return c <= 0
	}
	return c >= 0
}

func compareArrays(k kind, a, b value) int {
	for i := 0; i < len(a.a) && i < len(b.a); i++ {
		x, y := a.a[i], b.a[i]
		switch {
		case x.null && y.null:
			continue
		case x.null:
			return 1
		case y.null:
			return -1
		}
		if c := compare(k, x, y); c != 0 {
			return c
		}
	}
	return len(a.a) - len(b.a)
}

func binarySQL(b *strings.Builder, l node, op string, r node) {
	b.WriteString("(")
	l.sql(b)
	b.WriteString(" " + op + " ")
	r.sql(b)
	b.WriteString(")")
}

type arithNode struct {
	op   byte
	l, r node
	t    typ
}

func (n *arithNode) typ() typ { return n.t }
func (n *arithNode) eval(row [][]byte) (value, error) {
	l, err := n.l.eval(row)
	if err != nil || l.null {
		return l, err
	}
	r, err := n.r.eval(row)
	if err != nil || r.null {
		return r, err
	}
	if n.t.k == kInt {
		switch n.op {
		case '+':
			return value{i: l.i + r.i}, nil
		case '-':
			return value{i: l.i - r.i}, nil
		case '*':
			return value{i: l.i * r.i}, nil
		}
		if r.i == 0 {
			return value{}, errDivisionByZero
		}
		if n.op == '/' {
			return value{i: l.i / r.i}, nil
		}
		return value{i: l.i % r.i}, nil
	}
	switch n.op {
	case '+':
		return value{f: l.f + r.f}, nil
	case '-':
		return value{f: l.f - r.f}, nil
	case '*':
		return value{f: l.f * r.f}, nil
	}
	if r.f == 0 {
		return value{}, errDivisionByZero
	}
	if n.op == '/' {
		return value{f: l.f / r.f}, nil
	}
	return value{f: math.Mod(l.f, r.f)}, nil
}
func (n *arithNode) sql(b *strings.Builder) { binarySQL(b, n.l, string(n.op), n.r) }

type negNode struct{ arg node }

func (n *negNode) typ() typ { return n.arg.typ() }
func (n *negNode) eval(row [][]byte) (value, error) {
	v, err := n.arg.eval(row)
	if err != nil || v.null {
		return v, err
	}
	return value{i: -v.i, f: -v.f}, nil
}
func (n *negNode) sql(b *strings.Builder) {
	b.WriteString("(- ")
	n.arg.sql(b)
	b.WriteString(")")
}

type funcNode struct {
	name string
	args []node
	t    typ
}

func (n *funcNode) typ() typ { return n.t }
func (n *funcNode) eval(row [][]byte) (value, error) {
	switch n.name {
	case "coalesce":
		for _, a := range n.args {
			v, err := a.eval(row)
			if err != nil || !v.null {
				return v, err
			}
		}
		return null, nil
	case "greatest", "least":
		best := null
		for _, a := range n.args {
			v, err := a.eval(row)
			if err != nil {
				return value{}, err
			}
			if v.null {
				continue
			}
			if c := compare(n.t.k, v, best); best.null || (n.name == "greatest" && c > 0) || (n.name == "least" && c < 0) {
				best = v
			}
		}
		return best, nil
	case "concat":
		var sb strings.Builder
		for _, a := range n.args {
			v, err := a.eval(row)
			if err != nil {
				return value{}, err
			}
			if !v.null {
				sb.WriteString(v.s)
			}
		}
		return value{s: sb.String()}, nil
	}
	vals := make([]value, len(n.args))
	for i, a := range n.args {
		v, err := a.eval(row)
		if err != nil || v.null {
			return v, err
		}
		vals[i] = v
	}
	switch n.name {
	case "lower":
		return value{s: strings.ToLower(vals[0].s)}, nil
	case "upper":
		return value{s: strings.ToUpper(vals[0].s)}, nil
	case "length", "char_length":
		return value{i: int64(utf8.RuneCountInString(vals[0].s))}, nil
	}
	return value{s: vals[0].s + vals[1].s}, nil // concat_op (||)
}
func (n *funcNode) sql(b *strings.Builder) {
	if n.name == "concat_op" {
		binarySQL(b, n.args[0], "||", n.args[1])
		return
	}
	b.WriteString(n.name + "(")
	for i, a := range n.args {
		if i > 0 {
			b.WriteString(", ")
		}
		a.sql(b)
	}
	b.WriteString(")")
}

type inNode struct {
	l    node
	list []node
	t    typ
	not  bool
}

func (n *inNode) typ() typ { return typ{k: kBool} }
func (n *inNode) eval(row [][]byte) (value, error) {
	l, err := n.l.eval(row)
	if err != nil || l.null {
		return l, err
	}
	sawNull := false
	for _, item := range n.list {
		v, err := item.eval(row)
		if err != nil {
			return value{}, err
		}
		if v.null {
			sawNull = true
			continue
		}
		if compare(n.t.k, l, v) == 0 {
			return value{b: !n.not}, nil
		}
	}
	if sawNull {
		return null, nil
	}
	return value{b: n.not}, nil
}
func (n *inNode) sql(b *strings.Builder) {
	b.WriteString("(")
	n.l.sql(b)
	if n.not {
		b.WriteString(" NOT")
	}
	b.WriteString(" IN (")
	for i, item := range n.list {
		if i > 0 {
			b.WriteString(", ")
		}
		item.sql(b)
	}
	b.WriteString("))")
}

type likeNode struct {
	l, r    node
	ci, not bool
}

func (n *likeNode) typ() typ { return typ{k: kBool} }
func (n *likeNode) eval(row [][]byte) (value, error) {
	l, err := n.l.eval(row)
	if err != nil || l.null {
		return l, err
	}
	r, err := n.r.eval(row)
	if err != nil || r.null {
		return r, err
	}
	s, p := l.s, r.s
	if n.ci {
		s, p = strings.ToLower(s), strings.ToLower(p)
	}
	return value{b: likeMatch(s, p) != n.not}, nil
}
func (n *likeNode) sql(b *strings.Builder) {
	op := "LIKE"
	if n.ci {
		op = "ILIKE"
	}
	if n.not {
		op = "NOT " + op
	}
	binarySQL(b, n.l, op, n.r)
}

// likeMatch implements LIKE with % and _ and backslash escapes, by
// character.
func likeMatch(s, p string) bool {
	if p == "" {
		return s == ""
	}
	r, size := utf8.DecodeRuneInString(p)
	switch r {
	case '%':
		rest := p[size:]
		for {
			if likeMatch(s, rest) {
				return true
			}
			if s == "" {
				return false
			}
			_, n := utf8.DecodeRuneInString(s)
			s = s[n:]
		}
	case '_':
		if s == "" {
			return false
		}
		_, n := utf8.DecodeRuneInString(s)
		return likeMatch(s[n:], p[size:])
	case '\\':
		if size < len(p) {
			r, n := utf8.DecodeRuneInString(p[size:])
			size += n
			sr, sn := utf8.DecodeRuneInString(s)
			return s != "" && sr == r && likeMatch(s[sn:], p[size:])
		}
	}
	sr, sn := utf8.DecodeRuneInString(s)
	return s != "" && sr == r && likeMatch(s[sn:], p[size:])
}

type distinctNode struct {
	l, r node
	k    kind
	not  bool
}

func (n *distinctNode) typ() typ { return typ{k: kBool} }
func (n *distinctNode) eval(row [][]byte) (value, error) {
	l, err := n.l.eval(row)
	if err != nil {
		return value{}, err
	}
	r, err := n.r.eval(row)
	if err != nil {
		return value{}, err
	}
	var distinct bool
	switch {
	case l.null || r.null:
		distinct = l.null != r.null
	case n.k == kArray:
		distinct = compareArrays(kText, l, r) != 0
	default:
		distinct = compare(n.k, l, r) != 0
	}
	return value{b: distinct != n.not}, nil
}
func (n *distinctNode) sql(b *strings.Builder) {
	op := "IS DISTINCT FROM"
	if n.not {
		op = "IS NOT DISTINCT FROM"
	}
	binarySQL(b, n.l, op, n.r)
}

type arrayOpNode struct {
	op   string
	l, r node
}

func (n *arrayOpNode) typ() typ { return typ{k: kBool} }

func containsAll(k kind, a, b value) bool {
	for _, y := range b.a {
		found := false
		for _, x := range a.a {
			if !x.null && !y.null && compare(k, x, y) == 0 {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func (n *arrayOpNode) eval(row [][]byte) (value, error) {
	l, err := n.l.eval(row)
	if err != nil || l.null {
		return l, err
	}
	r, err := n.r.eval(row)
	if err != nil || r.null {
		return r, err
	}
	k := n.l.typ().elem.k
	switch n.op {
	case "@>":
		return value{b: containsAll(k, l, r)}, nil
	case "<@":
		return value{b: containsAll(k, r, l)}, nil
	}
	for _, x := range l.a {
		for _, y := range r.a {
			if !x.null && !y.null && compare(k, x, y) == 0 {
				return value{b: true}, nil
			}
		}
	}
	return value{b: false}, nil
}
func (n *arrayOpNode) sql(b *strings.Builder) { binarySQL(b, n.l, n.op, n.r) }

type anyNode struct {
	op     string
	l, arr node
	all    bool
	k      kind
}

func (n *anyNode) typ() typ { return typ{k: kBool} }
func (n *anyNode) eval(row [][]byte) (value, error) {
	l, err := n.l.eval(row)
	if err != nil || l.null {
		return l, err
	}
	a, err := n.arr.eval(row)
	if err != nil || a.null {
		return a, err
	}
	sawNull := false
	for _, x := range a.a {
		if x.null {
			sawNull = true
			continue
		}
		if r := cmpResult(n.op, compare(n.k, l, x)); r != n.all {
			return value{b: r}, nil
		}
	}
	if sawNull {
		return null, nil
	}
	return value{b: n.all}, nil
}
func (n *anyNode) sql(b *strings.Builder) {
	b.WriteString("(")
	n.l.sql(b)
	q := " ANY ("
	if n.all {
		q = " ALL ("
	}
	b.WriteString(" " + n.op + q)
	n.arr.sql(b)
	b.WriteString("))")
}

type arrayNode struct {
	elems []node
	t     typ
}

func (n *arrayNode) typ() typ { return n.t }
func (n *arrayNode) eval(row [][]byte) (value, error) {
	out := value{a: make([]value, len(n.elems))}
	for i, e := range n.elems {
		v, err := e.eval(row)
		if err != nil {
			return value{}, err
		}
		out.a[i] = v
	}
	return out, nil
}
func (n *arrayNode) sql(b *strings.Builder) {
	b.WriteString("ARRAY[")
	for i, e := range n.elems {
		if i > 0 {
			b.WriteString(", ")
		}
		e.sql(b)
	}
	b.WriteString("]::" + n.t.sqlType())
}
