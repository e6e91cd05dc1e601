# linkgate. `make run` starts it on its embedded default; `make test` sets up
# what the tests need and runs them all.
# Every generator is a Go tool pinned in tools/go.mod and run with
# `go tool -modfile=tools/go.mod`, so nothing is installed globally and the
# first run builds them (about two minutes, cached afterwards).
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
GO ?= go
# The Go release go.mod names (a patched one: the go command fetches it
# from the module proxy on first use), unless the environment chose one.
GOTOOLCHAIN ?= go$(shell sed -n 's/^go //p' go.mod)
export GOTOOLCHAIN
TOOL := $(GO) tool -modfile=tools/go.mod
BUF := $(TOOL) buf
# test2json events of the last make test, for scripts/check-skips.sh.
TEST_EVENTS ?= bin/test-events.json

.PHONY: generate
generate: ## Regenerate gen/ (Go, gRPC, gateway, OpenAPI) from proto/
	$(BUF) generate
	$(BUF) generate --template buf.gen.operations.yaml
	@# buf.gen.yaml has clean: true, which wipes gen/openapi/ too, so the
	@# embedding package is written after every generation.
	cp tools/openapi.go.tmpl gen/openapi/openapi.go
	@# The served document is OpenAPI 3, converted from the Swagger 2.0 the
	@# plugin writes (tools/openapi3, kin-openapi's openapi2conv).
	cd tools && $(GO) run ./openapi3 ../gen/openapi/linkgate.swagger.json ../gen/openapi/linkgate.openapi.json

.PHONY: check-generate
check-generate: generate ## Fail if gen/ differs from what proto/ generates (CI)
	@test -z "$$(git status --porcelain -- gen/ | tee /dev/stderr)" || \
		{ echo 'gen/ is out of date: run "make generate" and commit the result' >&2; exit 1; }

.PHONY: lint-proto
lint-proto: ## Lint proto/ (STANDARD + COMMENTS) and check its formatting
	$(BUF) lint
	@# Only proto/: third_party/ is vendored verbatim and left as upstream wrote it.
	$(BUF) format proto -d --exit-code

.PHONY: lint-openapi
lint-openapi: ## Lint the OpenAPI 3 document with Redocly (npm tools of tools/openapi-check)
	cd tools/openapi-check && { test -d node_modules || npm ci --no-audit --no-fund --loglevel=error; } && npm run --silent lint

.PHONY: breaking
breaking: ## Check proto/ for breaking changes against the main branch
	@# Compares the working tree with the tip of the local branch "main"
	@# (not origin/main): fetch and update main first to compare with the
	@# latest published contract. Until main holds a contract there is
	@# nothing to break, and buf would fail on an input without .proto files.
	@if git rev-parse --verify --quiet main:proto >/dev/null; then \
		echo "$(BUF) breaking --against '.git#branch=main'"; \
		$(BUF) breaking --against '.git#branch=main'; \
	else \
		echo 'breaking: main has no proto/ yet, nothing to compare against'; \
	fi

.PHONY: run
run: ## Run linkgate on its embedded default (simulated upstream, local bolt ledger); ARGS passes flags, e.g. ARGS=-h
	$(GO) build -o bin/linkgate ./cmd/server
	@# exec: make's child is then linkgate itself, so the SIGTERM that make
	@# passes to its children when it is killed stops the server too (go run
	@# would die and leave it running, holding the ports and the ledger).
	exec bin/linkgate $(ARGS)

.PHONY: test-deps
test-deps: ## Install what the tests need beyond Go (Redis, Chromium, curl, Node and the npm tools, Jaeger)
	./scripts/install-test-deps.sh

.PHONY: test
test: test-deps lint ## Vet, check formatting, and run every test with the race detector; ends with the counts and every skip
	@mkdir -p $(dir $(TEST_EVENTS))
	@# gotestsum (pinned in tools/go.mod) runs go test and ends with what
	@# ran: the tests run, failed and skipped, and each skip with its reason.
	LINKGATE_JAEGER_BIN=$${LINKGATE_JAEGER_BIN:-$$(./scripts/jaeger-build.sh --if-built)} \
		$(TOOL) gotestsum --format pkgname --jsonfile $(TEST_EVENTS) -- -race -count=1 -timeout 20m ./...

.PHONY: check-skips
check-skips: ## Fail if the last make test skipped a test not in .ci/allowed-skips (CI)
	./scripts/check-skips.sh $(TEST_EVENTS) .ci/allowed-skips

.PHONY: lint
lint: ## go vet and gofmt (generated code excepted)
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/')); \
		test -z "$$out" || { echo "not gofmt-formatted:"; echo "$$out"; exit 1; }

.PHONY: bench
bench: ## Cost per row and memory (P1, P4, P5, P6), each against its baseline in the same run, with the ratios
	GO=$(GO) ./scripts/bench.sh

.PHONY: bench-all
bench-all: ## Every in-process benchmark of the ledger, the client, the simulator and the service
	$(GO) test -run '^$$' -bench . -benchtime 2s ./quota/ ./upstream/... ./service/ ./internal/rest/

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s "$$(printf '\t')"

.PHONY: vulncheck
vulncheck: ## govulncheck with an offline database built from golang.org/x/vulndb (outside the repo)
	./scripts/vulncheck.sh

.PHONY: deploy-check
deploy-check: ## Validate deploy/ offline: kubeconform -strict (k8s v1.33), compose, collector, Dockerfile (not in CI: heavy)
	./scripts/check-deploy.sh
