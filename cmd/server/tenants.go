package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/linkgate/linkgate/service"
)

// tenantsFile is the JSON file that names the callers (LINKGATE_TENANTS_FILE):
//
//	{"tenants": [
//	  {"name": "seo-dashboard", "role": "reader", "limit": 50000,
//	   "keys": [{"sha256": "<hex of SHA-256 of the key>"}],
//	   "cert_names": ["seo-dashboard.internal"]}
//	]}
//
// JSON rather than YAML: the standard library reads it strictly (unknown
// fields are errors), and linkgate needs no YAML dependency for one file.
type tenantsFile struct {
	Tenants []tenantEntry `json:"tenants"`
}

type tenantEntry struct {
	Name string `json:"name"`
	Role string `json:"role"` // reader or admin
	// Limit is the tenant's monthly units; 0 or absent: only the pool's.
	Limit     int64      `json:"limit"`
	Keys      []keyEntry `json:"keys"`
	CertNames []string   `json:"cert_names"`
}

type keyEntry struct {
	SHA256 string `json:"sha256"`
}

// tenants is a loaded tenants file: who may call and each tenant's limit.
type tenants struct {
	auth   service.AuthConfig
	limits map[string]int64 // for quota.Config.Tenants
}

// loadTenants reads the tenants file; no file means authentication is off.
func loadTenants(path string) (tenants, error) {
	if path == "" {
		return tenants{auth: service.AuthConfig{Disabled: true}}, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return tenants{}, fmt.Errorf("tenants file: %w", err)
	}
	t, err := parseTenants(b)
	if err != nil {
		return tenants{}, fmt.Errorf("tenants file %s: %w", path, err)
	}
	return t, nil
}

// parseTenants checks the whole file and reports every problem at once.
func parseTenants(b []byte) (tenants, error) {
	var f tenantsFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return tenants{}, err
	}
	t := tenants{
		auth:   service.AuthConfig{CertNames: map[string]service.Caller{}},
		limits: map[string]int64{},
	}
	var errs []error
	names := map[string]bool{}
	hashes := map[[sha256.Size]byte]string{}
	for i, e := range f.Tenants {
		where := fmt.Sprintf("tenants[%d] (%q)", i, e.Name)
		switch {
		case strings.TrimSpace(e.Name) == "" || e.Name != strings.TrimSpace(e.Name):
			errs = append(errs, fmt.Errorf("%s: name is required, without surrounding spaces", where))
		case len(e.Name) > service.MaxTenantBytes:
			errs = append(errs, fmt.Errorf("%s: name is %d bytes long; the limit is %d", where, len(e.Name), service.MaxTenantBytes))
		case names[e.Name]:
			errs = append(errs, fmt.Errorf("%s: the name appears twice", where))
		}
		names[e.Name] = true
		var role service.Role
		switch e.Role {
		case "reader":
			role = service.RoleReader
		case "admin":
			role = service.RoleAdmin
		default:
			errs = append(errs, fmt.Errorf("%s: role must be reader or admin, not %q", where, e.Role))
		}
		if e.Limit < 0 {
			errs = append(errs, fmt.Errorf("%s: limit must not be negative", where))
		} else if e.Limit > 0 {
			t.limits[e.Name] = e.Limit
		}
		if len(e.Keys) == 0 && len(e.CertNames) == 0 {
			errs = append(errs, fmt.Errorf("%s: needs at least one key or cert_name, or no one can call as it", where))
		}
		caller := service.Caller{Tenant: e.Name, Role: role}
		for j, k := range e.Keys {
			raw, err := hex.DecodeString(strings.ToLower(k.SHA256))
			if err != nil || len(raw) != sha256.Size {
				errs = append(errs, fmt.Errorf("%s: keys[%d].sha256 must be 64 hex digits (printf %%s KEY | sha256sum)", where, j))
				continue
			}
			sum := [sha256.Size]byte(raw)
			if other, dup := hashes[sum]; dup {
				errs = append(errs, fmt.Errorf("%s: keys[%d] is also a key of %q", where, j, other))
				continue
			}
			hashes[sum] = e.Name
			t.auth.Keys = append(t.auth.Keys, service.APIKey{SHA256: sum, Caller: caller})
		}
		for _, n := range e.CertNames {
			if other, dup := t.auth.CertNames[n]; dup || n == "" {
				errs = append(errs, fmt.Errorf("%s: cert name %q is empty or also names %q", where, n, other.Tenant))
				continue
			}
			t.auth.CertNames[n] = caller
		}
	}
	if len(f.Tenants) == 0 {
		errs = append(errs, errors.New("no tenants: remove LINKGATE_TENANTS_FILE to run without authentication on loopback"))
	}
	if err := errors.Join(errs...); err != nil {
		return tenants{}, err
	}
	return t, nil
}

// hashKey is `server -hash-key`: it reads one API key from r (the first
// line, without its line break) and writes the hex SHA-256 the tenants file
// wants. Reading stdin keeps the key out of the shell history and ps.
func hashKey(r io.Reader, w io.Writer) error {
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	key := strings.TrimRight(line, "\r\n")
	if key == "" {
		return errors.New("no key on standard input")
	}
	sum := sha256.Sum256([]byte(key))
	_, err = fmt.Fprintln(w, hex.EncodeToString(sum[:]))
	return err
}
