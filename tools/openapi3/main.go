// Command openapi3 turns the Swagger 2.0 document protoc-gen-openapiv2
// writes into the OpenAPI 3 document linkgate serves at /openapi.json.
// kin-openapi's openapi2conv does the conversion; this program then adds
// what the gateway does that the protos cannot say: the bearer scheme,
// newline-delimited JSON and CSV bodies, required parameters and the error
// body. Run by `make generate`.
//
//	go run ./openapi3 IN.swagger.json OUT.json
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/getkin/kin-openapi/openapi2"
	"github.com/getkin/kin-openapi/openapi2conv"
	"github.com/getkin/kin-openapi/openapi3"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: openapi3 IN.swagger.json OUT.json")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "openapi3:", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	data, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	var v2 openapi2.T
	if err := json.Unmarshal(data, &v2); err != nil {
		return err
	}
	doc, err := openapi2conv.ToV3(&v2)
	if err != nil {
		return err
	}
	improve(doc)
	if err := doc.Validate(openapi3.NewLoader().Context); err != nil {
		return fmt.Errorf("the converted document is not valid OpenAPI 3: %w", err)
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(out, append(b, '\n'), 0o644)
}

const (
	ndjson = "application/x-ndjson"
	csv    = "text/csv"
)

// tagDocs describe the services (the plugin leaves tags bare).
var tagDocs = map[string]string{
	"ExportService":    "Exports: a Stream request run on the server into files in a bucket, as a long-running operation (GET /v1/operations/{id} watches it), and the download of its parts.",
	"BacklinksService": "The four datasets (backlinks, referring domains, broken backlinks, new and lost backlinks) as List and Stream calls, the stats of a target, and what a request would cost.",
	"QuotaService":     "The caller's share of the upstream budget, and for admins every tenant's.",
}

// required query parameters, by name, on every operation that has them;
// and per path prefix for those only some datasets require.
var (
	requiredEverywhere = []string{"target"}
	requiredOn         = map[string][]string{"/v1/new-lost-backlinks": {"since"}}
)

func improve(doc *openapi3.T) {
	doc.Servers = openapi3.Servers{{URL: "/", Description: "the linkgate REST listener"}}
	if doc.Components == nil {
		doc.Components = &openapi3.Components{}
	}
	doc.Components.SecuritySchemes = openapi3.SecuritySchemes{
		"bearer": &openapi3.SecuritySchemeRef{Value: &openapi3.SecurityScheme{
			Type: "http", Scheme: "bearer",
			Description: "An API key of a tenant: `Authorization: Bearer <key>`. Not needed when authentication is off (loopback only) or with a client certificate (mutual TLS).",
		}},
	}
	doc.Security = openapi3.SecurityRequirements{{"bearer": []string{}}}
	for _, t := range doc.Tags {
		if d, ok := tagDocs[t.Name]; ok && t.Description == "" {
			t.Description = d
		}
	}

	status := doc.Components.Schemas["rpcStatus"]
	if status != nil && status.Value != nil {
		status.Value.Required = []string{"code", "message"}
		status.Value.Description = "The error body of every failed call (google.rpc.Status): a canonical gRPC code, a message, and details such as BadRequest, QuotaFailure, RetryInfo and ErrorInfo."
	}

	partBody(doc)

	paths := doc.Paths.Map()
	names := make([]string, 0, len(paths))
	for p := range paths {
		names = append(names, p)
	}
	sort.Strings(names)
	for _, path := range names {
		for method, op := range paths[path].Operations() {
			requireParams(path, op)
			ok := op.Responses.Status(200)
			if ok == nil || ok.Value == nil {
				continue
			}
			json := ok.Value.Content.Get("application/json")
			if json == nil || method != "GET" {
				continue
			}
			rows := strings.HasPrefix(path, "/v1/") && (strings.Contains(path, "backlinks") || strings.Contains(path, "refdomains")) && path != "/v1/backlinks-stats"
			csvBody := &openapi3.MediaType{Schema: &openapi3.SchemaRef{Value: &openapi3.Schema{
				Type:        &openapi3.Types{"string"},
				Description: "RFC 4180 CSV with a header row of the selected fields in order (for new/lost: change, change_time, then the fields). Asked for with `Accept: text/csv` or `output=csv`. The resume token is the Linkgate-Next-Page-Token header (List) or trailer (stream).",
			}}}
			if strings.HasSuffix(path, ":stream") {
				// The gateway writes one {"result": message} object per line,
				// and on failure a last {"error": status} line.
				ok.Value.Content = openapi3.Content{ndjson: json}
				ok.Value.Description = ptr("A stream of newline-delimited JSON objects: each {\"result\": page}, and on failure a last {\"error\": status} holding the token to resume.")
				if rows {
					ok.Value.Content[csv] = csvBody
				}
			} else if rows {
				ok.Value.Content[csv] = csvBody
				ok.Value.Headers = openapi3.Headers{"Linkgate-Next-Page-Token": &openapi3.HeaderRef{Value: &openapi3.Header{Parameter: openapi3.Parameter{
					Description: "With text/csv: the next_page_token of the page (absent on the last page), since a CSV body has no place for it.",
					Schema:      &openapi3.SchemaRef{Value: &openapi3.Schema{Type: &openapi3.Types{"string"}}},
				}}}}
			}
			if rows {
				op.Parameters = append(op.Parameters, &openapi3.ParameterRef{Value: &openapi3.Parameter{
					Name: "output", In: "query", Description: "csv or json: the body's format, as the Accept header would choose it.",
					Schema: &openapi3.SchemaRef{Value: &openapi3.Schema{Type: &openapi3.Types{"string"}, Enum: []any{"json", "csv"}}},
				}})
			}
		}
	}
}

// partBody says what a part's download answers: the stored file, of the
// part's content type, not JSON (the plugin writes a google.api.HttpBody
// stream as a JSON string).
func partBody(doc *openapi3.T) {
	for _, item := range doc.Paths.Map() {
		op := item.Get
		if op == nil || op.OperationID != "ExportService_GetExportPart" {
			continue
		}
		if ok := op.Responses.Status(200); ok != nil && ok.Value != nil {
			ok.Value.Description = ptr("The part's bytes as stored, with its Content-Type: application/x-ndjson, text/csv, application/vnd.apache.parquet, or application/gzip for a gzip NDJSON or CSV part.")
			ok.Value.Content = openapi3.Content{"application/octet-stream": &openapi3.MediaType{Schema: &openapi3.SchemaRef{
				Value: &openapi3.Schema{Type: &openapi3.Types{"string"}, Format: "binary"}}}}
		}
	}
	delete(doc.Components.Schemas, "apiHttpBody")
}

func requireParams(path string, op *openapi3.Operation) {
	names := append([]string(nil), requiredEverywhere...)
	for prefix, extra := range requiredOn {
		if strings.HasPrefix(path, prefix) {
			names = append(names, extra...)
		}
	}
	if path == "/v1/quota" || strings.HasPrefix(path, "/v1/quota/") {
		names = nil
	}
	for _, p := range op.Parameters {
		if p.Value == nil || p.Value.In != "query" {
			continue
		}
		for _, n := range names {
			if p.Value.Name == n {
				p.Value.Required = true
			}
		}
	}
}

func ptr[T any](v T) *T { return &v }
