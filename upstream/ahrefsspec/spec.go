// Package ahrefsspec checks HTTP requests against Ahrefs' own OpenAPI
// document for API v3, trimmed to the operations linkgate calls
// (openapi.json; README.md says where it comes from). Tests use it to show
// that every request the client builds is one the API defines, by a contract
// nobody in this project wrote.
//
// Beyond what openapi3filter checks (path, method, declared parameters,
// required ones, enums, types, the JSON body's schema), the spec states some
// rules in prose, and Check enforces those too: no query parameter the
// operation does not declare, the select, where and order_by columns of each
// list endpoint, the where grammar, the history forms and the fields
// batch-analysis may select.
package ahrefsspec

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

//go:embed openapi.json
var document []byte

// Server is the API's base URL as the spec declares it; request paths
// below it start with /v3.
const Server = "https://api.ahrefs.com"

// Spec is the loaded document with the column lists its prose gives.
type Spec struct {
	doc     *openapi3.T
	router  routers.Router
	columns map[string]*columns // by operation path, e.g. /site-explorer/refdomains
}

// columns are the identifiers a list endpoint accepts in each parameter.
type columns struct {
	sel, where, order map[string]bool
}

// Load parses the embedded document.
func Load() (*Spec, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(document)
	if err != nil {
		return nil, fmt.Errorf("ahrefsspec: load: %w", err)
	}
	// Ahrefs names some components with spaces ("batch-analysis.Error
	// response"), which kin-openapi's validation (run by the router) refuses.
	// References are resolved by now, so the map keys can be renamed.
	schemas := doc.Components.Schemas
	for name, ref := range schemas {
		if fixed := strings.ReplaceAll(name, " ", "_"); fixed != name {
			delete(schemas, name)
			schemas[fixed] = ref
		}
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("ahrefsspec: invalid document: %w", err)
	}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("ahrefsspec: router: %w", err)
	}
	s := &Spec{doc: doc, router: router, columns: map[string]*columns{}}
	for path, item := range doc.Paths.Map() {
		if item.Get == nil || item.Get.Parameters.GetByInAndName("query", "select") == nil {
			continue
		}
		c, err := listColumns(item.Get)
		if err != nil {
			return nil, fmt.Errorf("ahrefsspec: %s: %w", path, err)
		}
		s.columns[path] = c
	}
	return s, nil
}

var (
	whereColumn  = regexp.MustCompile(`\*\*([a-z0-9_.]+)\*\*( \(\d+ units\))?:`)
	exceptClause = regexp.MustCompile(`except for ([^.]*)`)
	backticked   = regexp.MustCompile("`([a-z0-9_]+)`")
	listedField  = regexp.MustCompile("(?m)^- `([a-z0-9_]+)`")
)

// listColumns reads a list endpoint's columns: select takes the properties
// of the response's rows ("See response schema for valid column
// identifiers"), order_by the same except those its description names, and
// where the bold identifiers its description lists.
func listColumns(op *openapi3.Operation) (*columns, error) {
	c := &columns{sel: map[string]bool{}, where: map[string]bool{}, order: map[string]bool{}}
	resp := op.Responses.Status(200)
	if resp == nil || resp.Value.Content.Get("application/json") == nil {
		return nil, errors.New("no JSON 200 response")
	}
	envelope := resp.Value.Content.Get("application/json").Schema.Value
	if len(envelope.Properties) != 1 {
		return nil, fmt.Errorf("the response has %d top-level keys, want 1", len(envelope.Properties))
	}
	for _, rows := range envelope.Properties {
		if rows.Value.Items == nil {
			return nil, errors.New("the response's key is not an array")
		}
		for name := range rows.Value.Items.Value.Properties {
			c.sel[name] = true
			c.order[name] = true
		}
	}
	if p := op.Parameters.GetByInAndName("query", "order_by"); p != nil {
		if m := exceptClause.FindStringSubmatch(p.Description); m != nil {
			for _, name := range backticked.FindAllStringSubmatch(m[1], -1) {
				delete(c.order, name[1])
			}
		}
	}
	if p := op.Parameters.GetByInAndName("query", "where"); p != nil {
		for _, m := range whereColumn.FindAllStringSubmatch(p.Description, -1) {
			c.where[m[1]] = true
		}
	}
	if len(c.sel) == 0 || len(c.where) == 0 {
		return nil, errors.New("no select or where columns found")
	}
	return c, nil
}

// Check validates one request as linkgate sends it: its path starts with
// /v3 below any base URL, body is the request's body (nil for a GET).
func (s *Spec) Check(r *http.Request, body []byte) error {
	u := Server + r.URL.Path
	if r.URL.RawQuery != "" {
		u += "?" + r.URL.RawQuery
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header = r.Header.Clone()
	route, params, err := s.router.FindRoute(req)
	if err != nil {
		return fmt.Errorf("%s %s: no such operation in the spec: %w", r.Method, r.URL.Path, err)
	}
	name := r.Method + " " + r.URL.Path
	declared := map[string]bool{}
	for _, p := range route.Operation.Parameters {
		if p.Value.In == openapi3.ParameterInQuery {
			declared[p.Value.Name] = true
		}
	}
	for key := range req.URL.Query() {
		if !declared[key] {
			return fmt.Errorf("%s: query parameter %q is not defined by the spec", name, key)
		}
	}
	err = openapi3filter.ValidateRequest(req.Context(), &openapi3filter.RequestValidationInput{
		Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{
			AuthenticationFunc:                bearer,
			RejectWhenRequestBodyNotSpecified: true,
			MultiError:                        true,
		},
	})
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if c := s.columns[route.Path]; c != nil {
		if err := c.check(req.URL.Query()); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if hist := req.URL.Query().Get("history"); hist != "" {
		if err := checkHistory(hist); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if route.Operation.RequestBody != nil {
		if err := checkBodySelect(route.Operation, body); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// bearer accepts the spec's one security scheme, http bearer, when the
// request carries a non-empty bearer token.
func bearer(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	token, ok := strings.CutPrefix(in.RequestValidationInput.Request.Header.Get("Authorization"), "Bearer ")
	if !ok || strings.TrimSpace(token) == "" {
		return errors.New("no bearer token in Authorization")
	}
	return nil
}

func (c *columns) check(q map[string][]string) error {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	for _, name := range strings.Split(get("select"), ",") {
		if !c.sel[name] {
			return fmt.Errorf("select: %q is not a column of the response", name)
		}
	}
	if o := get("order_by"); o != "" {
		for _, key := range strings.Split(o, ",") {
			name, dir, _ := strings.Cut(key, ":")
			if !c.order[name] {
				return fmt.Errorf("order_by: %q cannot be used", name)
			}
			if dir != "" && dir != "asc" && dir != "desc" {
				return fmt.Errorf("order_by: %q: direction %q is not asc or desc", name, dir)
			}
		}
	}
	if w := get("where"); w != "" {
		var tree any
		dec := json.NewDecoder(strings.NewReader(w))
		dec.UseNumber()
		if err := dec.Decode(&tree); err != nil {
			return fmt.Errorf("where: not JSON: %w", err)
		}
		if err := c.boolFilter(tree); err != nil {
			return fmt.Errorf("where: %w", err)
		}
	}
	return nil
}

// conditions are the operators of the filter grammar that take a value.
var conditions = []string{"eq", "neq", "gt", "gte", "lt", "lte", "substring", "isubstring",
	"phrase_match", "iphrase_match", "prefix", "suffix", "regex"}

// boolFilter checks <bool_filter> of the documented grammar (the SDK's
// docs/filter-syntax.md): and/or over non-empty arrays, not over one
// filter, or an expression on a where column.
func (c *columns) boolFilter(v any) error {
	obj, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("a filter must be an object, got %T", v)
	}
	if len(obj) == 1 {
		for key, val := range obj {
			switch key {
			case "and", "or":
				list, ok := val.([]any)
				if !ok || len(list) == 0 {
					return fmt.Errorf("%q needs a non-empty array", key)
				}
				for _, x := range list {
					if err := c.boolFilter(x); err != nil {
						return err
					}
				}
				return nil
			case "not":
				return c.boolFilter(val)
			}
		}
	}
	field, ok := obj["field"].(string)
	if !ok {
		return errors.New(`an expression needs a string "field"`)
	}
	if !c.where[field] {
		return fmt.Errorf("%q is not a where column", field)
	}
	is, hasIs := obj["is"]
	listIs, hasListIs := obj["list_is"]
	for key := range obj {
		if key != "field" && key != "is" && key != "list_is" && key != "modifier" {
			return fmt.Errorf("field %q: unknown key %q", field, key)
		}
	}
	switch {
	case hasIs == hasListIs:
		return fmt.Errorf(`field %q: needs exactly one of "is" and "list_is"`, field)
	case hasIs:
		return condition(is)
	}
	q, ok := listIs.(map[string]any)
	if !ok || len(q) != 1 || (q["any"] == nil && q["all"] == nil) {
		return fmt.Errorf(`field %q: list_is must be {"any": …} or {"all": …}`, field)
	}
	for _, x := range q {
		return conditionFilter(x)
	}
	return nil
}

func conditionFilter(v any) error {
	obj, ok := v.(map[string]any)
	if !ok {
		return condition(v)
	}
	if len(obj) != 1 {
		return errors.New("a condition filter is one of and, or, not")
	}
	for key, val := range obj {
		switch key {
		case "and", "or":
			list, ok := val.([]any)
			if !ok || len(list) == 0 {
				return fmt.Errorf("%q needs a non-empty array", key)
			}
			for _, x := range list {
				if err := conditionFilter(x); err != nil {
					return err
				}
			}
			return nil
		case "not":
			return conditionFilter(val)
		}
		return fmt.Errorf("unknown key %q in a condition filter", key)
	}
	return nil
}

func condition(v any) error {
	switch v := v.(type) {
	case string:
		if v == "empty" || v == "is_null" {
			return nil
		}
		return fmt.Errorf("condition %q: only empty and is_null stand alone", v)
	case []any:
		if len(v) != 2 {
			return fmt.Errorf("a condition is [operator, value], got %d elements", len(v))
		}
		op, _ := v[0].(string)
		if !slices.Contains(conditions, op) {
			return fmt.Errorf("unknown operator %v", v[0])
		}
		switch v[1].(type) {
		case string, json.Number, bool:
			return nil
		}
		return fmt.Errorf("operator %s: the value must be a string, number or boolean, got %T", op, v[1])
	}
	return fmt.Errorf("a condition is [operator, value], empty or is_null, got %T", v)
}

// checkHistory enforces the forms the history parameter's description
// gives: live, all_time or since:YYYY-MM-DD.
func checkHistory(h string) error {
	if h == "live" || h == "all_time" {
		return nil
	}
	if d, ok := strings.CutPrefix(h, "since:"); ok {
		if _, err := time.Parse(time.DateOnly, d); err == nil {
			return nil
		}
	}
	return fmt.Errorf("history: %q is not live, all_time or since:YYYY-MM-DD", h)
}

// checkBodySelect enforces the fields a JSON body's select may name, which
// the spec lists in the property's description.
func checkBodySelect(op *openapi3.Operation, body []byte) error {
	media := op.RequestBody.Value.Content.Get("application/json")
	if media == nil || media.Schema == nil {
		return nil
	}
	prop := media.Schema.Value.Properties["select"]
	if prop == nil {
		return nil
	}
	allowed := map[string]bool{}
	for _, m := range listedField.FindAllStringSubmatch(prop.Value.Description, -1) {
		allowed[m[1]] = true
	}
	var doc struct {
		Select []string `json:"select"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return fmt.Errorf("body: %w", err)
	}
	for _, f := range doc.Select {
		if !allowed[f] {
			return fmt.Errorf("body: select: %q is not a field the spec lists", f)
		}
	}
	return nil
}

// Checking wraps an API handler (the simulator) so that every request is
// checked before it is served: a request the spec refuses is reported to
// fail and answered 400 in the API's error shape.
func (s *Spec) Checking(next http.Handler, fail func(error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err == nil {
			r.Body = io.NopCloser(bytes.NewReader(body))
			if r.Method == http.MethodGet {
				body = nil
			}
			err = s.Check(r, body)
		}
		if err != nil {
			fail(err)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
			return
		}
		next.ServeHTTP(w, r)
	})
}
