package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/internal/logsink"
	"github.com/linkgate/linkgate/paging"
	"github.com/linkgate/linkgate/service"
	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

func TestRefuseUnauthenticatedOffLoopback(t *testing.T) {
	for _, tc := range []struct{ name, grpcAddr, httpAddr, want string }{
		{"grpc on every interface", "0.0.0.0:0", "127.0.0.1:0", "LINKGATE_GRPC_ADDR=0.0.0.0:0"},
		{"http on every interface", "127.0.0.1:0", ":0", "LINKGATE_HTTP_ADDR=:0"},
		{"http on a routable address", "[::1]:0", "10.1.2.3:0", "LINKGATE_HTTP_ADDR=10.1.2.3:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, "")
			cfg.TenantsFile = ""
			cfg.GRPCAddr, cfg.HTTPAddr = tc.grpcAddr, tc.httpAddr
			logs := &logsink.Buffer{}
			s, err := start(t.Context(), cfg, newLogger(cfg, logs))
			if err == nil {
				s.shutdown()
				t.Fatal("started without authentication off loopback")
			}
			for _, want := range []string{tc.want, "not a loopback address", "LINKGATE_TENANTS_FILE"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			// It failed before anything started, let alone listened.
			if strings.Contains(logs.String(), "starting") {
				t.Errorf("the server began starting: %s", logs)
			}
			// loadConfig refuses the same configuration.
			env := map[string]string{"LINKGATE_GRPC_ADDR": tc.grpcAddr, "LINKGATE_HTTP_ADDR": tc.httpAddr}
			if _, err := loadConfig(nil, func(k string) string { return env[k] }); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("loadConfig: %v", err)
			}
		})
	}
	t.Run("loopback without tenants is the embedded default", func(t *testing.T) {
		cfg := testConfig(t, "")
		cfg.TenantsFile = ""
		cfg.UpstreamKey = ""
		s, _ := startTest(t, cfg)
		code, body, _ := restCall(t, nil, "GET", "http://"+s.httpAddr+"/v1/quota", "", "")
		if code != 200 || field(t, body, "tenant", "tenant") != service.DefaultTenant {
			t.Errorf("quota without auth: %d %s", code, body)
		}
	})
}

func TestAuthentication(t *testing.T) {
	s, _ := startTest(t, testConfig(t, simulator(t, ahrefssim.Config{})))
	c := dial(t, s.grpcAddr)
	base := "http://" + s.httpAddr
	tests := []struct {
		name     string
		key      string
		call     func(ctx context.Context) error
		path     string // the same call over REST
		wantCode codes.Code
		wantHTTP int
	}{
		{"no key", "", getQuota(c), "/v1/quota", codes.Unauthenticated, 401},
		{"unknown key", "not-a-key", getQuota(c), "/v1/quota", codes.Unauthenticated, 401},
		{"key of another case", strings.ToLower(keyA), getQuota(c), "/v1/quota", codes.Unauthenticated, 401},
		{"reader reads its quota", keyA, getQuota(c), "/v1/quota", codes.OK, 200},
		{"reader lists backlinks", keyA, listBacklinks(c, ""), "/v1/backlinks?target=example.com&page_size=2", codes.OK, 200},
		{"reader lists tenants", keyA, listTenants(c), "/v1/quota/tenants", codes.PermissionDenied, 403},
		{"reader changes a limit", keyB, setLimit(c, "b", 1e9), "", codes.PermissionDenied, 0},
		{"admin lists tenants", keyAdmin, listTenants(c), "/v1/quota/tenants", codes.OK, 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(as(t.Context(), tc.key))
			if got := status.Code(err); got != tc.wantCode {
				t.Errorf("gRPC: %v, want %v", err, tc.wantCode)
			}
			if tc.path != "" {
				if code, body, _ := restCall(t, nil, "GET", base+tc.path, tc.key, ""); code != tc.wantHTTP {
					t.Errorf("REST: %d %s, want %d", code, body, tc.wantHTTP)
				}
			}
		})
	}
	t.Run("malformed authorization headers", func(t *testing.T) {
		for _, h := range []string{"Basic " + keyA, keyA, "Bearer", "Bearer  ", "Bearer " + keyA + " x"} {
			req, _ := http.NewRequest("GET", base+"/v1/quota", nil)
			req.Header.Set("Authorization", h)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 401 {
				t.Errorf("%q: %d, want 401", h, resp.StatusCode)
			}
		}
	})
	t.Run("health needs no key", func(t *testing.T) {
		if _, err := healthpb.NewHealthClient(c.conn).Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
			t.Error(err)
		}
	})
}

func getQuota(c clients) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := c.quota.GetQuota(ctx, &v1.GetQuotaRequest{})
		return err
	}
}

func listTenants(c clients) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := c.quota.ListTenantQuotas(ctx, &v1.ListTenantQuotasRequest{})
		return err
	}
}

func setLimit(c clients, tenant string, limit int64) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := c.quota.UpdateTenantLimit(ctx, &v1.UpdateTenantLimitRequest{Tenant: tenant, Limit: &limit})
		return err
	}
}

func listBacklinks(c clients, filter string) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := c.backlinks.ListBacklinks(ctx, &v1.ListBacklinksRequest{Target: "example.com", PageSize: 2, Filter: filter})
		return err
	}
}

func TestTenantIsolation(t *testing.T) {
	s, _ := startTest(t, testConfig(t, simulator(t, ahrefssim.Config{CacheTTL: -1})))
	c := dial(t, s.grpcAddr)
	ctxA, ctxB, ctxAdmin := as(t.Context(), keyA), as(t.Context(), keyB), as(t.Context(), keyAdmin)

	first, err := c.backlinks.ListBacklinks(ctxA, &v1.ListBacklinksRequest{Target: "sized-500.example", PageSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	if first.GetNextPageToken() == "" {
		t.Fatal("no page token")
	}
	qa, err := c.quota.GetQuota(ctxA, &v1.GetQuotaRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if qa.GetTenant().GetTenant() != "a" || qa.GetTenant().GetUsed() == 0 || qa.GetTenant().GetLimit() != 2000 {
		t.Errorf("tenant a's quota: %v", qa.GetTenant())
	}
	qb, err := c.quota.GetQuota(ctxB, &v1.GetQuotaRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if qb.GetTenant().GetTenant() != "b" || qb.GetTenant().GetUsed() != 0 {
		t.Errorf("tenant b sees %v, not its own unspent budget", qb.GetTenant())
	}

	t.Run("b cannot continue a's token", func(t *testing.T) {
		_, err := c.backlinks.ListBacklinks(ctxB, &v1.ListBacklinksRequest{Target: "sized-500.example", PageSize: 10, PageToken: first.GetNextPageToken()})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "page_token") {
			t.Errorf("b with a's token: %v", err)
		}
		// a itself can.
		if _, err := c.backlinks.ListBacklinks(ctxA, &v1.ListBacklinksRequest{Target: "sized-500.example", PageSize: 10, PageToken: first.GetNextPageToken()}); err != nil {
			t.Errorf("a with its token: %v", err)
		}
	})

	t.Run("a's spending is bounded by a's limit only", func(t *testing.T) {
		var err error
		for i := 0; i < 100 && err == nil; i++ {
			_, err = c.backlinks.ListBacklinks(ctxA, &v1.ListBacklinksRequest{Target: fmt.Sprintf("t%d.example", i), PageSize: 100})
		}
		if reason(err) != service.ReasonTenantLimitReached {
			t.Fatalf("a never reached its limit: %v", err)
		}
		if _, err := c.backlinks.ListBacklinks(ctxB, &v1.ListBacklinksRequest{Target: "example.com", PageSize: 10}); err != nil {
			t.Errorf("b is blocked by a's limit: %v", err)
		}
		qb, _ := c.quota.GetQuota(ctxB, &v1.GetQuotaRequest{})
		qa, _ := c.quota.GetQuota(ctxA, &v1.GetQuotaRequest{})
		if qa.GetTenant().GetUsed() > 2000 || qb.GetTenant().GetUsed() == 0 || qb.GetTenant().GetTenant() != "b" {
			t.Errorf("a %v, b %v", qa.GetTenant(), qb.GetTenant())
		}
	})

	t.Run("admin sees every tenant and changes a's limit", func(t *testing.T) {
		all, err := c.quota.ListTenantQuotas(ctxAdmin, &v1.ListTenantQuotasRequest{})
		if err != nil {
			t.Fatal(err)
		}
		names := map[string]bool{}
		for _, q := range all.GetTenants() {
			names[q.GetTenant()] = true
		}
		if !names["a"] || !names["b"] {
			t.Errorf("admin sees %v", names)
		}
		if err := setLimit(c, "a", 1_000_000)(ctxAdmin); err != nil {
			t.Fatal(err)
		}
		if _, err := c.backlinks.ListBacklinks(ctxA, &v1.ListBacklinksRequest{Target: "more.example", PageSize: 10}); err != nil {
			t.Errorf("a after its limit was raised: %v", err)
		}
	})
}

// reason is the ErrorInfo reason of an error.
func reason(err error) string {
	for _, d := range status.Convert(err).Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return ei.GetReason()
		}
	}
	return ""
}

// violation is the field a BadRequest names.
func violation(err error) string {
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) > 0 {
			return br.GetFieldViolations()[0].GetField()
		}
	}
	return ""
}

func TestInputLimits(t *testing.T) {
	cfg := testConfig(t, simulator(t, ahrefssim.Config{}))
	cfg.MaxHeaderBytes = 8 << 10
	s, _ := startTest(t, cfg)
	c := dial(t, s.grpcAddr)
	ctx := as(t.Context(), keyA)
	fields := strings.TrimSuffix(strings.Repeat("url_from,", service.MaxSelectFields+1), ",")
	tests := []struct {
		name, field string
		req         *v1.ListBacklinksRequest
	}{
		{"too many fields", "select", &v1.ListBacklinksRequest{Target: "example.com", Select: []string{fields}}},
		{"filter too long", "filter", &v1.ListBacklinksRequest{Target: "example.com", Filter: strings.Repeat(" ", 5000) + "is_spam"}},
		{"filter too deep", "filter", &v1.ListBacklinksRequest{Target: "example.com", Filter: strings.Repeat("(", 40) + "is_spam" + strings.Repeat(")", 40)}},
		{"token too long", "page_token", &v1.ListBacklinksRequest{Target: "example.com", PageToken: strings.Repeat("x", paging.MaxTokenBytes+1)}},
		{"target too long", "target", &v1.ListBacklinksRequest{Target: strings.Repeat("a", 3000) + ".example"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.backlinks.ListBacklinks(ctx, tc.req)
			if status.Code(err) != codes.InvalidArgument || violation(err) != tc.field {
				t.Errorf("%v (field %q), want INVALID_ARGUMENT on %s", err, violation(err), tc.field)
			}
			// A stream checks the same bounds.
			st, err := c.backlinks.StreamBacklinks(ctx, &v1.StreamBacklinksRequest{Target: tc.req.Target, Select: tc.req.Select, Filter: tc.req.Filter, PageToken: tc.req.PageToken})
			if err == nil {
				_, err = st.Recv()
			}
			if status.Code(err) != codes.InvalidArgument || violation(err) != tc.field {
				t.Errorf("stream: %v, want INVALID_ARGUMENT on %s", err, tc.field)
			}
		})
	}
	t.Run("gRPC message too large", func(t *testing.T) {
		// A caller's mistake, said as such: retrying (RESOURCE_EXHAUSTED,
		// HTTP 429) would never help.
		_, err := c.backlinks.ListBacklinks(ctx, &v1.ListBacklinksRequest{Target: "example.com", Select: make([]string, 70_000)})
		if status.Code(err) != codes.InvalidArgument || violation(err) != "request" || !strings.Contains(err.Error(), "at most 65536") {
			t.Errorf("%v, want INVALID_ARGUMENT on request saying the bound", err)
		}
	})
	t.Run("REST target of 10 KB", func(t *testing.T) {
		code, body, _ := restCall(t, nil, "GET", "http://"+s.httpAddr+"/v1/backlinks?target="+strings.Repeat("a", 10_000), keyA, "")
		if code != http.StatusBadRequest || !strings.Contains(body, "target: is 10000 bytes long; the limit is 2048") {
			t.Errorf("%d %s, want 400 naming target", code, clip(body))
		}
	})
	t.Run("REST body too large", func(t *testing.T) {
		code, _, _ := restCall(t, nil, "POST", "http://"+s.httpAddr+"/v1/cost:estimate", keyA, `{"target":"`+strings.Repeat("a", 100_000)+`"}`)
		if code != http.StatusRequestEntityTooLarge {
			t.Errorf("%d, want 413", code)
		}
	})
	t.Run("REST headers too large", func(t *testing.T) {
		req, _ := http.NewRequest("GET", "http://"+s.httpAddr+"/v1/quota", nil)
		req.Header.Set("X-Big", strings.Repeat("a", 20<<10))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("%d, want 431", resp.StatusCode)
		}
	})
}

func TestStreamsPerTenant(t *testing.T) {
	cfg := testConfig(t, simulator(t, ahrefssim.Config{Latency: 2 * time.Second}))
	cfg.MaxStreamsPerTenant = 1
	s, _ := startTest(t, cfg)
	c := dial(t, s.grpcAddr)
	ctx, cancel := context.WithCancel(as(t.Context(), keyB))
	defer cancel()
	// The first stream waits on the slow upstream and holds b's only slot.
	// Five upstream pages of two seconds each: the slot stays taken.
	first, err := c.backlinks.StreamBacklinks(ctx, &v1.StreamBacklinksRequest{Target: "sized-5000.example"})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			if _, err := first.Recv(); err != nil {
				return
			}
		}
	}()
	// Let the first stream reach the server before the second one does.
	time.Sleep(300 * time.Millisecond)
	var second error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		st, err := c.backlinks.StreamBacklinks(as(t.Context(), keyB), &v1.StreamBacklinksRequest{Target: "example.com", MaxRows: 1})
		if err == nil {
			_, err = st.Recv()
		}
		if second = err; status.Code(err) == codes.ResourceExhausted {
			break
		}
	}
	if status.Code(second) != codes.ResourceExhausted || reason(second) != service.ReasonTooManyStreams || !strings.Contains(second.Error(), "too many streams") {
		t.Fatalf("second stream of b: %v", second)
	}
	// Another tenant is not affected.
	st, err := c.backlinks.StreamBacklinks(as(t.Context(), keyA), &v1.StreamBacklinksRequest{Target: "example.com", MaxRows: 1})
	if err == nil {
		_, err = st.Recv()
	}
	if err != nil && !errors.Is(err, io.EOF) {
		t.Errorf("a's stream: %v", err)
	}
}
