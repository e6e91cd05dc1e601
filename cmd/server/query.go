package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/grpc-ecosystem/grpc-gateway/v2/utilities"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/internal/suggest"
	"github.com/linkgate/linkgate/service"
)

// queryParser is the one parser of REST query strings: the gateway fills
// every request message through it (runtime.SetQueryParameterParser). It is
// strict, because a parameter silently ignored is a request answered with
// other rows than asked and billed for them: a name the request message
// does not have, a value that is not of the field's type, an enum value
// that does not exist, or a field given twice is INVALID_ARGUMENT naming
// the parameter. Enums take their proto names and the upstream's own
// values (mode=exact, aggregation=1_per_domain) that every Ahrefs v3 user
// knows. The bounds of every field (service.CheckBounds) apply as over
// gRPC, so an oversized value is named before the message is sent.
type queryParser struct{}

// Parse implements runtime.QueryParameterParser.
func (queryParser) Parse(msg proto.Message, values url.Values, filter *utilities.DoubleArray) error {
	return parseQuery(msg.ProtoReflect(), values, filter)
}

var _ runtime.QueryParameterParser = queryParser{}

// queryError is a parameter the parser refused, and why.
type queryError struct {
	Param, Description string
}

func (e *queryError) Error() string { return e.Param + ": " + e.Description }

// GRPCStatus is the error as callers see it: INVALID_ARGUMENT with the
// parameter in BadRequest, as every other caller mistake.
func (e *queryError) GRPCStatus() *status.Status {
	st := status.New(codes.InvalidArgument, e.Error())
	if d, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
		{Field: e.Param, Description: e.Description},
	}}); err == nil {
		return d
	}
	return st
}

func badParam(param, format string, args ...any) *queryError {
	// Details must be UTF-8 to be sent at all; the REST handler refuses
	// other names before the parser, but the parser stands alone.
	return &queryError{Param: strings.ToValidUTF8(clip(param), "\uFFFD"), Description: strings.ToValidUTF8(fmt.Sprintf(format, args...), "\uFFFD")}
}

// clip shortens what a caller sent before it is repeated in an error.
func clip(s string) string {
	const most = 64
	if len(s) <= most {
		return s
	}
	cut := most
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// parseQuery fills m from values, in the order of the parameter names so
// that the first error reported is the same every time.
func parseQuery(m protoreflect.Message, values url.Values, filter *utilities.DoubleArray) error {
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, key := range keys {
		path := strings.Split(key, ".")
		if filter != nil && filter.HasCommonPrefix(path) {
			continue // a path parameter, filled by the gateway itself
		}
		target, fd, err := resolve(m, key, path)
		if err != nil {
			return err
		}
		if err := setField(target, fd, key, values[key]); err != nil {
			return err
		}
	}
	if err := service.CheckBounds(m.Interface()); err != nil {
		return err
	}
	return nil
}

// resolve finds the field a parameter names: a field of the message by its
// proto name or JSON name, or a dotted path into singular message fields.
func resolve(m protoreflect.Message, key string, path []string) (protoreflect.Message, protoreflect.FieldDescriptor, error) {
	if key == "" {
		return nil, nil, badParam("query", "has a parameter without a name: remove the stray '='")
	}
	for i, name := range path {
		fields := m.Descriptor().Fields()
		fd := fields.ByTextName(name)
		if fd == nil {
			fd = fields.ByJSONName(name)
		}
		if fd == nil {
			return nil, nil, unknownParam(m.Descriptor(), key)
		}
		if i == len(path)-1 {
			return m, fd, nil
		}
		if fd.Kind() != protoreflect.MessageKind || fd.IsList() || fd.IsMap() {
			return nil, nil, unknownParam(m.Descriptor(), key)
		}
		m = m.Mutable(fd).Message()
	}
	return nil, nil, unknownParam(m.Descriptor(), key)
}

// ahrefsHints say what to use instead of a parameter of the Ahrefs API (or
// of a habit from other APIs) that linkgate spells otherwise or does not
// need.
var ahrefsHints = map[string]string{
	"limit":   "linkgate pages for you: use page_size (rows per response, at most 1000)",
	"offset":  "there are no offsets: continue with the page_token of the previous response",
	"where":   "use filter, linkgate's filter language (e.g. filter=domain_rating_source>=30), which it compiles to the upstream's where",
	"output":  "output takes csv or json",
	"timeout": "set a deadline on the call instead (the grpc-timeout header over REST)",
	"token":   "send API keys as the header Authorization: Bearer <key>, never in the URL; a page token is page_token",
	"api_key": "send API keys as the header Authorization: Bearer <key>, never in the URL",
	"key":     "send API keys as the header Authorization: Bearer <key>, never in the URL",
	"order":   "use order_by (field:asc,other:desc)",
	"sort":    "use order_by (field:asc,other:desc)",
	"fields":  "use select (comma-separated field names)",
}

// notHere says why a parameter other endpoints take does not apply here.
var notHere = map[string]string{
	"history":     "the upstream keeps no history of this dataset",
	"aggregation": "referring domains are one row per domain already",
	"since":       "since is the new/lost window; on backlinks use history=since:YYYY-MM-DD",
	"changes":     "changes belongs to the new/lost dataset",
	"max_rows":    "a List returns one page of page_size rows; max_rows bounds a stream",
	"max_units":   "a List returns one page of page_size rows; max_units bounds a stream",
	"date":        "date is the day of the backlinks-stats figures",
}

// unknownParam is the error for a parameter the request message does not
// have, saying what to use instead when linkgate knows.
func unknownParam(md protoreflect.MessageDescriptor, key string) *queryError {
	own := fieldNames(md)
	path := restPaths[md.FullName()]
	if path == "" {
		path = string(md.Name())
	}
	var hint string
	name := strings.ToLower(key)
	switch {
	case ahrefsHints[name] != "":
		hint = ahrefsHints[name]
	case len(takenBy[name]) > 0:
		hint = fmt.Sprintf("%s takes no %s (%s take it)", path, name, strings.Join(takenBy[name], ", "))
		if why := notHere[name]; why != "" {
			hint = fmt.Sprintf("%s takes no %s: %s (%s take it)", path, name, why, strings.Join(takenBy[name], ", "))
		}
	default:
		if near := suggest.Nearest(name, own, 3); near != "" {
			hint = "did you mean " + near + "?"
		}
	}
	msg := "unknown parameter of " + path
	if hint != "" {
		msg += ": " + hint
	}
	if len(own) > 0 {
		msg += "; its parameters are " + strings.Join(own, ", ")
	} else {
		msg += "; it takes no query parameters"
	}
	return badParam(key, "%s", msg)
}

func fieldNames(md protoreflect.MessageDescriptor) []string {
	fields := md.Fields()
	names := make([]string, 0, fields.Len())
	for i := range fields.Len() {
		names = append(names, string(fields.Get(i).Name()))
	}
	return names
}

// setField parses the values of one parameter into its field.
func setField(m protoreflect.Message, fd protoreflect.FieldDescriptor, key string, vals []string) error {
	if fd.IsMap() || fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind {
		return badParam(key, "cannot be given in the query string")
	}
	if fd.IsList() {
		l := m.Mutable(fd).List()
		for _, s := range vals {
			v, err := parseScalar(fd, key, s)
			if err != nil {
				return err
			}
			l.Append(v)
		}
		return nil
	}
	if len(vals) > 1 {
		return badParam(key, "is given %d times; give it once", len(vals))
	}
	v, err := parseScalar(fd, key, vals[0])
	if err != nil {
		return err
	}
	m.Set(fd, v)
	return nil
}

// parseScalar parses one value of a field's kind, with a message a caller
// understands (never strconv's).
func parseScalar(fd protoreflect.FieldDescriptor, key, s string) (protoreflect.Value, error) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		if !utf8.ValidString(s) {
			return protoreflect.Value{}, badParam(key, "is not valid UTF-8")
		}
		return protoreflect.ValueOfString(s), nil
	case protoreflect.BoolKind:
		switch strings.ToLower(s) {
		case "true", "1":
			return protoreflect.ValueOfBool(true), nil
		case "false", "0":
			return protoreflect.ValueOfBool(false), nil
		}
		return protoreflect.Value{}, badParam(key, "needs true or false, got %q", clip(s))
	case protoreflect.EnumKind:
		return parseEnum(fd.Enum(), key, s)
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		n, err := parseInt(key, s, 32)
		return protoreflect.ValueOfInt32(int32(n)), err
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		n, err := parseInt(key, s, 64)
		return protoreflect.ValueOfInt64(n), err
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		n, err := parseUint(key, s, 32)
		return protoreflect.ValueOfUint32(uint32(n)), err
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		n, err := parseUint(key, s, 64)
		return protoreflect.ValueOfUint64(n), err
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || (fd.Kind() == protoreflect.FloatKind && math.Abs(f) > math.MaxFloat32) {
			return protoreflect.Value{}, badParam(key, "needs a finite number, got %q", clip(s))
		}
		if fd.Kind() == protoreflect.FloatKind {
			return protoreflect.ValueOfFloat32(float32(f)), nil
		}
		return protoreflect.ValueOfFloat64(f), nil
	case protoreflect.BytesKind:
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
			if b, err := enc.DecodeString(s); err == nil {
				return protoreflect.ValueOfBytes(b), nil
			}
		}
		return protoreflect.Value{}, badParam(key, "needs base64")
	}
	return protoreflect.Value{}, badParam(key, "cannot be given in the query string")
}

func parseInt(key, s string, bits int) (int64, error) {
	if s == "" {
		return 0, badParam(key, "is empty: give a whole number or leave the parameter out")
	}
	n, err := strconv.ParseInt(s, 10, bits)
	if errors.Is(err, strconv.ErrRange) {
		return 0, badParam(key, "%q is out of range: it must be between %d and %d", clip(s), int64(-1)<<(bits-1), int64(1)<<(bits-1)-1)
	}
	if err != nil {
		return 0, badParam(key, "needs a whole number, got %q", clip(s))
	}
	return n, nil
}

func parseUint(key, s string, bits int) (uint64, error) {
	if s == "" {
		return 0, badParam(key, "is empty: give a whole number or leave the parameter out")
	}
	n, err := strconv.ParseUint(s, 10, bits)
	if errors.Is(err, strconv.ErrRange) {
		return 0, badParam(key, "%q is out of range: it must be between 0 and %d", clip(s), uint64(1)<<bits-1)
	}
	if err != nil {
		return 0, badParam(key, "needs a whole number that is not negative, got %q", clip(s))
	}
	return n, nil
}

// parseEnum accepts a value's proto name (any case), the upstream's
// spelling of it, or its number; anything else lists what is accepted.
func parseEnum(e protoreflect.EnumDescriptor, key, s string) (protoreflect.Value, error) {
	if n, ok := service.UpstreamEnumValue(e, strings.ToLower(s)); ok {
		return protoreflect.ValueOfEnum(n), nil
	}
	vals := e.Values()
	if v := vals.ByName(protoreflect.Name(strings.ToUpper(s))); v != nil {
		return protoreflect.ValueOfEnum(v.Number()), nil
	}
	if n, err := strconv.ParseInt(s, 10, 32); err == nil {
		if v := vals.ByNumber(protoreflect.EnumNumber(n)); v != nil {
			return protoreflect.ValueOfEnum(v.Number()), nil
		}
	}
	accepted := service.UpstreamEnumNames(e)
	names := make([]string, 0, vals.Len())
	for i := range vals.Len() {
		names = append(names, string(vals.Get(i).Name()))
	}
	if len(accepted) > 0 {
		return protoreflect.Value{}, badParam(key, "unknown value %q: use %s (or %s)", clip(s), strings.Join(accepted, ", "), strings.Join(names, ", "))
	}
	return protoreflect.Value{}, badParam(key, "unknown value %q: use %s", clip(s), strings.Join(names, ", "))
}

// route is one REST endpoint as the protos declare it.
type route struct {
	method, path string
	match        *regexp.Regexp
	input        protoreflect.MessageDescriptor
	// body is the HTTP rule's body: "*" means the whole message comes as
	// JSON and the query string carries nothing.
	body string
}

// routes are every REST endpoint of linkgate's services, read from their
// google.api.http options, so that they never differ from what the
// gateway serves.
var routes = func() []route {
	var out []route
	for _, sd := range []protoreflect.ServiceDescriptor{
		v1.File_linkgate_v1_backlinks_service_proto.Services().ByName("BacklinksService"),
		v1.File_linkgate_v1_quota_service_proto.Services().ByName("QuotaService"),
	} {
		methods := sd.Methods()
		for i := range methods.Len() {
			md := methods.Get(i)
			rule, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
			if rule == nil {
				continue
			}
			method, path := httpRule(rule)
			// QuoteMeta escapes the braces of {tenant} too.
			pattern := regexp.MustCompile(`\\\{[^}]+\\\}`).ReplaceAllString(regexp.QuoteMeta(path), `[^/]+`)
			out = append(out, route{method: method, path: path, match: regexp.MustCompile("^" + pattern + "$"),
				input: md.Input(), body: rule.GetBody()})
		}
	}
	return out
}()

func httpRule(r *annotations.HttpRule) (method, path string) {
	switch p := r.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		return "GET", p.Get
	case *annotations.HttpRule_Post:
		return "POST", p.Post
	case *annotations.HttpRule_Put:
		return "PUT", p.Put
	case *annotations.HttpRule_Patch:
		return "PATCH", p.Patch
	case *annotations.HttpRule_Delete:
		return "DELETE", p.Delete
	case *annotations.HttpRule_Custom:
		return p.Custom.GetKind(), p.Custom.GetPath()
	}
	return "", ""
}

// restPaths names each request message by its REST path, for errors;
// takenBy lists, for each parameter name, the GET paths that take it.
var restPaths, takenBy = func() (map[protoreflect.FullName]string, map[string][]string) {
	paths := map[protoreflect.FullName]string{}
	taken := map[string][]string{}
	for _, r := range routes {
		if _, dup := paths[r.input.FullName()]; !dup {
			paths[r.input.FullName()] = r.path
		}
		if r.method != "GET" {
			continue
		}
		// A List and its Stream take the same parameters (but max_*):
		// name the dataset's path once.
		path := strings.TrimSuffix(r.path, ":stream")
		for _, name := range fieldNames(r.input) {
			if !slices.Contains(taken[name], path) {
				taken[name] = append(taken[name], path)
			}
		}
	}
	return paths, taken
}()

// routeFor is the endpoint of a method and path, or the methods the path
// allows when the method is not one of them.
func routeFor(method, path string) (r *route, allowed []string) {
	for i := range routes {
		if !routes[i].match.MatchString(path) {
			continue
		}
		if routes[i].method == method {
			return &routes[i], nil
		}
		if !slices.Contains(allowed, routes[i].method) {
			allowed = append(allowed, routes[i].method)
		}
	}
	return nil, allowed
}
