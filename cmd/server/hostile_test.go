package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/service"
	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

// badValues are values each parameter can never accept: a mistake of the
// kind a careless caller makes, or an attack. Every one must be refused
// before a unit is spent, with an error naming the parameter.
var badValues = map[string][]string{
	"target":      {"", "  \t", strings.Repeat("a", service.MaxTargetBytes+1)},
	"filter":      {"((((", "nosuch = 1", `http_code = "ok"`, `contains(contains(anchor, "a"), "b")`, "is_dofollow AND", strings.Repeat("x", 4097)},
	"order_by":    {"nosuch:asc", "url_from:sideways", strings.Repeat("url_from,", 200)},
	"select":      {"nosuch", "url_from,,nosuch", strings.Repeat("url_from,", 101)},
	"page_token":  {"garbage", "eyJ2IjoxfQ.AAAA", strings.Repeat("t", 5000)},
	"history":     {"yesterday", "since:2020-13-45", strings.Repeat("h", 300)},
	"since":       {"", "2020-13-45", "last week"},
	"date":        {"tomorrow", "2020-02-30"},
	"mode":        {"exactt", "7", "-1", "MODE_NONE"},
	"protocol":    {"ftp", "9", ""},
	"aggregation": {"some", "42"},
	"changes":     {"CHANGE_FILTER_MAYBE", "5"},
	"page_size":   {"", "abc", "-1", "99999999999", "1.5", "0x10"},
	"max_rows":    {"-1", "x", "1000000000001", ""},
	"max_units":   {"-1", "", "1e3", "99999999999999999999"},
}

// unknownParams are names no GET endpoint has: Ahrefs' own, misspellings
// and noise.
var unknownParams = []string{"limit", "where", "offset", "output", "timeout", "filtre", "pagesize", "select_", "api_key", "x", "Target"}

// restEndpoint is a GET endpoint and a valid request to mutate.
type restEndpoint struct {
	path  string
	input protoreflect.MessageDescriptor
	base  url.Values
}

// restEndpoints are the GET endpoints the protos declare.
func restEndpoints() []restEndpoint {
	var out []restEndpoint
	for _, sd := range []protoreflect.ServiceDescriptor{
		v1.File_linkgate_v1_backlinks_service_proto.Services().ByName("BacklinksService"),
		v1.File_linkgate_v1_quota_service_proto.Services().ByName("QuotaService"),
	} {
		methods := sd.Methods()
		for i := range methods.Len() {
			md := methods.Get(i)
			rule, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
			if rule.GetGet() == "" {
				continue
			}
			base := url.Values{}
			if md.Input().Fields().ByName("target") != nil {
				base.Set("target", "example.com")
			}
			if md.Input().Fields().ByName("since") != nil {
				base.Set("since", "2025-06-01")
			}
			out = append(out, restEndpoint{path: rule.GetGet(), input: md.Input(), base: base})
		}
	}
	return out
}

func takes(path, param string) bool {
	for _, ep := range restEndpoints() {
		if ep.path == path {
			return ep.input.Fields().ByName(protoreflect.Name(param)) != nil
		}
	}
	return false
}

// hostileServer is a server with an upstream whose spend is visible, for
// the suites that assert nothing is spent.
func hostileServer(t *testing.T) (*server, *ahrefssim.Server) {
	t.Helper()
	sim := ahrefssim.New(ahrefssim.Config{Keys: []string{upstreamKey}})
	srv := httpTestServer(t, sim)
	cfg := testConfig(t, srv)
	cfg.LogLevel = 8 // errors only: thousands of requests follow
	s, logs := startTest(t, cfg)
	t.Cleanup(func() {
		if strings.Contains(logs.String(), `"level":"ERROR"`) {
			t.Errorf("caller mistakes were logged at ERROR:\n%s", firstLines(logs.String(), 5))
		}
	})
	return s, sim
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

// TestHostileREST drives thousands of generated bad requests at the REST
// API: each is 4xx (never 5xx), answers within its deadline, names the
// parameter it got wrong, and nothing at all is spent upstream or in the
// ledger.
func TestHostileREST(t *testing.T) {
	s, sim := hostileServer(t)
	base := "http://" + s.httpAddr
	rng := rand.New(rand.NewPCG(9, 11))
	type probe struct {
		method, url, body string
		fields            []string // the error must name one of them
	}
	var probes []probe
	eps := restEndpoints()
	for _, ep := range eps {
		// Each bad value alone, and each unknown or inapplicable name.
		for param, vals := range badValues {
			for _, v := range vals {
				q := cloneValues(ep.base)
				q.Set(param, v)
				probes = append(probes, probe{method: "GET", url: ep.path + "?" + q.Encode(), fields: []string{param}})
			}
		}
		for _, name := range unknownParams {
			q := cloneValues(ep.base)
			q.Set(name, "1")
			probes = append(probes, probe{method: "GET", url: ep.path + "?" + q.Encode(), fields: []string{name}})
		}
		q := cloneValues(ep.base)
		q.Add("target", "example.org")
		probes = append(probes, probe{method: "GET", url: ep.path + "?" + q.Encode(), fields: []string{"target"}})
	}
	// Combinations: two or three mistakes at once, among valid parameters.
	params := slices.Sorted(mapKeys(badValues))
	for len(probes) < 3000 {
		ep := eps[rng.IntN(len(eps))]
		q := cloneValues(ep.base)
		if takes(ep.path, "page_size") {
			q.Set("page_size", "5")
		}
		var fields []string
		for range 2 + rng.IntN(2) {
			if rng.IntN(4) == 0 {
				name := unknownParams[rng.IntN(len(unknownParams))]
				q.Set(name, "1")
				fields = append(fields, name)
				continue
			}
			p := params[rng.IntN(len(params))]
			vals := badValues[p]
			q.Set(p, vals[rng.IntN(len(vals))])
			fields = append(fields, p)
		}
		probes = append(probes, probe{method: "GET", url: ep.path + "?" + q.Encode(), fields: fields})
	}
	// Bodies: EstimateCost and UpdateTenantLimit.
	for _, b := range []struct{ body, field string }{
		{`{"backlinks":{"target":"example.com"},"rows":"9223372036854775807"}`, "rows"},
		{`{"backlinks":{"target":"example.com"},"rows":"-1"}`, "rows"},
		{`{"backlinks":{"target":"example.com"},"rowz":"5"}`, "rowz"},
		{`{"backlinks":{"target":"  "}}`, "backlinks.target"},
		{`{"backlinks":{"target":"example.com","filter":"(("}}`, "backlinks.filter"},
		{`{"ref_domains":{"target":"example.com","order_by":"nosuch"}}`, "ref_domains.order_by"},
		{`{"new_lost_backlinks":{"target":"example.com","since":"nope"}}`, "new_lost_backlinks.since"},
		{`{"backlinks":{"target":"` + strings.Repeat("a", 3000) + `"}}`, "backlinks.target"},
		{`{}`, "request"},
	} {
		probes = append(probes, probe{method: "POST", url: "/v1/cost:estimate", body: b.body, fields: []string{b.field}})
	}
	probes = append(probes, probe{method: "POST", url: "/v1/cost:estimate?rows=5", body: `{"backlinks":{"target":"example.com"}}`, fields: []string{"rows"}})
	for _, b := range []struct{ tenant, body, field string }{
		{"b", `{"limit":"100000000000000"}`, "limit"},
		{"b", `{"limit":"-5"}`, "limit"},
		{strings.Repeat("t", 2000), `{"limit":"5"}`, "tenant"},
		{"b", `{"limit":"5","extra":1}`, "extra"},
	} {
		probes = append(probes, probe{method: "PATCH", url: "/v1/quota/tenants/" + b.tenant, body: b.body, fields: []string{b.field}})
	}

	var failures atomic.Int64
	fail := func(format string, args ...any) {
		if failures.Add(1) <= 20 {
			t.Errorf(format, args...)
		}
	}
	client := &http.Client{Timeout: 20 * time.Second}
	work := make(chan probe)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for p := range work {
				var body io.Reader
				if p.body != "" {
					body = strings.NewReader(p.body)
				}
				req, _ := http.NewRequest(p.method, base+p.url, body)
				key := keyB
				if p.method == "PATCH" {
					key = keyAdmin
				}
				req.Header.Set("Authorization", "Bearer "+key)
				resp, err := client.Do(req)
				if err != nil {
					fail("%s %s: %v (a hang?)", p.method, clip(p.url), err)
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode < 400 || resp.StatusCode >= 500 {
					fail("%s %s: HTTP %d, want 4xx: %s", p.method, clip(p.url), resp.StatusCode, clip(string(b)))
					continue
				}
				if got := namedField(b); !slices.Contains(p.fields, got) {
					fail("%s %s: the error names %q, want one of %q: %s", p.method, clip(p.url), got, p.fields, clip(string(b)))
				}
			}
		})
	}
	for _, p := range probes {
		work <- p
	}
	close(work)
	wg.Wait()
	t.Logf("%d bad REST requests, %d failures", len(probes), failures.Load())
	assertNothingSpent(t, s, sim)
}

// namedField is the field of the first BadRequest violation in a REST
// error body (a status, or a stream's {"error": status} line).
func namedField(body []byte) string {
	var st struct {
		Error   json.RawMessage   `json:"error"`
		Details []json.RawMessage `json:"details"`
	}
	if json.Unmarshal(body, &st) != nil {
		return ""
	}
	if st.Error != nil {
		return namedField(st.Error)
	}
	for _, d := range st.Details {
		var br struct {
			Type       string `json:"@type"`
			Violations []struct {
				Field string `json:"field"`
			} `json:"field_violations"`
		}
		if json.Unmarshal(d, &br) == nil && strings.HasSuffix(br.Type, "BadRequest") && len(br.Violations) > 0 {
			return br.Violations[0].Field
		}
	}
	return ""
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = slices.Clone(vs)
	}
	return out
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// assertNothingSpent: the upstream answered no paid request and the
// ledger holds no spend or reservation.
func assertNothingSpent(t *testing.T, s *server, sim *ahrefssim.Server) {
	t.Helper()
	if u := sim.Usage(); u != 0 {
		t.Errorf("the upstream charged %d units for refused requests", u)
	}
	code, body, _ := restCall(t, nil, http.MethodGet, "http://"+s.httpAddr+"/v1/quota/tenants", keyAdmin, "")
	if code != http.StatusOK {
		t.Fatalf("quota: %d %s", code, body)
	}
	used, reserved := field(t, body, "pool", "used"), field(t, body, "pool", "reserved")
	if (used != nil && used != "0") || (reserved != nil && reserved != "0") {
		t.Errorf("the ledger shows used %v, reserved %v after refused requests", used, reserved)
	}
}

// grpcMethod is an RPC and a valid request of it.
type grpcMethod struct {
	name   string // full method name
	stream bool
	valid  func() proto.Message
}

func grpcMethods() []grpcMethod {
	var out []grpcMethod
	sd := v1.File_linkgate_v1_backlinks_service_proto.Services().ByName("BacklinksService")
	methods := sd.Methods()
	for i := range methods.Len() {
		md := methods.Get(i)
		if md.Name() == "EstimateCost" {
			continue // its request nests a list request; the REST suite covers it
		}
		in := md.Input()
		out = append(out, grpcMethod{
			name:   fmt.Sprintf("/%s/%s", sd.FullName(), md.Name()),
			stream: md.IsStreamingServer(),
			valid: func() proto.Message {
				m := dynamicpb.NewMessage(in)
				set := func(name, v string) {
					if fd := in.Fields().ByName(protoreflect.Name(name)); fd != nil {
						m.Set(fd, protoreflect.ValueOfString(v))
					}
				}
				set("target", "example.com")
				set("since", "2025-06-01")
				return m
			},
		})
	}
	return out
}

// grpcBad are wrong values by field, set by reflection on any message
// that has the field.
func grpcBad(fd protoreflect.FieldDescriptor) []protoreflect.Value {
	name := string(fd.Name())
	switch fd.Kind() {
	case protoreflect.EnumKind:
		return []protoreflect.Value{protoreflect.ValueOfEnum(99), protoreflect.ValueOfEnum(-3)}
	case protoreflect.Int32Kind:
		return []protoreflect.Value{protoreflect.ValueOfInt32(-1)}
	case protoreflect.Int64Kind:
		limit := int64(service.MaxRows)
		if name == "max_units" {
			limit = service.MaxUnits
		}
		return []protoreflect.Value{protoreflect.ValueOfInt64(-1), protoreflect.ValueOfInt64(limit + 1)}
	case protoreflect.StringKind:
		var out []protoreflect.Value
		for _, v := range badValues[name] {
			if name == "target" || v != "" || name == "since" {
				out = append(out, protoreflect.ValueOfString(v))
			}
		}
		if len(out) == 0 {
			out = append(out, protoreflect.ValueOfString(strings.Repeat("z", service.MaxParamBytes+1)))
		}
		return out
	}
	return nil
}

// TestHostileGRPC drives thousands of generated bad requests at the gRPC
// API, every field of every request wrong in every way the table knows,
// plus invalid UTF-8 in every string field: INVALID_ARGUMENT naming the
// field, never INTERNAL, within the deadline, nothing spent.
func TestHostileGRPC(t *testing.T) {
	s, sim := hostileServer(t)
	c := dial(t, s.grpcAddr)
	type probe struct {
		method grpcMethod
		msg    proto.Message
		raw    []byte // sent as is when set: bytes protobuf refuses to marshal
		fields []string
	}
	var probes []probe
	rng := rand.New(rand.NewPCG(3, 5))
	methods := grpcMethods()
	for _, m := range methods {
		fields := m.valid().ProtoReflect().Descriptor().Fields()
		for i := range fields.Len() {
			fd := fields.Get(i)
			if fd.IsList() {
				msg := m.valid()
				l := msg.ProtoReflect().Mutable(fd).List()
				l.Append(protoreflect.ValueOfString("nosuch"))
				probes = append(probes, probe{method: m, msg: msg, fields: []string{string(fd.Name())}})
				continue
			}
			for _, v := range grpcBad(fd) {
				msg := m.valid()
				msg.ProtoReflect().Set(fd, v)
				probes = append(probes, probe{method: m, msg: msg, fields: []string{string(fd.Name())}})
			}
			if fd.Kind() == protoreflect.StringKind {
				probes = append(probes, probe{method: m, raw: withInvalidUTF8(t, m.valid(), fd), fields: []string{string(fd.Name())}})
			}
		}
	}
	for len(probes) < 2000 {
		m := methods[rng.IntN(len(methods))]
		msg := m.valid()
		fields := msg.ProtoReflect().Descriptor().Fields()
		var named []string
		for range 1 + rng.IntN(3) {
			fd := fields.Get(rng.IntN(fields.Len()))
			bad := grpcBad(fd)
			if fd.IsList() || len(bad) == 0 {
				continue
			}
			msg.ProtoReflect().Set(fd, bad[rng.IntN(len(bad))])
			named = append(named, string(fd.Name()))
		}
		if len(named) > 0 {
			probes = append(probes, probe{method: m, msg: msg, fields: named})
		}
	}

	var failures atomic.Int64
	fail := func(format string, args ...any) {
		if failures.Add(1) <= 20 {
			t.Errorf(format, args...)
		}
	}
	work := make(chan probe)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for p := range work {
				ctx, cancel := context.WithTimeout(as(t.Context(), keyB), 20*time.Second)
				err := invokeRaw(ctx, c.conn, p.method, p.msg, p.raw)
				cancel()
				st := status.Convert(err)
				desc := fmt.Sprintf("%s %v", p.method.name, p.fields)
				switch {
				case st.Code() == codes.DeadlineExceeded:
					fail("%s: no answer within 20 s", desc)
				case st.Code() != codes.InvalidArgument:
					fail("%s: %v %q, want INVALID_ARGUMENT", desc, st.Code(), clip(st.Message()))
				case !slices.Contains(p.fields, violationField(st)):
					fail("%s: names %q: %s", desc, violationField(st), clip(st.Message()))
				}
			}
		})
	}
	for _, p := range probes {
		work <- p
	}
	close(work)
	wg.Wait()
	t.Logf("%d bad gRPC requests, %d failures", len(probes), failures.Load())
	assertNothingSpent(t, s, sim)
}

func violationField(st *status.Status) string {
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) > 0 {
			return br.GetFieldViolations()[0].GetField()
		}
	}
	return ""
}

// rawCodec sends and receives bytes as they are.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// invokeRaw calls a method with a message (or raw bytes) and returns the
// error of the call, or of a stream's first message.
func invokeRaw(ctx context.Context, conn *grpc.ClientConn, m grpcMethod, msg proto.Message, raw []byte) error {
	if raw == nil {
		var err error
		if raw, err = proto.Marshal(msg); err != nil {
			return err
		}
	}
	opt := grpc.ForceCodecV2(rawCodec{})
	var reply []byte
	if !m.stream {
		return conn.Invoke(ctx, m.name, &raw, &reply, opt)
	}
	cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, m.name, opt)
	if err != nil {
		return err
	}
	if err := cs.SendMsg(&raw); err != nil {
		return err
	}
	if err := cs.CloseSend(); err != nil {
		return err
	}
	for {
		if err := cs.RecvMsg(&reply); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

// withInvalidUTF8 is msg with field fd holding bytes that are not UTF-8,
// which protobuf refuses to marshal: the message is marshalled with a
// placeholder of the same length that is then overwritten.
func withInvalidUTF8(t *testing.T, msg proto.Message, fd protoreflect.FieldDescriptor) []byte {
	t.Helper()
	const mark = "\x01MARK\x01"
	msg.ProtoReflect().Set(fd, protoreflect.ValueOfString(mark))
	raw, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(raw), mark)
	copy(raw[i:], "\xff\xfe\xfd\xfc\xfb\xfa")
	return raw
}

// httpTestServer serves h on a loopback port for the test's duration.
func httpTestServer(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}
