package httpapi

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/shapelog/shapelog/engine/catalog"
	"github.com/shapelog/shapelog/engine/functions"
)

// functionRequest is the body of /api/query, /api/mutation, /api/action
// and (without path) /api/run/{module}/{function}.
type functionRequest struct {
	Path   string          `json:"path"`
	Args   json.RawMessage `json:"args"`
	Format string          `json:"format"`
}

// callFunction serves the functions API: HTTP 200 with {"status": …}
// whether the function succeeds or fails; 4xx for malformed calls.
func (s *Server) callFunction(kind functions.Kind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if e := checkClientVersion(r); e != nil {
			writeError(w, e.Status, e.Code, e.Message)
			return
		}
		caller, rerr := s.cfg.Functions.Authorize(r.Header.Get("Authorization"), s.isAccessKey)
		if rerr != nil {
			writeError(w, rerr.Status, rerr.Code, rerr.Message)
			return
		}
		var body functionRequest
		if e := jsonBody(r, &body); e != nil {
			writeError(w, e.Status, e.Code, e.Message)
			return
		}
		if rest := r.PathValue("path"); rest != "" || strings.HasPrefix(r.URL.Path, "/api/run/") {
			path, err := runPath(rest)
			if err != nil {
				writeError(w, err.Status, err.Code, err.Message)
				return
			}
			body.Path = path
		}
		if body.Path == "" {
			writeError(w, http.StatusBadRequest, "BadJsonBody", "`path` is required, e.g. \"myschema:myfunction\"")
			return
		}
		format, err := catalog.ParseFormat(body.Format)
		if err != nil {
			writeError(w, http.StatusBadRequest, "BadFormat", err.Error())
			return
		}
		res, err := s.cfg.Functions.Call(r.Context(), kind, body.Path, body.Args, format, caller)
		var re *functions.RequestError
		switch {
		case errors.As(err, &re):
			writeError(w, re.Status, re.Code, re.Message)
		case err != nil:
			s.writeFailure(w, err)
		default:
			writeJSON(w, http.StatusOK, res)
		}
	}
}

// runPath turns /api/run/{module}/{function} into "module:function".
func runPath(rest string) (string, *apiError) {
	parts := strings.Split(rest, "/")
	if len(parts) < 2 || parts[0] == "" || parts[len(parts)-1] == "" {
		return "", badRequest("MissingIdentifier", "Path or function name not provided in path, e.g. /api/run/myschema/myfunction")
	}
	if len(parts) > 2 {
		return "", badRequest("BadConvexFunctionIdentifier", "Nested modules are not supported: a function is /api/run/<schema>/<function>")
	}
	module, err1 := url.PathUnescape(parts[0])
	fn, err2 := url.PathUnescape(parts[1])
	if err1 != nil || err2 != nil {
		return "", badRequest("BadConvexFunctionIdentifier", "Invalid escape in the function path")
	}
	return module + ":" + fn, nil
}

// isAccessKey compares a presented admin key with the engine's, in
// constant time (deploy-key prefixes "<type>:<name>|" are dropped).
func (s *Server) isAccessKey(key string) bool {
	if i := strings.LastIndexByte(key, '|'); i >= 0 && strings.Contains(key[:i], ":") {
		key = key[i+1:]
	}
	return s.cfg.AccessKey != "" && subtle.ConstantTimeCompare([]byte(key), []byte(s.cfg.AccessKey)) == 1
}
