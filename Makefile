# The router's build. `make help` lists the targets.

GO        ?= go
BIN       ?= bin/router
FUZZTIME  ?= 30s
BENCHTIME ?= 1s
TRACE     ?= testdata/mooncake_excerpt.jsonl
SYSTEM_PORT ?= 8081
TESTSUM   ?= bin/testsum
BENCHCMP  ?= bin/benchcompare
# bench-compare runs `bench index` of REV and of the working tree, RUNS
# times each, with BENCH_ARGS, which must include --json.
REV       ?= main
RUNS      ?= 3
BENCH_ARGS ?= --trace $(TRACE) --json
# Test packages run with the race detector; -count=1 defeats the cache so a
# green run is a real run.
TESTFLAGS ?= -race -count=1 -timeout 15m

.DEFAULT_GOAL := help

# help prints each target's "## " description, with the variables it names,
# such as $(SYSTEM_PORT), replaced by their values.
HELP_VARS := BIN TRACE SYSTEM_PORT FUZZTIME BENCHTIME REV RUNS BENCH_ARGS

.PHONY: help
help: ## list the targets
	@$(foreach v,$(HELP_VARS),$(v)='$($(v))') awk 'BEGIN {FS = ":.*## "} \
	  /^[a-z-]+:.*## / { d = $$2; out = ""; \
	    while (match(d, /\$$\([A-Z_]+\)/)) { \
	      n = substr(d, RSTART + 2, RLENGTH - 3); \
	      out = out substr(d, 1, RSTART - 1) ((n in ENVIRON) ? ENVIRON[n] : substr(d, RSTART, RLENGTH)); \
	      d = substr(d, RSTART + RLENGTH) } \
	    printf "  %-14s %s\n", $$1, out d }' $(MAKEFILE_LIST)

.PHONY: build
build: ## build bin/router
	$(GO) build -o $(BIN) ./cmd/router

.PHONY: run
run: build ## start the router with embedded NATS and etcd (status server on $(SYSTEM_PORT))
	DYN_SYSTEM_PORT=$(SYSTEM_PORT) $(BIN) serve --embedded

.PHONY: demo
demo: build ## compare kv, round-robin, random and the peers' policies on simulated workers (report in demo-out/)
	$(BIN) compare --trace $(TRACE) --max-requests 500 --modes kv,round-robin,random,llmd-precise-prefix,dynamo-current --out demo-out

# test pipes go test's events through internal/testsum, which prints what go
# test prints and then the skipped and failed tests and a summary line; bash's
# pipefail keeps go test's failure as the target's.
.PHONY: test
test: SHELL := bash
test: .SHELLFLAGS := -o pipefail -c
test: ## run every test with the race detector, then list skipped and failed tests
	$(GO) build -o $(TESTSUM) ./internal/testsum
	$(GO) test -json $(TESTFLAGS) ./... | $(TESTSUM)

.PHONY: bench
bench: build ## run the benchmarks and the index replay on $(TRACE)
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./...
	$(BIN) bench index --trace $(TRACE)

# bench-compare builds both binaries in a temporary directory, REV's from
# git archive, and removes it; internal/indexbench/cmd/benchcompare says how.
.PHONY: bench-compare
bench-compare: ## compare bench index of $(REV) and the working tree: medians of $(RUNS) alternate runs each, with $(BENCH_ARGS)
	$(GO) build -o $(BENCHCMP) ./internal/indexbench/cmd/benchcompare
	$(BENCHCMP) -go '$(GO)' -rev '$(REV)' -runs '$(RUNS)' -- $(BENCH_ARGS)

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
