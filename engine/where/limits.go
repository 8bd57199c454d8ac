package where

import (
	"fmt"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Bounds on the size and complexity of a where clause. Parse checks them
// before anything reaches PostgreSQL, and the length bounds before the
// clause reaches pg_query, and rejects a clause over one with an *Error
// naming the limit and the clause's value.
//
//   - MaxLength bounds what pg_query parses. Its C code recurses once per
//     level of the parse tree without a stack check, using about 350 bytes
//     of stack a level, and a left-associative chain such as 1+1+1+… adds a
//     level every 2 bytes. A 12 KB chain crashes the whole process on a
//     2 MB thread stack (the glibc default when the stack rlimit is
//     unlimited), a 48 KB one on the usual 8 MB. At 8 KiB a clause nests at
//     most 4,096 levels, about 1.4 MB, short of pg_query's own limits too
//     (10,000 parser stack entries, 10,000 nested protobuf messages).
//     Electric's own server takes a where
//     clause in the URL, whose request line (Bandit's default) is at most
//     10,000 bytes, URL-encoded.
//   - MaxNodes bounds the work per row: Match evaluates every node on every
//     change, and PostgreSQL's planner, executor and JIT on every snapshot
//     row. Operators, constants, column references, parameters, function
//     calls, casts and list items count one each.
//   - MaxDepth bounds recursion in Match, in SQL rendering and in
//     PostgreSQL's planner (whose stack is limited by max_stack_depth).
//   - MaxParams and MaxParamsLength bound the parameters, which are
//     inlined into the SQL as literals.
const (
	MaxLength       = 8 << 10  // bytes of the where clause
	MaxNodes        = 2000     // expression nodes in its parse tree
	MaxDepth        = 100      // levels of nested expression nodes
	MaxParams       = 1000     // parameters given ($1, $2, …)
	MaxParamsLength = 64 << 10 // bytes of all parameter values together
)

// checkSize checks the length bounds, before parsing.
func checkSize(expr string, params map[string]string) error {
	if len(expr) > MaxLength {
		return &Error{Reason: fmt.Sprintf("where clause is %d bytes long; the limit is %d", len(expr), MaxLength)}
	}
	if len(params) > MaxParams {
		return &Error{Reason: fmt.Sprintf("where clause has %d parameters; the limit is %d", len(params), MaxParams)}
	}
	n := 0
	for _, v := range params {
		n += len(v)
	}
	if n > MaxParamsLength {
		return &Error{Reason: fmt.Sprintf("where clause parameters are %d bytes long together; the limit is %d", n, MaxParamsLength)}
	}
	return nil
}

// complexity counts the expression nodes of a parse tree and their depth.
type complexity struct {
	nodes, depth int
	deepAt       int32 // location of the first node deeper than MaxDepth
}

// checkComplexity checks the node and depth bounds of a parsed clause.
func checkComplexity(root *pg_query.Node) error {
	var c complexity
	c.deepAt = -1
	c.walk(root.ProtoReflect(), 0)
	if c.nodes > MaxNodes {
		return &Error{Reason: fmt.Sprintf("where clause has %d nodes; the limit is %d", c.nodes, MaxNodes)}
	}
	if c.depth > MaxDepth {
		return errAt(c.deepAt, "where clause is nested %d levels deep; the limit is %d", c.depth, MaxDepth)
	}
	return nil
}

// walk visits m and the messages under it; depth counts the expression
// nodes above m. Names (String nodes) and the lists holding arguments are
// parts of their node, not nodes.
func (c *complexity) walk(m protoreflect.Message, depth int) {
	if n, ok := m.Interface().(*pg_query.Node); ok {
		switch n.Node.(type) {
		case *pg_query.Node_String_, *pg_query.Node_List:
		default:
			c.nodes++
			depth++
			if depth > c.depth {
				c.depth = depth
			}
			if depth == MaxDepth+1 && c.deepAt < 0 {
				c.deepAt, _ = nodeInfo(n)
			}
		}
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.Message() == nil || fd.IsMap():
		case fd.IsList():
			l := v.List()
			for i := range l.Len() {
				c.walk(l.Get(i).Message(), depth)
			}
		default:
			c.walk(v.Message(), depth)
		}
		return true
	})
}
