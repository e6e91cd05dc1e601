package rest

import (
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/linkgate/linkgate/internal/rowcsv"
	"github.com/linkgate/linkgate/paging"
)

// CSV over REST. The gateway picks a marshaler by the Accept header; the
// csvOutput middleware puts a csvWriter in front of the gateway for row
// requests, and the gateway hands it each response (a List page or one
// stream message) before marshaling it (writeCSVRows, a forward-response
// option): the writer turns the message's rows into CSV from their fields,
// in the order of the request's select. Rows are written message by
// message, so memory stays bounded by one message whatever the length of
// a stream. The marshaler registered for text/csv thus writes nothing for
// rows, and JSON for an error answered before any row.
//
// A CSV client resumes with the Linkgate-Next-Page-Token header of a List
// response, or the trailer of the same name of a stream (the token after
// the last row sent; absent at the end of the data). A stream that fails
// after its first rows ends its body cleanly and reports the error in the
// Linkgate-Error trailer, with the token to resume in
// Linkgate-Next-Page-Token.

const (
	mimeCSV          = "text/csv"
	headerPageToken  = "Linkgate-Next-Page-Token"
	trailerError     = "Linkgate-Error"
	csvContentType   = "text/csv; charset=utf-8"
	csvHeaderPresent = "header=present"
)

// rowsMessage is a List response or a stream message: rows and the token
// that follows them.
type rowsMessage interface {
	proto.Message
	GetNextPageToken() string
}

// csvMarshaler is the gateway's marshaler for Accept: text/csv.
type csvMarshaler struct{ runtime.JSONPb }

func newCSVMarshaler() *csvMarshaler {
	return &csvMarshaler{runtime.JSONPb{MarshalOptions: protojson.MarshalOptions{UseProtoNames: true}}}
}

// ContentType is CSV for rows (a List response, a stream message) and
// JSON for an error answered before any row, which then reads as every
// other REST error.
func (*csvMarshaler) ContentType(v any) string {
	if _, rows := v.(rowsMessage); rows {
		return csvContentType + "; " + csvHeaderPresent
	}
	return "application/json"
}

// StreamContentType is the content type of a stream's body.
func (m *csvMarshaler) StreamContentType(v any) string { return m.ContentType(v) }

// Marshal writes nothing for rows, which the csvWriter has written from
// the message already, and JSON for anything else (an error).
func (m *csvMarshaler) Marshal(v any) ([]byte, error) {
	if chunk, ok := v.(map[string]any); ok {
		v = chunk["result"]
	}
	if _, rows := v.(rowsMessage); rows {
		return nil, nil
	}
	return m.JSONPb.Marshal(v)
}

// Delimiter separates stream messages; csvWriter drops it.
func (*csvMarshaler) Delimiter() []byte { return []byte("\n") }

// writeCSVRows hands each response of a CSV request to its csvWriter.
func writeCSVRows(_ context.Context, w http.ResponseWriter, resp proto.Message) error {
	cw, ok := w.(*csvWriter)
	if !ok {
		return nil
	}
	rows, ok := resp.(rowsMessage)
	if !ok {
		return nil // the stream's start, before any message
	}
	return cw.rows(rows)
}

// datasetAt is the dataset a REST path lists or streams the rows of; nil
// for any other path.
func datasetAt(path string) *paging.Dataset {
	path = strings.TrimSuffix(path, ":stream")
	for _, d := range paging.Datasets {
		if d.RESTPath() == path {
			return d
		}
	}
	return nil
}

// csvOutput turns output=csv (or output=json) into the Accept header the
// gateway chooses its marshaler by, and removes it from the query, which
// the gateway would otherwise refuse as an unknown parameter. A CSV
// request for rows gets a csvWriter; CSV of anything else is 406.
func csvOutput(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q, qe := query(r)
		if qe != nil {
			writeStatus(w, qe.GRPCStatus())
			return
		}
		r.Form = q
		if q.Has("output") {
			switch out := q.Get("output"); out {
			case "csv":
				r.Header.Set("Accept", mimeCSV)
			case "json":
				r.Header.Set("Accept", "application/json")
			default:
				writeStatus(w, badParam("output", "must be csv or json, not %q", clip(out)).GRPCStatus())
				return
			}
			q.Del("output")
		}
		if !acceptsCSV(r.Header.Values("Accept")) {
			next.ServeHTTP(w, r)
			return
		}
		r.Header.Set("Accept", mimeCSV) // the exact value the gateway matches
		ds := datasetAt(r.URL.Path)
		if ds == nil || r.Method != http.MethodGet {
			writeJSONError(w, http.StatusNotAcceptable, "text/csv is offered for the List and Stream rows only; ask for application/json")
			return
		}
		cw := &csvWriter{ResponseWriter: w, key: protoreflect.Name(ds.RowsField()), columns: columns(q["select"], ds),
			stream: strings.HasSuffix(r.URL.Path, ":stream")}
		defer cw.finish()
		next.ServeHTTP(cw, r)
	})
}

// acceptsCSV reports whether an Accept header asks for CSV.
func acceptsCSV(values []string) bool {
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == mimeCSV {
				return true
			}
		}
	}
	return false
}

// columns are the CSV columns: the selected fields in order (the dataset's
// default when none), after change and change_time for new/lost.
func columns(sel []string, d *paging.Dataset) []string {
	return rowcsv.Columns(sel, d.DefaultSelect(), d.Events())
}

func writeJSONError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{"code": code, "message": msg})
}

// csvWriter writes the rows of each message the gateway hands it as CSV,
// and drops what the gateway writes for them.
type csvWriter struct {
	http.ResponseWriter
	key     protoreflect.Name
	columns []string
	stream  bool

	csv        *rowcsv.Writer // set once the header row is out
	record     []string
	lastToken  string
	streamFail string
}

// rows writes the rows of one message, after the header row if it is the
// first.
func (w *csvWriter) rows(msg rowsMessage) error {
	token := msg.GetNextPageToken()
	w.lastToken = token
	if w.csv == nil {
		h := w.Header()
		h.Set("Content-Type", csvContentType+"; "+csvHeaderPresent)
		h.Del("Content-Length")
		if w.stream {
			h.Set("Trailer", headerPageToken+", "+trailerError)
		} else if token != "" {
			h.Set(headerPageToken, token)
		}
		w.startCSV()
	}
	m := msg.ProtoReflect()
	if fd := m.Descriptor().Fields().ByName(w.key); fd != nil && fd.IsList() && fd.Kind() == protoreflect.MessageKind {
		list := m.Get(fd).List()
		for i := range list.Len() {
			row := list.Get(i).Message()
			for j, c := range w.columns {
				w.record[j] = rowCell(row, c)
			}
			w.csv.Write(w.record)
		}
	}
	return w.csv.Flush()
}

func (w *csvWriter) startCSV() {
	w.csv = rowcsv.NewWriter(w.ResponseWriter)
	w.csv.Write(w.columns)
	w.record = make([]string, len(w.columns))
}

// fail records the error that ended a stream, for its trailers, and the
// token to resume it if the error carries one.
func (w *csvWriter) fail(st *status.Status) {
	w.streamFail = fmt.Sprintf("%d %s", st.Code(), st.Message())
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			if t := info.GetMetadata()["page_token"]; t != "" {
				w.lastToken = t
			}
		}
	}
}

// Write passes an answer without rows (an error) and drops what the
// gateway writes after rows: their empty marshaling, the delimiter and a
// stream's error line, which goes into the trailers instead.
func (w *csvWriter) Write(b []byte) (int, error) {
	if w.csv != nil {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// finish sets the stream's trailers.
func (w *csvWriter) finish() {
	if w.csv == nil || !w.stream {
		return
	}
	if w.lastToken != "" {
		w.Header().Set(headerPageToken, w.lastToken)
	}
	if w.streamFail != "" {
		w.Header().Set(trailerError, w.streamFail)
	}
}

// Flush sends what was written, for the gateway's per-message flush.
func (w *csvWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (w *csvWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// rowCell is the text of one column of a row, as every CSV of rows
// spells it.
func rowCell(row protoreflect.Message, column string) string { return rowcsv.Cell(row, column) }
