# The router's build. `make help` lists the targets.

GO        ?= go
BIN       ?= bin/router
FUZZTIME  ?= 30s
BENCHTIME ?= 1s
TRACE     ?= testdata/mooncake_excerpt.jsonl
SYSTEM_PORT ?= 8081
# Test packages run with the race detector; -count=1 defeats the cache so a
# green run is a real run.
TESTFLAGS ?= -race -count=1 -timeout 15m

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build bin/router
	$(GO) build -o $(BIN) ./cmd/router

.PHONY: run
run: build ## start the router with embedded NATS and etcd (status server on $(SYSTEM_PORT))
	DYN_SYSTEM_PORT=$(SYSTEM_PORT) $(BIN) serve --embedded

.PHONY: demo
demo: build ## compare kv, round-robin and random routing on simulated workers (report in demo-out/)
	$(BIN) compare --trace $(TRACE) --max-requests 500 --out demo-out

.PHONY: test
test: ## run every test with the race detector
	$(GO) test $(TESTFLAGS) ./...

.PHONY: bench
bench: build ## run the benchmarks and the index replay on $(TRACE)
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./...
	$(BIN) bench index --trace $(TRACE)

.PHONY: fuzz
fuzz: ## run every fuzz target for $(FUZZTIME) each
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s $$pkg; \
	  done; \
	done

.PHONY: lint
lint: ## gofmt, go vet and staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

.PHONY: fmt
fmt: ## format the code
	gofmt -w $$(git ls-files '*.go')

.PHONY: tidy
tidy: ## tidy go.mod and go.sum
	$(GO) mod tidy
