package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/linkgate/linkgate/service"
)

// CSV over REST. The gateway picks a marshaler by the Accept header; the
// one registered for text/csv marshals each response (a List page or one
// stream message) as JSON, and csvWriter, which the csvOutput middleware
// puts in front of the gateway for row requests, turns each into CSV rows
// in the order of the request's select. Rows are written message by
// message, so memory stays bounded by one message whatever the length of
// a stream.
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

// csvMarshaler is the gateway's marshaler for Accept: text/csv.
type csvMarshaler struct{ runtime.JSONPb }

func newCSVMarshaler() *csvMarshaler {
	return &csvMarshaler{runtime.JSONPb{MarshalOptions: protojson.MarshalOptions{UseProtoNames: true}}}
}

// ContentType is CSV for rows (a List response, a stream message) and
// JSON for an error answered before any row, which then reads as every
// other REST error.
func (*csvMarshaler) ContentType(v any) string {
	if _, rows := v.(interface{ GetNextPageToken() string }); rows {
		return csvContentType + "; " + csvHeaderPresent
	}
	return "application/json"
}

// StreamContentType is the content type of a stream's body.
func (m *csvMarshaler) StreamContentType(v any) string { return m.ContentType(v) }

// Delimiter separates stream messages; csvWriter drops it.
func (*csvMarshaler) Delimiter() []byte { return []byte("\n") }

// csvDatasets maps the REST collections to their rows' JSON key and
// dataset label.
var csvDatasets = map[string]struct{ key, label string }{
	"/v1/backlinks":          {"backlinks", "backlinks"},
	"/v1/refdomains":         {"ref_domains", "refdomains"},
	"/v1/broken-backlinks":   {"broken_backlinks", "broken_backlinks"},
	"/v1/new-lost-backlinks": {"new_lost_backlinks", "new_lost_backlinks"},
}

// csvOutput turns output=csv (or output=json) into the Accept header the
// gateway chooses its marshaler by, and removes it from the query, which
// the gateway would otherwise refuse as an unknown parameter. A CSV
// request for rows gets a csvWriter; CSV of anything else is 406.
func csvOutput(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Has("output") {
			switch out := q.Get("output"); out {
			case "csv":
				r.Header.Set("Accept", mimeCSV)
			case "json":
				r.Header.Set("Accept", "application/json")
			default:
				writeJSONError(w, http.StatusBadRequest, fmt.Sprintf("output: must be csv or json, not %q", out))
				return
			}
			q.Del("output")
			r.URL.RawQuery = q.Encode()
		}
		if !acceptsCSV(r.Header.Values("Accept")) {
			next.ServeHTTP(w, r)
			return
		}
		r.Header.Set("Accept", mimeCSV) // the exact value the gateway matches
		ds, ok := csvDatasets[strings.TrimSuffix(r.URL.Path, ":stream")]
		if !ok || r.Method != http.MethodGet {
			writeJSONError(w, http.StatusNotAcceptable, "text/csv is offered for the List and Stream rows only; ask for application/json")
			return
		}
		cw := &csvWriter{ResponseWriter: w, key: ds.key, columns: columns(q["select"], ds.label),
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
func columns(sel []string, label string) []string {
	events := label == "new_lost_backlinks"
	var cols []string
	for _, item := range sel {
		for _, name := range strings.Split(item, ",") {
			name = strings.TrimSpace(name)
			if events && (name == "change" || name == "change_time") {
				continue // always the first two columns
			}
			if name != "" && !slices.Contains(cols, name) {
				cols = append(cols, name)
			}
		}
	}
	if len(cols) == 0 {
		cols = service.DefaultSelect(label)
	}
	if events {
		cols = append([]string{"change", "change_time"}, cols...)
	}
	return cols
}

func writeJSONError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{"code": code, "message": msg})
}

// csvWriter turns the JSON the csvMarshaler writes into CSV as it passes.
type csvWriter struct {
	http.ResponseWriter
	key     string
	columns []string
	stream  bool

	status     int
	started    bool // the response is CSV and its header row is out
	passing    bool // the response is not CSV (an error before any row)
	decided    bool
	csv        *csv.Writer
	lastToken  string
	streamFail string
}

func (w *csvWriter) WriteHeader(code int) {
	if w.decided {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.status = code // written with the first bytes, after the token header
}

func (w *csvWriter) decide() {
	if w.decided {
		return
	}
	w.decided = true
	w.passing = !strings.HasPrefix(w.Header().Get("Content-Type"), mimeCSV)
	h := w.Header()
	h.Del("Content-Length") // the CSV is not the JSON the gateway measured
	if !w.passing && w.stream {
		h.Set("Trailer", headerPageToken+", "+trailerError)
	}
}

func (w *csvWriter) Write(b []byte) (int, error) {
	w.decide()
	if w.passing {
		w.flushStatus()
		return w.ResponseWriter.Write(b)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return len(b), nil // the stream delimiter
	}
	var chunk struct {
		Result json.RawMessage `json:"result"`
		Error  *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Details []struct {
				Metadata map[string]string `json:"metadata"`
			} `json:"details"`
		} `json:"error"`
	}
	msg := b
	if w.stream {
		if err := json.Unmarshal(b, &chunk); err != nil {
			return 0, fmt.Errorf("csv: %w", err)
		}
		if chunk.Error != nil {
			w.streamFail = fmt.Sprintf("%d %s", chunk.Error.Code, chunk.Error.Message)
			for _, d := range chunk.Error.Details {
				if t := d.Metadata["page_token"]; t != "" {
					w.lastToken = t
				}
			}
			return len(b), nil
		}
		msg = chunk.Result
	}
	var page map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(msg))
	dec.UseNumber()
	if err := dec.Decode(&page); err != nil {
		return 0, fmt.Errorf("csv: %w", err)
	}
	var token string
	json.Unmarshal(page["next_page_token"], &token)
	w.lastToken = token
	if !w.stream && token != "" {
		w.Header().Set(headerPageToken, token)
	}
	w.flushStatus()
	if w.csv == nil {
		w.csv = csv.NewWriter(w.ResponseWriter)
		w.csv.UseCRLF = true // RFC 4180
		w.csv.Write(w.columns)
	}
	var rows []map[string]any
	if raw := page[w.key]; raw != nil {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&rows); err != nil {
			return 0, fmt.Errorf("csv: %w", err)
		}
	}
	record := make([]string, len(w.columns))
	for _, row := range rows {
		if bl, ok := row["backlink"].(map[string]any); ok {
			for k, v := range bl {
				row[k] = v
			}
		}
		for i, c := range w.columns {
			record[i] = cell(c, row[c])
		}
		w.csv.Write(record)
	}
	w.csv.Flush()
	return len(b), w.csv.Error()
}

func (w *csvWriter) flushStatus() {
	if w.status != 0 {
		w.ResponseWriter.WriteHeader(w.status)
		w.status = 0
	}
}

// finish writes the header row of an empty answer and sets the stream's
// trailers.
func (w *csvWriter) finish() {
	if !w.decided && w.status != 0 {
		// A status without a body (nothing to turn into CSV).
		w.decided = true
		w.ResponseWriter.WriteHeader(w.status)
		return
	}
	if w.passing || !w.decided {
		return
	}
	if w.csv == nil {
		w.flushStatus()
		w.csv = csv.NewWriter(w.ResponseWriter)
		w.csv.UseCRLF = true
		w.csv.Write(w.columns)
		w.csv.Flush()
	}
	if w.stream {
		if w.lastToken != "" {
			w.Header().Set(headerPageToken, w.lastToken)
		}
		if w.streamFail != "" {
			w.Header().Set(trailerError, w.streamFail)
		}
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

// cell renders one value: text as is, numbers and booleans as JSON writes
// them, timestamps in RFC 3339 (UTC), lists as a JSON array, the change of
// a new/lost row as new or lost, and an absent (or null) value as empty.
func cell(column string, v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		if column == "change" {
			return strings.ToLower(strings.TrimPrefix(v, "CHANGE_"))
		}
		return v
	case json.Number:
		return v.String()
	case bool:
		if v {
			return "true"
		}
		return "false"
	}
	b, _ := json.Marshal(v)
	return string(b)
}
