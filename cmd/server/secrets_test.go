package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

// TestSecretsNeverLeak makes successful and failing calls over gRPC and
// REST, including an upstream that refuses a misconfigured key, and
// searches every response, error and log line for the upstream key and the
// callers' keys.
func TestSecretsNeverLeak(t *testing.T) {
	const wrongUpstreamKey = "WRONG-UPSTREAM-SECRET-c41d9e"
	secrets := []string{upstreamKey, wrongUpstreamKey, keyA, keyB, keyAdmin, "not-a-key-SECRET-e0e0"}
	sim := simulator(t, ahrefssim.Config{})

	var seen strings.Builder
	record := func(what string, v ...any) { fmt.Fprintln(&seen, append([]any{what}, v...)...) }
	exercise := func(t *testing.T, s *server) {
		c := dial(t, s.grpcAddr)
		base := "http://" + s.httpAddr
		calls := []struct {
			key  string
			call func(context.Context) error
			path string
		}{
			{keyA, listBacklinks(c, ""), "/v1/backlinks?target=example.com&page_size=2"},
			{keyA, listBacklinks(c, "url_from ~ ("), "/v1/backlinks?target=example.com&filter=url_from%20~%20("},
			{"not-a-key-SECRET-e0e0", getQuota(c), "/v1/quota"},
			{keyB, listTenants(c), "/v1/quota/tenants"},
			{keyAdmin, listTenants(c), "/v1/quota/tenants"},
			{keyAdmin, setLimit(c, "b", -1), ""},
			{keyA, func(ctx context.Context) error {
				st, err := c.backlinks.StreamBacklinks(ctx, &v1.StreamBacklinksRequest{Target: "example.com", MaxRows: 5})
				for err == nil {
					var m *v1.StreamBacklinksResponse
					m, err = st.Recv()
					record("stream message", m, err)
				}
				return err
			}, "/v1/backlinks:stream?target=example.com&max_rows=5"},
		}
		for _, call := range calls {
			err := call.call(as(t.Context(), call.key))
			record("grpc error", err, status.Convert(err).Proto())
			if call.path != "" {
				code, body, hdr := restCall(t, nil, "GET", base+call.path, call.key, "")
				record("rest", code, body, hdr)
			}
		}
	}

	t.Run("upstream accepts the key", func(t *testing.T) {
		s, logs := startTest(t, testConfig(t, sim))
		exercise(t, s)
		s.shutdown()
		record("log", logs.String())
		if !strings.Contains(logs.String(), `"code":"OK"`) {
			t.Error("no call succeeded: the search would prove little")
		}
	})
	t.Run("upstream refuses a misconfigured key", func(t *testing.T) {
		cfg := testConfig(t, sim)
		cfg.UpstreamKey = wrongUpstreamKey
		s, logs := startTest(t, cfg)
		exercise(t, s)
		_, err := dial(t, s.grpcAddr).backlinks.ListBacklinks(as(t.Context(), keyA), &v1.ListBacklinksRequest{Target: "example.com"})
		if status.Code(err) != codes.FailedPrecondition {
			t.Errorf("with a wrong upstream key: %v, want FAILED_PRECONDITION", err)
		}
		s.shutdown()
		record("log", logs.String())
	})
	t.Run("startup error of a bad key file", func(t *testing.T) {
		env := map[string]string{"LINKGATE_UPSTREAM_URL": sim, "LINKGATE_UPSTREAM_KEY": upstreamKey, "LINKGATE_LOG_LEVEL": "debug"}
		cfg, err := loadConfig(nil, func(k string) string { return env[k] })
		record("config", cfg, fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg.UpstreamKey), err)
	})

	all := seen.String()
	if len(all) < 1000 || !strings.Contains(all, "PERMISSION_DENIED") && !strings.Contains(all, "PermissionDenied") {
		t.Errorf("the search saw too little (%d bytes)", len(all))
	}
	for _, s := range secrets {
		if i := strings.Index(all, s); i >= 0 {
			t.Errorf("secret %q found: …%s…", s, all[max(0, i-200):min(len(all), i+100)])
		}
	}
}
