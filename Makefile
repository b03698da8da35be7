# cdcd — see README.md. `make demo` and `make test` work on a fresh machine
# with Go, PostgreSQL (server binaries) and redis-server installed.

GO       ?= go
BIN      := bin/cdcd
PKGS     := ./...
# A count, not a duration: with a duration Go's fuzzing coordinator can
# report its own deadline as a failure when time runs out (go.dev/issue/75804,
# fixed in Go 1.27). About 1 to 7 seconds a target here.
FUZZTIME ?= 20000x
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo devel)
LDFLAGS  := -s -w -X main.Version=$(VERSION)

.PHONY: all build test unit integration chaos consistency python fuzz alerts demo lint bench clean

all: lint build test

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/cdcd

## test: unit and integration tests with the race detector, then brief fuzzing.
test:
	$(GO) test -race -count=1 -timeout 20m $(PKGS)
	$(MAKE) python
	$(MAKE) fuzz
	$(MAKE) alerts

## python: the Python read-through helper's tests, against a private
## redis-server, with the first python3 that has redis-py (python3-redis).
PYTHON ?= $(shell for p in python3 /usr/bin/python3; do $$p -c 'import redis' 2>/dev/null && { echo $$p; break; }; done)
python:
	@if [ -z "$(PYTHON)" ]; then echo "python: no python3 with redis-py (install python3-redis)"; exit 1; fi
	cd clients/python && PYTHONDONTWRITEBYTECODE=1 $(PYTHON) -m unittest -v test_cdcd_readthrough
	@echo "python: clients/python tests passed"

## alerts: check and unit-test the Prometheus alerting rules.
alerts:
	cd deploy/prometheus && promtool check rules alerts.yml && promtool test rules alerts_test.yml

## unit: the package tests: fast, no PostgreSQL; the sinks package starts
## private Redis servers (a Cluster among them) for what only Redis can show.
unit:
	$(GO) test -race -count=1 ./rules/... ./replication/... ./sinks/... ./cmd/...

## integration: end-to-end tests against private PostgreSQL and Redis.
integration:
	$(GO) test -race -count=1 -timeout 20m ./test/integration/...

## chaos: the fault suite at length (make test runs it at CI size): the
## standalone rounds, then those over a Redis Cluster and a Sentinel group.
CHAOS_ROUNDS ?= 80
CHAOS_REDIS_ROUNDS ?= 12
chaos:
	CDCD_CHAOS_ROUNDS=$(CHAOS_ROUNDS) CDCD_CHAOS_REDIS_ROUNDS=$(CHAOS_REDIS_ROUNDS) $(GO) test -race -count=1 -timeout 60m -v -run 'TestFaultSuite' ./test/integration/

## consistency: the read-through harness at length (make test runs it for
## about a minute), on standalone Redis and under Sentinel with failovers:
## stale values at rest, and reads older than the database in nines, for
## guarded readers and for a plain GET/SET control.
CONSISTENCY_SECONDS ?= 300
consistency:
	CDCD_CONSISTENCY_SECONDS=$(CONSISTENCY_SECONDS) $(GO) test -count=1 -timeout 60m -v -run 'TestConsistency' ./test/integration/

## fuzz: each fuzz target for FUZZTIME.
fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzParse$$' -fuzztime=$(FUZZTIME) ./rules/
	$(GO) test -run='^$$' -fuzz='^FuzzTemplate$$' -fuzztime=$(FUZZTIME) ./rules/
	$(GO) test -run='^$$' -fuzz='^FuzzTemplateMatch$$' -fuzztime=$(FUZZTIME) ./rules/
	$(GO) test -run='^$$' -fuzz='^FuzzJSONString$$' -fuzztime=$(FUZZTIME) ./rules/
	$(GO) test -run='^$$' -fuzz='^FuzzParseJSON$$' -fuzztime=$(FUZZTIME) ./rules/
	$(GO) test -run='^$$' -fuzz='^FuzzPartsWithinBudget$$' -fuzztime=$(FUZZTIME) ./rules/
	$(GO) test -run='^$$' -fuzz='^FuzzDecode$$' -fuzztime=$(FUZZTIME) ./replication/
	$(GO) test -run='^$$' -fuzz='^FuzzAssemble$$' -fuzztime=$(FUZZTIME) ./replication/

## demo: private Postgres and Redis, cdcd, a scripted workload.
demo:
	$(GO) run ./test/demo

## bench: cdcd against pg_recvlogical on private servers; prints one table.
bench:
	$(GO) run ./test/bench

## lint: go vet, gofmt, and golangci-lint (.golangci.yml) at the pinned version.
GOLANGCI_LINT_VERSION := 2.15.0
GOLANGCI_LINT         := bin/golangci-lint

lint: lint-install
	$(GO) vet $(PKGS)
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GOLANGCI_LINT) run $(PKGS)

# Installs the pinned golangci-lint into bin/ through the Go module proxy,
# only when it is missing or at another version.
.PHONY: lint-install
lint-install:
	@if [ "$$($(GOLANGCI_LINT) version --short 2>/dev/null)" != "$(GOLANGCI_LINT_VERSION)" ]; then \
		echo "installing golangci-lint v$(GOLANGCI_LINT_VERSION) into bin/"; rm -f $(GOLANGCI_LINT); \
		GOBIN="$(CURDIR)/bin" $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v$(GOLANGCI_LINT_VERSION); \
	fi

clean:
	rm -rf bin
