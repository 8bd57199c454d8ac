package httpapi

import (
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/shapelog/shapelog/engine/catalog"
)

// formatProtobuf is the format parameter that asks list_snapshot and
// document_deltas for protobuf frames (see documents_proto.go).
const formatProtobuf = "protobuf"

// parseExportFormat reads list_snapshot's and document_deltas' format
// parameter, s: protobuf frames for format=protobuf, or when no format is
// given and the Accept header asks for application/x-protobuf (at least as
// much as for application/json); else a JSON format.
func parseExportFormat(r *http.Request, s string) (catalog.Format, bool, error) {
	switch {
	case s == formatProtobuf:
		return catalog.FormatJSON, true, nil
	case s == "" && acceptsProtobuf(r.Header.Values("Accept")):
		return catalog.FormatJSON, true, nil
	}
	f, err := catalog.ParseFormat(s)
	if err != nil {
		return f, false, errors.New("format param must be one of [`json`, `convex_json`, `protobuf`]. Got " + s)
	}
	return f, false, nil
}

// acceptsProtobuf reports whether Accept headers prefer
// application/x-protobuf to application/json (a tie goes to protobuf,
// which a client names only on purpose; wildcards count for neither).
func acceptsProtobuf(accept []string) bool {
	qProto, qJSON := -1.0, -1.0
	for _, h := range accept {
		for _, part := range strings.Split(h, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			q := 1.0
			if v, ok := params["q"]; ok {
				if q, err = strconv.ParseFloat(v, 64); err != nil {
					continue
				}
			}
			switch mt {
			case protobufContentType:
				qProto = max(qProto, q)
			case "application/json":
				qJSON = max(qJSON, q)
			}
		}
	}
	return qProto > 0 && qProto >= qJSON
}

// prepareKey names how snapshot pages are prepared, so pages read ahead in
// one encoding are not served in another.
func (a *exportArgs) prepareKey() string {
	if a.Protobuf {
		return formatProtobuf
	}
	return a.Format.String()
}

// finishProtoSnapshot answers list_snapshot in protobuf: the page's
// frames, prepared, then PageEnd with the snapshot, the cursor of next
// (more: else null) and hasMore, as the JSON answer has them.
func (p *pageWriter) finishProtoSnapshot(prepared []byte, ts int64, next *snapshotCursor, more bool) {
	p.proto = true
	recycleBuffer(p.buf)
	p.buf = prepared
	var cursor *string
	if more {
		b, _ := json.Marshal(next)
		c := string(b)
		cursor = &c
	}
	p.buf = appendPageEnd(p.buf, &ts, cursor, more)
	p.finish()
}

// finishProtoDeltas ends a document_deltas answer in protobuf: PageEnd
// with the cursor (its decimal text) and hasMore.
func (p *pageWriter) finishProtoDeltas(cursor int64, hasMore bool) {
	c := strconv.FormatInt(cursor, 10)
	p.buf = appendPageEnd(p.buf, nil, &c, hasMore)
	p.finish()
}
