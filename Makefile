# Makefile for tetherd.
#
# `make test` is THE test command: lint, unit tests (race detector), a short
# fuzz run of every fuzz target, cross builds and the netns end-to-end suites.
# Run `make help` for the list of targets.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO ?= go

# Where `go install` puts binaries: GOBIN if set, else GOPATH/bin.
GOBIN := $(shell $(GO) env GOBIN)
ifeq ($(strip $(GOBIN)),)
GOBIN := $(firstword $(subst :, ,$(shell $(GO) env GOPATH)))/bin
endif

# Pinned so CI is reproducible. Module version v0.8.2 is staticcheck
# release 2026.2.2 (the year-style names are not valid module versions, so
# `@2026.2.2` does not resolve through the module proxy).
STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(GOBIN)/staticcheck

VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
ifeq ($(strip $(VERSION)),)
VERSION := dev
endif
LDFLAGS := -X main.version=$(VERSION)

BIN := bin
MAIN := ./cmd/tetherd

# Fuzz time per target. Empty here so that `fuzz-short` and `fuzz` can each
# apply their own default while still honouring `make fuzz FUZZTIME=1h`.
FUZZTIME ?=

.PHONY: help build cross lint tools unit fuzz-short fuzz netns-test test demo bench clean soak

help: ## Show this help
	@echo "Usage: make <target> [FUZZTIME=...]"
	@echo
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

build: ## Build bin/tetherd for this machine (CGO_ENABLED=0, version from git describe)
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/tetherd $(MAIN)

cross: ## Cross-build linux/arm64, darwin/arm64, darwin/amd64 into bin/; vet and staticcheck for darwin
	@mkdir -p $(BIN)
	CGO_ENABLED=0 GOOS=linux  GOARCH=arm64 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/tetherd-linux-arm64  $(MAIN)
	CGO_ENABLED=0 GOOS=darwin GOARCH=arm64 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/tetherd-darwin-arm64 $(MAIN)
	CGO_ENABLED=0 GOOS=darwin GOARCH=amd64 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/tetherd-darwin-amd64 $(MAIN)
	CGO_ENABLED=0 GOOS=darwin $(GO) vet ./...
	@if [ -x "$(STATICCHECK)" ]; then echo "GOOS=darwin staticcheck ./..."; CGO_ENABLED=0 GOOS=darwin $(STATICCHECK) ./...; \
	else echo "staticcheck not found at $(STATICCHECK): run 'make tools' first"; exit 1; fi

lint: ## gofmt check of git-tracked .go files, go vet, staticcheck
	@echo "gofmt -l (git-tracked .go files, testdata/ excluded)"
	@files=$$(git ls-files -- '*.go' 2>/dev/null | grep -Ev '(^|/)testdata/' || true); \
	bad=""; \
	while IFS= read -r f; do \
		[ -n "$$f" ] && [ -f "$$f" ] || continue; \
		out=$$(gofmt -l "$$f" 2>&1) || out="$$f (gofmt error: $$out)"; \
		[ -z "$$out" ] || bad="$$bad$$out"$$'\n'; \
	done <<< "$$files"; \
	if [ -n "$$bad" ]; then \
		echo "gofmt: these files need formatting (run 'gofmt -w FILE'):"; \
		printf '%s' "$$bad" | sed 's/^/  /'; \
		exit 1; \
	fi
	$(GO) vet ./...
	@if [ ! -x "$(STATICCHECK)" ]; then \
		echo "staticcheck not found at $(STATICCHECK): run 'make tools' first"; \
		exit 1; \
	fi
	$(STATICCHECK) ./...

tools: ## Install the pinned developer tools (staticcheck, see STATICCHECK_VERSION) into GOBIN
	$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	@$(STATICCHECK) -version

unit: ## Unit tests with the race detector
	$(GO) test -race -count=1 -timeout 15m ./...

fuzz-short: ## Run every fuzz target for FUZZTIME each (default 10s), one at a time
	FUZZTIME=$(or $(FUZZTIME),10s) bash scripts/fuzz.sh

fuzz: ## Long fuzz run: every fuzz target for FUZZTIME each (default 10m)
	FUZZTIME=$(or $(FUZZTIME),10m) bash scripts/fuzz.sh

netns-test: ## Run the network-namespace end-to-end suites test/e2e/*.sh (root only)
	bash scripts/netns-test.sh

# The stages run strictly in this order (also under make -j), via sub-makes.
test: ## THE test command: lint unit fuzz-short cross netns-test (FUZZTIME=10s)
	@for t in lint unit fuzz-short cross netns-test; do \
		echo "=== make $$t"; \
		$(MAKE) --no-print-directory $$t FUZZTIME=$(or $(FUZZTIME),10s); \
	done
	@echo "=== make test: all stages passed"

soak: ## Long fault scenarios: SOAK=1 test/e2e/faults.sh (60 s blackhole, 50 SIGKILLs, 10k flows; root)
	SOAK=1 bash test/e2e/faults.sh

demo: ## Run the demo (scripts/demo.sh)
	@if [ -f scripts/demo.sh ]; then exec bash scripts/demo.sh; \
	else echo "demo: not yet available (scripts/demo.sh missing)"; exit 1; fi

bench: ## The tunnel vs the direct path in netns (root; bench/run.sh, ~15 min): writes the table into docs/performance.md
	BENCH_DOC=docs/performance.md bash bench/run.sh

clean: ## Remove build outputs (bin/)
	rm -rf $(BIN)
