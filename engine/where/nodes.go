package where

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode"
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

var (
	errDivisionByZero = errors.New("division by zero")
	errIntOverflow    = errors.New("bigint out of range")
	errFloatOverflow  = errors.New("value out of range: overflow")
)

type colNode struct {
	idx     int
	name    string
	t       typ
	raw     bool   // the text output is the value (text, enums, bpchar, any column cast ::text)
	padded  bool   // bpchar: trailing spaces dropped, as its cast to text does
	inet    bool   // inet: its cast to text always shows the netmask
	f32     bool   // float4: read as float32, as PostgreSQL widens it to float8
	narrow  bool   // int2/int4: widened to int8 in SQL arithmetic, so overflow agrees
	sqlCast string // type the column is cast to in SQL, if any
}

func (n *colNode) typ() typ { return n.t }
func (n *colNode) eval(row [][]byte) (value, error) {
	if n.idx >= len(row) || row[n.idx] == nil {
		return null, nil
	}
	s := bytesString(row[n.idx])
	switch {
	case n.raw:
		if n.padded {
			s = strings.TrimRight(s, " ")
		}
		if n.inet && !strings.Contains(s, "/") {
			if strings.Contains(s, ":") {
				s += "/128"
			} else {
				s += "/32"
			}
		}
		return value{s: s}, nil
	case n.f32:
		f, err := strconv.ParseFloat(s, 32)
		if err != nil && !isRange(err) {
			return value{}, fmt.Errorf("column %s: invalid real %q", n.name, s)
		}
		return value{f: f}, nil
	}
	v, err := parseValue(n.t, s)
	if err != nil {
		return value{}, fmt.Errorf("column %s: %w", n.name, err)
	}
	return v, nil
}
func (n *colNode) sql(b *strings.Builder) {
	id := pgx.Identifier{n.name}.Sanitize()
	if n.sqlCast != "" {
		b.WriteString("(" + id + ")::" + n.sqlCast)
		return
	}
	b.WriteString(id)
}

// writeWide writes an arithmetic operand, widening int2/int4 columns to
// int8 so that PostgreSQL computes in the evaluator's 64 bits.
func writeWide(b *strings.Builder, n node) {
	if c, ok := n.(*colNode); ok && c.narrow {
		b.WriteString("(" + pgx.Identifier{c.name}.Sanitize() + ")::int8")
		return
	}
	n.sql(b)
}

// unknownNode is an untyped literal or parameter not yet given a type.
type unknownNode struct{ s string }

func (n *unknownNode) typ() typ { return typ{k: kUnknown} }
func (n *unknownNode) eval([][]byte) (value, error) {
	return value{s: n.s}, nil
}
func (n *unknownNode) sql(b *strings.Builder) { writeLiteral(b, n.s, "text") }

// writeLiteral writes s as a typed string constant. Backslashes make it an
// E” string with them doubled, so that the constant means the same
// whatever standard_conforming_strings is.
func writeLiteral(b *strings.Builder, s, typeName string) {
	s = strings.ReplaceAll(s, "'", "''")
	if strings.Contains(s, `\`) {
		b.WriteString("E'" + strings.ReplaceAll(s, `\`, `\\`) + "'::" + typeName)
		return
	}
	b.WriteString("'" + s + "'::" + typeName)
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
		r := math.RoundToEven(v.f)
		if math.IsNaN(r) || r < math.MinInt64 || r >= math.MaxInt64 {
			return value{}, errIntOverflow
		}
		return value{i: int64(r)}, nil
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
		return value{i: floorDiv(v.i, usPerDay) * usPerDay}, nil
	}
	return v, nil // date → timestamp, timestamp ↔ timestamptz (UTC): same microseconds
}
func (n *castNode) sql(b *strings.Builder) {
	from := n.arg.typ().k
	switch {
	case n.t.k == kInt && from == kBool: // there is no bool → int8 cast
		b.WriteString("((")
		n.arg.sql(b)
		b.WriteString(")::int4)::int8")
	case n.t.k == kBool && from == kInt: // nor int8 → bool
		b.WriteString("((")
		n.arg.sql(b)
		b.WriteString(") <> 0)")
	default:
		b.WriteString("(")
		n.arg.sql(b)
		b.WriteString(")::" + n.t.sqlType())
	}
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// formatValue renders a value as PostgreSQL's cast to text does.
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
		return formatFloat(v.f)
	case kInterval:
		return formatInterval(v)
	case kDate, kTimestamp, kTimestampTZ:
		switch v.i {
		case math.MaxInt64:
			return "infinity"
		case math.MinInt64:
			return "-infinity"
		}
		days := floorDiv(v.i, usPerDay)
		y, m, d := civilFromDays(days)
		bc := y <= 0
		if bc {
			y = 1 - y
		}
		s := fmt.Sprintf("%04d-%02d-%02d", y, m, d)
		if k != kDate {
			s += " " + formatClock(v.i-days*usPerDay)
		}
		if k == kTimestampTZ {
			s += "+00"
		}
		if bc {
			s += " BC"
		}
		return s
	case kTime:
		return formatClock(v.i)
	}
	return v.s
}

// formatClock writes microseconds since midnight as HH:MM:SS[.ffffff].
func formatClock(us int64) string {
	s := fmt.Sprintf("%02d:%02d:%02d", us/(3600*usPerSec), us/(60*usPerSec)%60, us/usPerSec%60)
	if f := us % usPerSec; f != 0 {
		s += strings.TrimRight(fmt.Sprintf(".%06d", f), "0")
	}
	return s
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
func (n *cmpNode) sql(b *strings.Builder) {
	op := n.op
	if n.t.k == kText && op != "=" && op != "<>" {
		op = `COLLATE "C" ` + op // byte order, as compare does
	}
	binarySQL(b, n.l, op, n.r)
}

// colConstCmp is a comparison of an integer or text column with a
// constant, the commonest clause, evaluated straight from the column's
// text without building values.
type colConstCmp struct {
	*cmpNode // for typ, sql, and the general evaluation as a fallback
	idx      int
	text     bool // compare the column's text (else parse an integer)
	padded   bool
	op       int8 // cmpEq, cmpNe, cmpLt, …
	i        int64
	s        string
}

const (
	cmpEq int8 = iota
	cmpNe
	cmpLt
	cmpGt
	cmpLe
	cmpGe
)

var cmpOps = map[string]int8{"=": cmpEq, "<>": cmpNe, "<": cmpLt, ">": cmpGt, "<=": cmpLe, ">=": cmpGe}

// fastCompare specialises col op constant for integer and text columns.
func fastCompare(n *cmpNode) node {
	op := cmpOps[n.op]
	col, ok := n.l.(*colNode)
	k, ok2 := n.r.(*constNode)
	if !ok && !ok2 { // constant op column: mirror the operator
		col, ok = n.r.(*colNode)
		k, ok2 = n.l.(*constNode)
		op = [...]int8{cmpEq: cmpEq, cmpNe: cmpNe, cmpLt: cmpGt, cmpGt: cmpLt, cmpLe: cmpGe, cmpGe: cmpLe}[op]
	}
	if !ok || !ok2 || k.v.null || col.inet || col.f32 {
		return n
	}
	f := &colConstCmp{cmpNode: n, idx: col.idx, op: op, i: k.v.i, s: k.v.s}
	switch {
	case n.t.k == kInt && col.t.k == kInt:
	case n.t.k == kText && col.raw:
		f.text, f.padded = true, col.padded
	default:
		return n
	}
	return f
}

func (n *colConstCmp) eval(row [][]byte) (value, error) {
	if n.idx >= len(row) || row[n.idx] == nil {
		return null, nil
	}
	b := row[n.idx]
	var c int
	if n.text {
		s := bytesString(b)
		if n.padded {
			s = strings.TrimRight(s, " ")
		}
		if n.op == cmpEq {
			return value{b: s == n.s}, nil
		}
		c = strings.Compare(s, n.s)
	} else {
		i, ok := atoi(b)
		if !ok {
			return n.cmpNode.eval(row)
		}
		if n.op == cmpEq {
			return value{b: i == n.i}, nil
		}
		c = cmpInt(i, n.i)
	}
	switch n.op {
	case cmpNe:
		return value{b: c != 0}, nil
	case cmpLt:
		return value{b: c < 0}, nil
	case cmpGt:
		return value{b: c > 0}, nil
	case cmpLe:
		return value{b: c <= 0}, nil
	}
	return value{b: c >= 0}, nil
}

// atoi parses PostgreSQL's integer output: an optional minus and up to
// 18 digits (longer values take the general path).
func atoi(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var i int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		i = i*10 + int64(c-'0')
	}
	if neg {
		i = -i
	}
	return i, true
}

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

// compareArrays orders arrays as PostgreSQL does: element by element,
// NULL elements equal to each other and above every value, then by length.
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

// arithMode is what an arithmetic node computes.
type arithMode uint8

const (
	arInt      arithMode = iota // int8 op int8, overflow checked
	arFloat                     // float8 op float8
	arInterval                  // interval ± interval
	arTimeIv                    // timestamp[tz] ± interval (a date is cast to timestamp first)
	arDateInt                   // date ± integer days
	arDateDate                  // date - date → integer days
	arDateTime                  // date + time → timestamp
	arTsTs                      // timestamp[tz] - timestamp[tz] → interval
)

type arithNode struct {
	op   byte
	mode arithMode
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
	switch n.mode {
	case arInt:
		return intArith(n.op, l.i, r.i)
	case arFloat:
		var f float64
		switch n.op {
		case '+':
			f = l.f + r.f
		case '-':
			f = l.f - r.f
		case '*':
			f = l.f * r.f
		default:
			if r.f == 0 {
				return value{}, errDivisionByZero
			}
			f = l.f / r.f
		}
		if math.IsInf(f, 0) && !math.IsInf(l.f, 0) && !math.IsInf(r.f, 0) {
			return value{}, errFloatOverflow
		}
		return value{f: f}, nil
	case arInterval:
		if n.op == '-' {
			r = negInterval(r)
		}
		return value{m: l.m + r.m, d: l.d + r.d, i: l.i + r.i}, nil
	case arTimeIv:
		if infinite(l.i) {
			return l, nil
		}
		if n.op == '-' {
			r = negInterval(r)
		}
		return value{i: addInterval(l.i, r)}, nil
	case arDateInt:
		if infinite(l.i) {
			return l, nil
		}
		if n.op == '-' {
			r.i = -r.i
		}
		return value{i: l.i + r.i*usPerDay}, nil
	case arDateTime:
		if infinite(l.i) {
			return l, nil
		}
		return value{i: l.i + r.i}, nil
	case arDateDate:
		if infinite(l.i) || infinite(r.i) {
			return value{}, errors.New("cannot subtract infinite dates")
		}
		return value{i: (l.i - r.i) / usPerDay}, nil
	}
	if infinite(l.i) || infinite(r.i) {
		return value{}, errors.New("cannot subtract infinite timestamps")
	}
	diff := l.i - r.i // interval_justify_hours: whole days, then the rest
	return value{d: int32(diff / usPerDay), i: diff % usPerDay}, nil
}

func infinite(us int64) bool { return us == math.MaxInt64 || us == math.MinInt64 }

// addInterval adds an interval to a timestamp as PostgreSQL does: months
// first (clamping the day to the month's end), then days, then time.
func addInterval(ts int64, iv value) int64 {
	if iv.m != 0 {
		days := floorDiv(ts, usPerDay)
		us := ts - days*usPerDay
		y, m, d := civilFromDays(days)
		months := y*12 + m - 1 + int64(iv.m)
		y = floorDiv(months, 12)
		m = months - y*12 + 1
		d = min(d, daysIn(y, m))
		ts = daysFromCivil(y, m, d)*usPerDay + us
	}
	return ts + int64(iv.d)*usPerDay + iv.i
}

func intArith(op byte, a, b int64) (value, error) {
	var r int64
	switch op {
	case '+':
		r = a + b
		if (r > a) != (b > 0) {
			return value{}, errIntOverflow
		}
	case '-':
		r = a - b
		if (r < a) != (b > 0) {
			return value{}, errIntOverflow
		}
	case '*':
		r = a * b
		if a != 0 && (r/a != b || (a == -1 && b == math.MinInt64)) {
			return value{}, errIntOverflow
		}
	default:
		if b == 0 {
			return value{}, errDivisionByZero
		}
		if b == -1 {
			if op == '%' {
				return value{i: 0}, nil
			}
			if a == math.MinInt64 {
				return value{}, errIntOverflow
			}
			return value{i: -a}, nil
		}
		if op == '/' {
			r = a / b
		} else {
			r = a % b
		}
	}
	return value{i: r}, nil
}

func (n *arithNode) sql(b *strings.Builder) {
	b.WriteString("(")
	writeWide(b, n.l)
	b.WriteString(" " + string(n.op) + " ")
	if n.mode == arDateInt { // date ± int4 exists, date ± int8 does not
		b.WriteString("(")
		n.r.sql(b)
		b.WriteString(")::int4")
	} else {
		writeWide(b, n.r)
	}
	b.WriteString(")")
}

type negNode struct{ arg node }

func (n *negNode) typ() typ { return n.arg.typ() }
func (n *negNode) eval(row [][]byte) (value, error) {
	v, err := n.arg.eval(row)
	if err != nil || v.null {
		return v, err
	}
	if v.i == math.MinInt64 && n.arg.typ().k == kInt {
		return value{}, errIntOverflow
	}
	return value{i: -v.i, f: -v.f, m: -v.m, d: -v.d}, nil
}
func (n *negNode) sql(b *strings.Builder) {
	b.WriteString("(- ")
	writeWide(b, n.arg)
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
			if best.null {
				best = v
				continue
			}
			if c := compare(n.t.k, v, best); (n.name == "greatest" && c > 0) || (n.name == "least" && c < 0) {
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
		if i == 0 && n.t.k == kText && (n.name == "greatest" || n.name == "least") {
			b.WriteString(` COLLATE "C"`)
		}
	}
	b.WriteString(")")
	if n.name == "length" || n.name == "char_length" {
		b.WriteString("::int8")
	}
}

type inNode struct {
	l    node
	list []node
	t    typ
	not  bool
	// For a list of constants: their keys, and whether one is NULL.
	ints    map[int64]struct{}
	strs    map[string]struct{}
	hasNull bool
}

func (n *inNode) typ() typ { return typ{k: kBool} }

// index turns a long list of constants into a set.
func (n *inNode) index() {
	if len(n.list) < 8 {
		return
	}
	switch n.t.k {
	case kInt, kDate, kTimestamp, kTimestampTZ, kTime:
		n.ints = map[int64]struct{}{}
	case kText, kUUID:
		n.strs = map[string]struct{}{}
	default:
		return
	}
	for _, item := range n.list {
		c, ok := item.(*constNode)
		if !ok {
			n.ints, n.strs = nil, nil
			return
		}
		switch {
		case c.v.null:
			n.hasNull = true
		case n.ints != nil:
			n.ints[c.v.i] = struct{}{}
		default:
			n.strs[c.v.s] = struct{}{}
		}
	}
}

func (n *inNode) eval(row [][]byte) (value, error) {
	l, err := n.l.eval(row)
	if err != nil || l.null {
		return l, err
	}
	found, sawNull := false, n.hasNull
	switch {
	case n.ints != nil:
		_, found = n.ints[l.i]
	case n.strs != nil:
		_, found = n.strs[l.s]
	default:
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
				found = true
				break
			}
		}
	}
	switch {
	case found:
		return value{b: !n.not}, nil
	case sawNull:
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

// likeTok is one element of a compiled LIKE pattern: a literal character
// (op 0), any one character ('_') or any run of characters ('%').
type likeTok struct {
	r  rune
	op byte
}

// compileLike compiles a LIKE pattern with the default escape character,
// backslash; ci folds literal characters to lower case (ILIKE).
func compileLike(p string, ci bool) ([]likeTok, error) {
	toks := make([]likeTok, 0, len(p))
	for i := 0; i < len(p); {
		r, size := utf8.DecodeRuneInString(p[i:])
		i += size
		switch r {
		case '%':
			if len(toks) == 0 || toks[len(toks)-1].op != '%' {
				toks = append(toks, likeTok{op: '%'})
			}
			continue
		case '_':
			toks = append(toks, likeTok{op: '_'})
			continue
		case '\\':
			if i >= len(p) {
				return nil, errors.New("LIKE pattern must not end with escape character")
			}
			r, size = utf8.DecodeRuneInString(p[i:])
			i += size
		}
		if ci {
			r = unicode.ToLower(r)
		}
		toks = append(toks, likeTok{r: r})
	}
	return toks, nil
}

// likeMatch matches s against a compiled pattern in O(len(s)·len(toks)):
// on a mismatch it only backtracks to the last %.
func likeMatch(s string, toks []likeTok, ci bool) bool {
	si, ti := 0, 0
	starT, starS := -1, 0
	for si < len(s) {
		if ti < len(toks) {
			switch t := toks[ti]; t.op {
			case '%':
				starT, starS = ti, si
				ti++
				continue
			case '_':
				_, size := utf8.DecodeRuneInString(s[si:])
				si += size
				ti++
				continue
			default:
				r, size := utf8.DecodeRuneInString(s[si:])
				if ci {
					r = unicode.ToLower(r)
				}
				if r == t.r {
					si += size
					ti++
					continue
				}
			}
		}
		if starT < 0 {
			return false
		}
		_, size := utf8.DecodeRuneInString(s[starS:])
		starS += size
		si, ti = starS, starT+1
	}
	for ti < len(toks) && toks[ti].op == '%' {
		ti++
	}
	return ti == len(toks)
}

type likeNode struct {
	l, r    node
	ci, not bool
	pattern []likeTok // compiled once when the pattern is a constant
}

func (n *likeNode) typ() typ { return typ{k: kBool} }
func (n *likeNode) eval(row [][]byte) (value, error) {
	l, err := n.l.eval(row)
	if err != nil || l.null {
		return l, err
	}
	toks := n.pattern
	if toks == nil {
		r, err := n.r.eval(row)
		if err != nil || r.null {
			return r, err
		}
		if toks, err = compileLike(r.s, n.ci); err != nil {
			return value{}, err
		}
	}
	return value{b: likeMatch(l.s, toks, n.ci) != n.not}, nil
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

type distinctNode struct {
	l, r node
	t    typ
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
	case n.t.k == kArray:
		distinct = compareArrays(n.t.elem.k, l, r) != 0
	default:
		distinct = compare(n.t.k, l, r) != 0
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

// containsAll reports whether every element of b is in a; NULL elements
// are never found, as in PostgreSQL.
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
	op := n.op
	if n.k == kText && op != "=" && op != "<>" {
		op = `COLLATE "C" ` + op
	}
	q := " ANY ("
	if n.all {
		q = " ALL ("
	}
	b.WriteString(" " + op + q)
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
