package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// tlsSetup is the TLS of both listeners and of the gateway's connection to
// the gRPC listener; nil when TLS is off.
type tlsSetup struct {
	server  *tls.Config
	gateway credentials.TransportCredentials
}

// loadTLS reads the certificate files. Client certificates are verified
// when given, not required: callers with an API key need none, and the
// gateway's own connection to the gRPC listener presents none.
func loadTLS(c securityConfig, grpcAddr string) (*tlsSetup, error) {
	if c.TLSCertFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls certificate: %w", err)
	}
	server := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.TLSClientCAFile != "" {
		pool, err := readPool(x509.NewCertPool(), c.TLSClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls client CA: %w", err)
		}
		server.ClientCAs = pool
		server.ClientAuth = tls.VerifyClientCertIfGiven
	}

	// The gateway trusts the listener's own certificate chain (so a
	// self-signed or private-CA certificate works with no more settings)
	// and the optional CA file, and checks the name the certificate holds.
	roots := x509.NewCertPool()
	for _, der := range cert.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("tls certificate: %w", err)
		}
		roots.AddCert(c)
	}
	if c.TLSCAFile != "" {
		if _, err := readPool(roots, c.TLSCAFile); err != nil {
			return nil, fmt.Errorf("tls CA: %w", err)
		}
	}
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	name := c.TLSServerName
	switch {
	case name != "":
	case len(leaf.DNSNames) > 0:
		name = leaf.DNSNames[0]
	case len(leaf.IPAddresses) > 0:
		name = leaf.IPAddresses[0].String()
	default:
		name, _, _ = net.SplitHostPort(grpcAddr)
	}
	gw := credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: name, MinVersion: tls.VersionTLS12})
	return &tlsSetup{server: server, gateway: gw}, nil
}

// grpcOptions are the gRPC server's transport credentials, if any.
func (t *tlsSetup) grpcOptions() []grpc.ServerOption {
	if t == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(t.server))}
}

// gatewayDial is the gateway's transport to the gRPC listener, if TLS.
func (t *tlsSetup) gatewayDial() []grpc.DialOption {
	if t == nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(t.gateway)}
}

// listenHTTP wraps the REST listener in TLS when configured; HTTP/2 is
// offered as the standard library would for ServeTLS.
func (t *tlsSetup) listenHTTP(lis net.Listener) net.Listener {
	if t == nil {
		return lis
	}
	cfg := t.server.Clone()
	cfg.NextProtos = []string{"h2", "http/1.1"}
	return tls.NewListener(lis, cfg)
}

func readPool(pool *x509.CertPool, path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	n := 0
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, errors.New(path + ": no PEM certificate")
	}
	return pool, nil
}
