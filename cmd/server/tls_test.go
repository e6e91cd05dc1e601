package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/service"
	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

// testCA is a throwaway certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue signs a leaf for a server (with names) or a client (CN only).
func (ca *testCA) issue(t *testing.T, cn string, server bool) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{"linkgate.test"}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestMutualTLS(t *testing.T) {
	ca, clientCA, rogue := newCA(t, "server CA"), newCA(t, "client CA"), newCA(t, "rogue CA")
	cfg := testConfig(t, simulator(t, ahrefssim.Config{}))
	dir := t.TempDir()
	serverCert := ca.issue(t, "linkgate", true)
	keyDER, _ := x509.MarshalPKCS8PrivateKey(serverCert.PrivateKey)
	cfg.TLSCertFile, cfg.TLSKeyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	cfg.TLSCAFile, cfg.TLSClientCAFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "client-ca.pem")
	writePEM(t, cfg.TLSCertFile, "CERTIFICATE", serverCert.Certificate[0])
	writePEM(t, cfg.TLSKeyFile, "PRIVATE KEY", keyDER)
	writePEM(t, cfg.TLSCAFile, "CERTIFICATE", ca.cert.Raw)
	writePEM(t, cfg.TLSClientCAFile, "CERTIFICATE", clientCA.cert.Raw)
	s, _ := startTest(t, cfg)

	dialTLS := func(certs ...tls.Certificate) clients {
		return dial(t, s.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
			RootCAs: ca.pool, ServerName: "linkgate.test", Certificates: certs,
		})))
	}
	t.Run("client certificate names tenant a", func(t *testing.T) {
		q, err := dialTLS(clientCA.issue(t, "client-a", false)).quota.GetQuota(t.Context(), &v1.GetQuotaRequest{})
		if err != nil || q.GetTenant().GetTenant() != "a" {
			t.Fatalf("%v %v", q.GetTenant(), err)
		}
	})
	t.Run("certificate of no tenant", func(t *testing.T) {
		_, err := dialTLS(clientCA.issue(t, "stranger", false)).quota.GetQuota(t.Context(), &v1.GetQuotaRequest{})
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("%v, want UNAUTHENTICATED", err)
		}
	})
	t.Run("certificate of another CA", func(t *testing.T) {
		_, err := dialTLS(rogue.issue(t, "client-a", false)).quota.GetQuota(t.Context(), &v1.GetQuotaRequest{})
		if err == nil || status.Code(err) == codes.OK {
			t.Errorf("a certificate of a rogue CA was accepted")
		}
	})
	t.Run("no certificate, API key over TLS", func(t *testing.T) {
		c := dialTLS()
		if _, err := c.quota.GetQuota(t.Context(), &v1.GetQuotaRequest{}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("no credentials: %v", err)
		}
		q, err := c.quota.GetQuota(as(t.Context(), keyB), &v1.GetQuotaRequest{})
		if err != nil || q.GetTenant().GetTenant() != "b" {
			t.Errorf("%v %v", q.GetTenant(), err)
		}
	})
	t.Run("plaintext is refused", func(t *testing.T) {
		if _, err := dial(t, s.grpcAddr).quota.GetQuota(as(t.Context(), keyB), &v1.GetQuotaRequest{}); status.Code(err) != codes.Unavailable {
			t.Errorf("plaintext gRPC: %v", err)
		}
	})
	t.Run("REST over TLS through the gateway's TLS connection", func(t *testing.T) {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool, ServerName: "linkgate.test"}}}
		code, body, _ := restCall(t, c, "GET", "https://"+s.httpAddr+"/v1/backlinks?target=example.com&page_size=2", keyB, "")
		if code != 200 {
			t.Errorf("%d %s", code, body)
		}
		if code, _, _ := restCall(t, c, "GET", "https://"+s.httpAddr+"/v1/quota", "", ""); code != 401 {
			t.Errorf("REST without a key: %d", code)
		}
	})
	t.Run("REST with a client certificate names tenant a", func(t *testing.T) {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool, ServerName: "linkgate.test",
			Certificates: []tls.Certificate{clientCA.issue(t, "client-a", false)}}}}
		code, body, _ := restCall(t, c, "GET", "https://"+s.httpAddr+"/v1/quota", "", "")
		if code != 200 || field(t, body, "tenant", "tenant") != "a" {
			t.Errorf("%d %s", code, body)
		}
	})
	t.Run("forged gateway identity is refused", func(t *testing.T) {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool, ServerName: "linkgate.test"}}}
		req, _ := http.NewRequest("GET", "https://"+s.httpAddr+"/v1/quota", nil)
		req.Header.Set("Grpc-Metadata-Linkgate-Cert-Name", "client-a")
		req.Header.Set("Grpc-Metadata-Linkgate-Gateway-Proof", "guess")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("REST with a forged identity header: %d", resp.StatusCode)
		}
		md := metadata.Pairs(service.GatewayCertNameKey, "client-a", service.GatewayProofKey, "guess")
		_, err = dialTLS().quota.GetQuota(metadata.NewOutgoingContext(t.Context(), md), &v1.GetQuotaRequest{})
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("gRPC with forged gateway metadata: %v", err)
		}
	})
}
