package rest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"cloud.google.com/go/longrunning/autogen/longrunningpb"
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
// the parameter. Enums take their proto names, their short forms and the
// upstream's own values (aggregation=AGGREGATION_ONE_PER_DOMAIN,
// one_per_domain or 1_per_domain; see enumValue). The bounds of every
// field (service.CheckBounds) apply as over gRPC, so an oversized value is
// named before the message is sent.
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

// parseEnum reads one enum value as enumValue does, or its number.
func parseEnum(e protoreflect.EnumDescriptor, key, s string) (protoreflect.Value, error) {
	if n, ok := enumValue(e, s); ok {
		return protoreflect.ValueOfEnum(n), nil
	}
	if n, err := strconv.ParseInt(s, 10, 32); err == nil {
		if v := e.Values().ByNumber(protoreflect.EnumNumber(n)); v != nil {
			return protoreflect.ValueOfEnum(v.Number()), nil
		}
	}
	return protoreflect.Value{}, unknownEnumValue(e, key, s)
}

// enumValue is the one reading of an enum value a REST caller wrote, in
// the query string and in JSON bodies alike. Each value has three
// spellings, in any case: its proto name (AGGREGATION_ONE_PER_DOMAIN), the
// same without the enum's prefix (one_per_domain), and the upstream's
// value where Ahrefs has the parameter (1_per_domain).
func enumValue(e protoreflect.EnumDescriptor, s string) (protoreflect.EnumNumber, bool) {
	if n, ok := service.UpstreamEnumValue(e, strings.ToLower(s)); ok {
		return n, true
	}
	name := strings.ToUpper(s)
	vals := e.Values()
	if v := vals.ByName(protoreflect.Name(name)); v != nil {
		return v.Number(), true
	}
	if v := vals.ByName(protoreflect.Name(enumPrefix(e) + name)); v != nil {
		return v.Number(), true
	}
	return 0, false
}

// enumPrefix is the prefix every value name of e carries, its name in
// upper snake case (ChangeFilter: CHANGE_FILTER_), as buf's STANDARD lint
// requires of the protos.
func enumPrefix(e protoreflect.EnumDescriptor) string {
	var b strings.Builder
	for i, r := range string(e.Name()) {
		if i > 0 && unicode.IsUpper(r) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String() + "_"
}

// unknownEnumValue lists what is accepted, short forms first.
func unknownEnumValue(e protoreflect.EnumDescriptor, key, s string) *queryError {
	var short, names []string
	vals := e.Values()
	for i := range vals.Len() {
		if v := vals.Get(i); v.Number() != 0 {
			names = append(names, string(v.Name()))
			short = append(short, strings.ToLower(strings.TrimPrefix(string(v.Name()), enumPrefix(e))))
		}
	}
	var ahrefs []string
	for _, a := range service.UpstreamEnumNames(e) {
		if !slices.Contains(short, a) {
			ahrefs = append(ahrefs, a)
		}
	}
	also := "the proto names " + strings.Join(names, ", ")
	if len(ahrefs) > 0 {
		also += " and Ahrefs' " + strings.Join(ahrefs, ", ")
	}
	return badParam(key, "unknown value %q: use %s (%s are accepted too, in any case)", clip(s), strings.Join(short, ", "), also)
}

// canonicalEnums rewrites the enum values of a JSON request body of
// message md into their proto names, the only spelling protojson reads,
// so that a body takes every spelling the query string takes. A value no
// spelling matches is refused naming its field; anything else is left
// for protojson to judge.
func canonicalEnums(md protoreflect.MessageDescriptor, body []byte) ([]byte, *queryError) {
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	v, err := decodeStrictJSON(d, "")
	if qe := (*queryError)(nil); errors.As(err, &qe) {
		return nil, qe
	}
	if _, end := d.Token(); err != nil || end != io.EOF {
		return body, nil // not one JSON value: protojson says why
	}
	if qe := canonicalMessage(md, v, ""); qe != nil {
		return nil, qe
	}
	out, err := json.Marshal(v)
	if err != nil {
		return body, nil
	}
	return out, nil
}

// decodeStrictJSON decodes one JSON value, refusing a name given twice in an
// object as protojson does (a map would keep the last silently).
func decodeStrictJSON(d *json.Decoder, path string) (any, error) {
	tok, err := d.Token()
	if err != nil {
		return nil, err
	}
	delim, ok := tok.(json.Delim)
	if !ok {
		return tok, nil
	}
	switch delim {
	case '{':
		obj := map[string]any{}
		for d.More() {
			k, err := d.Token()
			if err != nil {
				return nil, err
			}
			name, _ := k.(string)
			p := name
			if path != "" {
				p = path + "." + name
			}
			if _, dup := obj[name]; dup {
				return nil, badParam(p, "is given twice; give it once")
			}
			if obj[name], err = decodeStrictJSON(d, p); err != nil {
				return nil, err
			}
		}
		_, err = d.Token()
		return obj, err
	case '[':
		var list []any
		for d.More() {
			v, err := decodeStrictJSON(d, path)
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		}
		_, err = d.Token()
		return list, err
	}
	return nil, fmt.Errorf("unexpected %v", delim)
}

func canonicalMessage(md protoreflect.MessageDescriptor, v any, path string) *queryError {
	obj, ok := v.(map[string]any)
	if !ok || strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
		return nil // a well-known type has a JSON form of its own
	}
	for k, val := range obj {
		fd := md.Fields().ByTextName(k)
		if fd == nil {
			fd = md.Fields().ByJSONName(k)
		}
		if fd == nil {
			continue
		}
		p := k
		if path != "" {
			p = path + "." + k
		}
		if fd.IsMap() {
			fd = fd.MapValue()
			if m, ok := val.(map[string]any); ok {
				for mk, mv := range m {
					nv, qe := canonicalValue(fd, mv, p+"."+mk)
					if qe != nil {
						return qe
					}
					m[mk] = nv
				}
			}
			continue
		}
		if l, ok := val.([]any); ok && fd.IsList() {
			for i := range l {
				nv, qe := canonicalValue(fd, l[i], p)
				if qe != nil {
					return qe
				}
				l[i] = nv
			}
			continue
		}
		nv, qe := canonicalValue(fd, val, p)
		if qe != nil {
			return qe
		}
		obj[k] = nv
	}
	return nil
}

func canonicalValue(fd protoreflect.FieldDescriptor, v any, path string) (any, *queryError) {
	switch fd.Kind() {
	case protoreflect.EnumKind:
		s, ok := v.(string)
		if !ok || fd.Enum().FullName() == "google.protobuf.NullValue" {
			return v, nil
		}
		n, ok := enumValue(fd.Enum(), s)
		if !ok {
			return nil, unknownEnumValue(fd.Enum(), path, s)
		}
		return string(fd.Enum().Values().ByNumber(n).Name()), nil
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return v, canonicalMessage(fd.Message(), v, path)
	}
	return v, nil
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
		v1.File_linkgate_v1_export_service_proto.Services().ByName("ExportService"),
		longrunningpb.File_google_longrunning_operations_proto.Services().ByName("Operations"),
	} {
		methods := sd.Methods()
		for i := range methods.Len() {
			md := methods.Get(i)
			rule, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
			if rule == nil {
				continue
			}
			method, path := httpRule(rule)
			out = append(out, route{method: method, path: path, match: pathRegexp(path),
				input: md.Input(), body: rule.GetBody()})
		}
	}
	return out
}()

// pathRegexp matches the paths of an HTTP rule's template: a variable
// {tenant} is one segment, {name=operations/**} its own template, in
// which * is one segment and ** any number.
func pathRegexp(template string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for rest := template; rest != ""; {
		open := strings.IndexByte(rest, '{')
		if open < 0 {
			b.WriteString(regexp.QuoteMeta(rest))
			break
		}
		b.WriteString(regexp.QuoteMeta(rest[:open]))
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			panic("rest: unbalanced braces in HTTP rule " + template)
		}
		_, sub, hasSub := strings.Cut(rest[open+1:open+end], "=")
		if !hasSub {
			sub = "*"
		}
		for i, seg := range strings.Split(sub, "/") {
			if i > 0 {
				b.WriteString("/")
			}
			switch seg {
			case "*":
				b.WriteString("[^/]+")
			case "**":
				b.WriteString(".+")
			default:
				b.WriteString(regexp.QuoteMeta(seg))
			}
		}
		rest = rest[open+end+1:]
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

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
