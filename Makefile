# pgproxy: `make help` lists the targets.
GO        ?= go
BIN       ?= bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo none)
LDFLAGS   := -X github.com/ofitec/pgproxy/internal/buildinfo.Version=$(VERSION) -X github.com/ofitec/pgproxy/internal/buildinfo.Commit=$(COMMIT)
TEST_TIMEOUT ?= 14m
FUZZTIME  ?= 60s
CHAOS_ROUNDS ?= 5

.PHONY: help build test test-short lint demo bench fuzz chaos clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/pgproxy and bin/metabase-provision
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/pgproxy ./cmd/pgproxy
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/metabase-provision ./cmd/metabase-provision

test: ## all tests (unit, fuzz seed corpora, real PostgreSQL cluster, real clients), with -race; then e2e and chaos again with pooling
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
	@echo "== e2e and chaos again with auth.mode proxy, pool.mode transaction (PGPROXY_TEST_POOL, test/proxytest)"
	PGPROXY_TEST_POOL=transaction $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./test/e2e ./test/chaos

test-short: ## unit tests only (no PostgreSQL cluster)
	$(GO) test -short -count=1 ./...

lint: ## gofmt, go vet, package arrows (test/layout), and golangci-lint when installed
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) test -count=1 ./test/layout
	@if command -v golangci-lint >/dev/null 2>&1; then golangci-lint run ./...; fi

demo: build ## run a local primary + 2 replicas with pgproxy in front (Ctrl-C stops and cleans up)
	$(BIN)/pgproxy demo

bench: build ## pgbench through pgproxy vs direct vs PgBouncer; writes docs/benchmarks.md
	$(GO) run ./test/bench

fuzz: ## run every fuzzer for $(FUZZTIME)
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -short -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -short -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

chaos: ## longer chaos run: kill/stop/restart backends under load ($(CHAOS_ROUNDS) rounds)
	$(GO) test -race -count=1 -v -timeout 30m -run Chaos ./test/chaos -chaos.rounds=$(CHAOS_ROUNDS)

clean: ## remove build output
	rm -rf $(BIN)
