package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shapelog/shapelog/engine/shapes"
)

// maxSubsetBody bounds the JSON body of POST /v1/shape.
const maxSubsetBody = 4 << 20

// subsetOf reads a subset snapshot request from the query (subset__*
// parameters) or, for POST, the JSON body; nil means none was asked for.
// A 4xx has been written when ok is false.
func subsetOf(w http.ResponseWriter, r *http.Request, q url.Values) (sub *shapes.SubsetRequest, ok bool) {
	if r.Method == http.MethodPost {
		return subsetFromBody(w, r)
	}
	fields := map[string]any{}
	for k, v := range q {
		name, isSubset := strings.CutPrefix(k, "subset__")
		if !isSubset {
			continue
		}
		// subset__params is a JSON object, or the deep-object form
		// subset__params[1]=…
		if n, isParam := strings.CutPrefix(name, "params["); isParam && strings.HasSuffix(n, "]") {
			if _, isJSON := q["subset__params"]; isJSON {
				invalidSubset(w, "params", "give subset__params as one JSON object or as subset__params[n], not both")
				return nil, false
			}
			params, _ := fields["params"].(map[string]any)
			if params == nil {
				params = map[string]any{}
			}
			params[strings.TrimSuffix(n, "]")] = v[0]
			fields["params"] = params
			continue
		}
		fields[name] = v[0]
	}
	if len(fields) == 0 {
		return nil, true
	}
	if p, isText := fields["params"].(string); isText {
		var params map[string]any
		if err := json.Unmarshal([]byte(p), &params); err != nil {
			invalidSubset(w, "params", "must be a JSON object of parameter values, such as {\"1\":\"value\"}")
			return nil, false
		}
		fields["params"] = params
	}
	return subsetFromFields(w, fields)
}

// subsetFromBody reads POST /v1/shape's body: the subset fields, at the top
// level or under "subset". A body without them asks for the shape's log.
func subsetFromBody(w http.ResponseWriter, r *http.Request) (*shapes.SubsetRequest, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxSubsetBody))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeShapeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"message": "The request body is larger than " + formatBytes(maxSubsetBody)})
		return nil, false
	case err != nil:
		writeShapeJSON(w, http.StatusBadRequest, map[string]string{"error": "Invalid JSON in request body", "details": err.Error()})
		return nil, false
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, true
	}
	var raw any
	if err := json.Unmarshal(body, &raw); err != nil {
		writeShapeJSON(w, http.StatusBadRequest, map[string]string{"error": "Invalid JSON in request body", "details": err.Error()})
		return nil, false
	}
	fields, isObject := raw.(map[string]any)
	if !isObject {
		writeShapeJSON(w, http.StatusBadRequest, map[string]string{"error": "Request body must be a JSON object"})
		return nil, false
	}
	if nested, isObject := fields["subset"].(map[string]any); isObject {
		fields = nested
	}
	for _, k := range []string{"where", "params", "limit", "offset", "order_by", "where_expr", "order_by_expr"} {
		if _, present := fields[k]; present {
			return subsetFromFields(w, fields)
		}
	}
	return nil, true
}

// subsetFromFields checks the subset fields, from either form.
func subsetFromFields(w http.ResponseWriter, fields map[string]any) (*shapes.SubsetRequest, bool) {
	sub := &shapes.SubsetRequest{}
	text := func(name string) (string, bool) {
		switch v := fields[name].(type) {
		case nil:
			return "", true
		case string:
			return v, true
		}
		invalidSubset(w, name, "must be a string")
		return "", false
	}
	count := func(name string, least int) (int, bool) {
		var n int
		switch v := fields[name].(type) {
		case nil:
			return 0, true
		case float64:
			n = int(v)
			if float64(n) != v {
				n = -1
			}
		case string:
			var err error
			if n, err = strconv.Atoi(v); err != nil {
				n = -1
			}
		default:
			n = -1
		}
		if n < least {
			invalidSubset(w, name, "must be an integer of at least "+strconv.Itoa(least))
			return 0, false
		}
		return n, true
	}
	var ok bool
	if sub.Where, ok = text("where"); !ok {
		return nil, false
	}
	if sub.OrderBy, ok = text("order_by"); !ok {
		return nil, false
	}
	if sub.Limit, ok = count("limit", 1); !ok {
		return nil, false
	}
	if sub.Offset, ok = count("offset", 0); !ok {
		return nil, false
	}
	if (fields["where_expr"] != nil && sub.Where == "") || (fields["order_by_expr"] != nil && sub.OrderBy == "") {
		invalidSubset(w, "where", "where_expr and order_by_expr are not supported by this server: send where and order_by")
		return nil, false
	}
	switch p := fields["params"].(type) {
	case nil:
	case map[string]any:
		sub.Params = map[string]string{}
		for k, v := range p {
			switch v := v.(type) {
			case string:
				sub.Params[k] = v
			case float64, bool:
				b, _ := json.Marshal(v)
				sub.Params[k] = string(b)
			default:
				invalidSubset(w, "params", "parameter "+k+" must be a string, a number or a boolean")
				return nil, false
			}
		}
	default:
		invalidSubset(w, "params", "must be an object of parameter values, such as {\"1\":\"value\"}")
		return nil, false
	}
	return sub, true
}

// invalidSubset answers a subset parameter error as Electric does.
func invalidSubset(w http.ResponseWriter, field string, msg any) {
	if s, isText := msg.(string); isText {
		msg = []string{s}
	}
	writeShapeJSON(w, http.StatusBadRequest, map[string]any{"message": "Invalid request", "errors": map[string]any{"subset": map[string]any{field: msg}}})
}

// serveSubset answers a subset snapshot: {metadata, data}. Its offset is
// the request's (or, for offset=now, the shape's head before the rows were
// read): the client resumes its stream there, and drops the changes the
// metadata shows the rows already include.
func (s *Server) serveSubset(w http.ResponseWriter, r *http.Request, m *shapes.Manager, shape *shapes.Shape, req *shapeRequest, def *shapes.Definition, sub *shapes.SubsetRequest) {
	ctx := r.Context()
	offset := req.offset.String()
	if req.now {
		head, err := waitHead(ctx, shape)
		if err != nil {
			s.shapeFailure(ctx, w, m, def, req.def, err)
			return
		}
		offset = head.String()
	}
	// The request's definition: it has the shape's identity, and its own
	// queryable_columns (which are not part of the identity).
	res, err := m.Subset(ctx, def, *sub)
	var se *shapes.SubsetError
	if errors.As(err, &se) {
		invalidSubset(w, se.Field, se.Msg)
		return
	}
	if refusal := postgresRefusal(err); refusal != nil && refusal.Status < 500 {
		field := "where"
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "42883" && sub.OrderBy != "" { // no ordering operator for a column's type
			field = "order_by"
		}
		invalidSubset(w, field, refusal.Message)
		return
	}
	if err != nil {
		s.shapeFailure(ctx, w, m, def, req.def, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-cache")
	h.Set("Electric-Snapshot", "true")
	h.Set("Electric-Handle", shape.Handle)
	h.Set("Electric-Offset", offset)
	h.Set("Electric-Schema", shape.Schema)
	body := make([]byte, 0, len(res.Data)+256)
	body = append(body, `{"metadata":{"xmin":`...)
	body = strconv.AppendQuote(body, res.Xmin)
	body = append(body, `,"xmax":`...)
	body = strconv.AppendQuote(body, res.Xmax)
	body = append(body, `,"xip_list":[`...)
	for i, x := range res.Xip {
		if i > 0 {
			body = append(body, ',')
		}
		body = strconv.AppendQuote(body, x)
	}
	body = append(body, `],"snapshot_mark":`...)
	body = strconv.AppendInt(body, int64(res.Mark), 10)
	body = append(body, `,"database_lsn":"`...)
	body = strconv.AppendUint(body, res.LSN, 10)
	body = append(body, `"},"data":[`...)
	body = append(body, res.Data...)
	body = append(body, "]}"...)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}
