package main

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// openapiTools is where scripts/install-test-deps.sh installs the npm tools
// (npm ci) that check the OpenAPI document.
const openapiTools = "../../tools/openapi-check"

// TestOpenAPITypeScriptClient generates a TypeScript client from the
// served OpenAPI 3 document with openapi-typescript and type-checks a
// small use of a List and a Stream with tsc --strict: the contract a
// frontend builds on. It skips when npm is absent, except in CI
// (LINKGATE_REQUIRE_NPM=1), where it must run.
func TestOpenAPITypeScriptClient(t *testing.T) {
	bin := filepath.Join(openapiTools, "node_modules", ".bin")
	if _, err := exec.LookPath("npm"); err != nil {
		requireOrSkip(t, "npm is not installed")
	}
	if _, err := os.Stat(filepath.Join(bin, "openapi-typescript")); err != nil {
		requireOrSkip(t, "the npm tools are not installed: run scripts/install-test-deps.sh")
	}
	// The npm tools run on the Node that package.json pins (npm's node
	// package), whatever Node the system has: Debian 12's is below their
	// minimum.
	absBin, err := filepath.Abs(bin)
	if err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "PATH="+absBin+string(os.PathListSeparator)+os.Getenv("PATH"))
	var pkg struct {
		DevDependencies map[string]string `json:"devDependencies"`
	}
	if b, err := os.ReadFile(filepath.Join(openapiTools, "package.json")); err != nil || json.Unmarshal(b, &pkg) != nil {
		t.Fatalf("package.json: %v", err)
	}
	// As the tools' "#!/usr/bin/env node" lines find it.
	node := exec.Command("/usr/bin/env", "node", "--version")
	node.Env = env
	if out, err := node.Output(); err != nil || strings.TrimSpace(string(out)) != "v"+pkg.DevDependencies["node"] {
		t.Fatalf("node --version with the npm tools on PATH: %q %v, want v%s (the pinned node package)", out, err, pkg.DevDependencies["node"])
	}

	s, _ := startServer(t, nil)
	resp, err := http.Get("http://" + s.httpAddr + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	dir := t.TempDir()
	spec := filepath.Join(dir, "openapi.json")
	f, err := os.Create(spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	f.Close()

	run := func(name string, args ...string) {
		t.Helper()
		cmd := exec.Command(filepath.Join(absBin, name), args...)
		cmd.Dir, cmd.Env = dir, env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	run("openapi-typescript", spec, "-o", filepath.Join(dir, "api.d.ts"))
	use := `import type { paths } from "./api";

type ListParams = paths["/v1/backlinks"]["get"]["parameters"]["query"];
type ListPage = paths["/v1/backlinks"]["get"]["responses"]["200"]["content"]["application/json"];
type StreamLine = paths["/v1/backlinks:stream"]["get"]["responses"]["200"]["content"]["application/x-ndjson"];
type CSVPage = paths["/v1/backlinks"]["get"]["responses"]["200"]["content"]["text/csv"];
type ErrorBody = paths["/v1/backlinks"]["get"]["responses"]["default"]["content"]["application/json"];

const params: ListParams = { target: "example.com", page_size: 10, order_by: "domain_rating_source desc", select: ["url_from", "url_to"] };
// @ts-expect-error target is required
const missing: ListParams = { page_size: 10 };

export async function firstPage(base: string, key: string): Promise<string[]> {
  const r = await fetch(base + "/v1/backlinks?target=" + encodeURIComponent(params.target), { headers: { Authorization: "Bearer " + key } });
  if (!r.ok) {
    const e = (await r.json()) as ErrorBody;
    throw new Error(e.code + ": " + e.message);
  }
  const page = (await r.json()) as ListPage;
  return (page.backlinks ?? []).map((b) => (b.url_from ?? "") + " " + (b.domain_rating_source ?? 0).toFixed(1));
}

export function onStreamLine(line: string): { rows: number; token?: string; error?: string } {
  const chunk = JSON.parse(line) as StreamLine;
  if (chunk.error) {
    return { rows: 0, error: chunk.error.message };
  }
  return { rows: chunk.result?.backlinks?.length ?? 0, token: chunk.result?.next_page_token };
}

export const csvText: CSVPage = "url_from,url_to\r\n";
export { missing };
`
	if err := os.WriteFile(filepath.Join(dir, "use.ts"), []byte(use), 0o644); err != nil {
		t.Fatal(err)
	}
	run("tsc", "--noEmit", "--strict", "--target", "es2022", "--lib", "es2022,dom", "--module", "esnext",
		"--moduleResolution", "bundler", "use.ts")
}

func requireOrSkip(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("LINKGATE_REQUIRE_NPM") != "" {
		t.Fatalf("LINKGATE_REQUIRE_NPM is set but %s", why)
	}
	t.Skip(why)
}

// TestRESTResponsesCarryNoGRPCMetadata: Grpc-Metadata-Content-Type:
// application/grpc used to leak onto REST responses.
func TestRESTResponsesCarryNoGRPCMetadata(t *testing.T) {
	s, _ := startServer(t, nil)
	for _, path := range []string{"/v1/backlinks?target=sized-100.example&page_size=3", "/v1/backlinks:stream?target=sized-100.example",
		"/v1/quota", "/v1/backlinks?target=sized-100.example&filter=nope"} {
		resp, err := http.Get("http://" + s.httpAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		for k := range resp.Header {
			if strings.HasPrefix(strings.ToLower(k), "grpc-") {
				t.Errorf("GET %s: header %s: %v", path, k, resp.Header[k])
			}
		}
		for k := range resp.Trailer {
			if strings.HasPrefix(strings.ToLower(k), "grpc-") {
				t.Errorf("GET %s: trailer %s", path, k)
			}
		}
	}
}
