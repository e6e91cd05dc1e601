package service

import (
	"context"
	"crypto/sha256"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

const fuzzKey = "configured-key-123"

func testAuthenticator(t testing.TB) *Authenticator {
	a, err := NewAuthenticator(AuthConfig{Keys: []APIKey{
		{SHA256: sha256.Sum256([]byte(fuzzKey)), Caller: Caller{Tenant: "a", Role: RoleReader}},
		{SHA256: sha256.Sum256([]byte("admin-key")), Caller: Caller{Tenant: "ops", Role: RoleAdmin}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAuthenticate(t *testing.T) {
	a := testAuthenticator(t)
	for _, tc := range []struct {
		name   string
		header []string
		tenant string
		code   codes.Code
	}{
		{"reader", []string{"Bearer " + fuzzKey}, "a", codes.OK},
		{"scheme in any case", []string{"bEARER " + fuzzKey}, "a", codes.OK},
		{"admin", []string{"Bearer admin-key"}, "ops", codes.OK},
		{"none", nil, "", codes.Unauthenticated},
		{"unknown", []string{"Bearer nope"}, "", codes.Unauthenticated},
		{"prefix of a key", []string{"Bearer " + fuzzKey[:5]}, "", codes.Unauthenticated},
		{"two headers", []string{"Bearer " + fuzzKey, "Bearer admin-key"}, "", codes.Unauthenticated},
		{"basic", []string{"Basic " + fuzzKey}, "", codes.Unauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			md := metadata.MD{}
			for _, h := range tc.header {
				md.Append("authorization", h)
			}
			c, err := a.Authenticate(metadata.NewIncomingContext(context.Background(), md))
			if status.Code(err) != tc.code || c.Tenant != tc.tenant {
				t.Errorf("%v %v", c, err)
			}
			if err != nil && strings.Contains(err.Error(), fuzzKey) {
				t.Errorf("the error repeats the key: %v", err)
			}
		})
	}
}

// FuzzAuthorizationHeader: arbitrary header values never panic, and
// authenticate only when the token is exactly a configured key.
func FuzzAuthorizationHeader(f *testing.F) {
	for _, s := range []string{"Bearer " + fuzzKey, "bearer " + fuzzKey, "Bearer  " + fuzzKey, "Bearer", "Bearer \x00", "Basic x", "", "Bearer admin-key\n", "Bearer " + fuzzKey + " "} {
		f.Add(s)
	}
	a := testAuthenticator(f)
	f.Fuzz(func(t *testing.T, header string) {
		ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", header))
		c, err := a.Authenticate(ctx)
		if err != nil {
			if status.Code(err) != codes.Unauthenticated {
				t.Fatalf("%q: %v", header, err)
			}
			return
		}
		token, ok := parseBearer(header)
		if !ok || (token != fuzzKey && token != "admin-key") {
			t.Fatalf("%q authenticated as %v", header, c)
		}
	})
}

// TestTapCredentials: the handle run when a call's headers arrive refuses
// a call without a valid key before its stream exists, with the same
// answer whatever key was sent, and lets health checks through uncounted
// by a key.
func TestTapCredentials(t *testing.T) {
	a := testAuthenticator(t)
	var admitted []bool
	tapFn := TapCredentials(a, func(_ context.Context, public bool) error {
		admitted = append(admitted, public)
		return nil
	})
	call := func(method, header string) error {
		md := metadata.MD{}
		if header != "" {
			md.Append("authorization", header)
		}
		_, err := tapFn(metadata.NewIncomingContext(context.Background(), md), &tap.Info{FullMethodName: method, Header: md})
		return err
	}
	const list = "/linkgate.v1.BacklinksService/ListBacklinks"
	unknown, wrong := call(list, "Bearer nope"), call(list, "Bearer "+fuzzKey+"x")
	if status.Code(unknown) != codes.Unauthenticated || unknown.Error() != wrong.Error() {
		t.Fatalf("unknown keys: %v and %v, want one UNAUTHENTICATED answer", unknown, wrong)
	}
	if err := call(list, ""); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no key: %v", err)
	}
	if len(admitted) != 0 {
		t.Fatalf("refused calls were admitted: %v", admitted)
	}
	if err := call(list, "Bearer "+fuzzKey); err != nil {
		t.Fatalf("a valid key: %v", err)
	}
	if err := call("/grpc.health.v1.Health/Check", ""); err != nil {
		t.Fatalf("a health check without a key: %v", err)
	}
	if len(admitted) != 2 || admitted[0] || !admitted[1] {
		t.Fatalf("admitted %v, want the keyed call then the public one", admitted)
	}
}
