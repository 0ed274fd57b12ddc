# Meshplane. `make` prints this help; `make up` and `make test` are the two commands to start with.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

include scripts/versions.env

BIN := $(shell scripts/tools.sh --print-bin)
export MESHPLANE_BIN := $(BIN)
# Every module in go.work, as ./dir/... patterns for one go command over the whole workspace.
MODULE_PKGS = $(shell go list -m -f '{{.Dir}}/...')
MODULE_DIRS = $(shell go list -m -f '{{.Dir}}')
# -count=1: the integration tests run real servers whose binaries go test cannot track, so a cached pass
# proves nothing about this run.
GOTEST_FLAGS ?= -race -count=1 -timeout 30m

.PHONY: help
help: ## Show this help.
	@echo "Meshplane — make targets:"
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

MESHPLANE := .local/bin/meshplane

# The components `meshplane up` starts (etcd, kube-apiserver, kube-controller-manager, kubectl, istiod,
# Consul, Loki, Prometheus, NATS), by their scripts/tools.sh names; not the linters and code generators, which
# `make up` does not need and `make tools` still builds.
UP_TOOLS := kube istio consul loki prometheus nats

.PHONY: up
up: ## Start the whole platform locally: apiserver, operator + Consul sync, Consul, shop, Prometheus, Loki, load (UP_FLAGS=--port prometheus=19090 ...).
	scripts/tools.sh $(UP_TOOLS)
	@go build -o $(MESHPLANE) ./operator/cmd/meshplane
	@$(MESHPLANE) up $(UP_FLAGS)

.PHONY: status
status: ## Show the local platform's components, health, URLs and TrafficPolicies (fails if one is down; "not running" is a state, not a failure).
	@go build -o $(MESHPLANE) ./operator/cmd/meshplane
	@$(MESHPLANE) status || [ $$? -eq 3 ]

.PHONY: drill
drill: ## Payments failure drill on the running platform: error rate, breaker open and closed, from Prometheus.
	@go build -o $(MESHPLANE) ./operator/cmd/meshplane
	@$(MESHPLANE) drill $(DRILL_FLAGS)

.PHONY: down
down: ## Stop the local platform; no process is left behind.
	@go build -o $(MESHPLANE) ./operator/cmd/meshplane
	@$(MESHPLANE) down

.PHONY: tools
tools: ## Build or install every pinned tool (apiserver, etcd, consul, prometheus, loki, istioctl, ...) into the cache.
	scripts/tools.sh

.PHONY: generate
generate: ## Regenerate every generated file (CRDs, RBAC, protobuf code, dashboards, go.sum).
	scripts/generate.sh

.PHONY: test
test: tools generate ## Everything CI runs: tools, generate, all module tests (-race), generated-files, deps, tools-lock and lint checks.
	go test $(GOTEST_FLAGS) $(MODULE_PKGS)
	$(MAKE) --no-print-directory check-generated check-deps test-tools lint

.PHONY: test-tools
test-tools: ## Two concurrent scripts/tools.sh runs build a component once (the per-component lock), in a temporary cache.
	scripts/tools-test.sh

.PHONY: test-short
test-short: ## Module tests only, without tools/generate/lint (assumes `make tools` ran).
	go test $(GOTEST_FLAGS) $(MODULE_PKGS)

.PHONY: bench
bench: tools ## Measure operator scale, render, hot path and Consul sync against floors from the same run; one table, also in bench/out/ (not part of test; BENCH_FLAGS=-sizes 100 ...).
	scripts/bench.sh $(BENCH_FLAGS)

BENCH_COUNT ?= 6
BENCH_PKGS = ./operator/api/v1alpha1 ./operator/internal/desiredstate ./operator/internal/render ./mesh/httpmw ./mesh/rpc ./mesh/logs

.PHONY: bench-go
bench-go: ## Go benchmarks (Validate, desiredstate.Build, render, HTTP and gRPC stacks) for benchstat, into bench/out/go-<time>.txt.
	@mkdir -p bench/out
	go test -run '^$$' -bench . -benchmem -count $(BENCH_COUNT) $(BENCH_PKGS) | tee bench/out/go-$$(date -u +%Y-%m-%dT%H%MZ).txt

# Container images: one per service and one for the operator, each built from the repository root by its
# Dockerfile (services/<name>/Dockerfile, operator/Dockerfile). No Docker engine on the CI machine: the
# tests check the Dockerfiles, they do not build them.
IMAGE_REGISTRY ?= meshplane
IMAGE_TAG ?= 0.1.0
CONTAINER_TOOL ?= docker
IMAGES ?= gateway catalog orders payments fulfillment loadgen operator

.PHONY: images
images: ## Build the container images: IMAGE_REGISTRY/<name>:IMAGE_TAG (meshplane/...:0.1.0, as the manifests reference); needs Docker or Podman (CONTAINER_TOOL).
	@for img in $(IMAGES); do \
		dockerfile=services/$$img/Dockerfile; [[ $$img == operator ]] && dockerfile=operator/Dockerfile; \
		echo "$(CONTAINER_TOOL) build -f $$dockerfile -t $(IMAGE_REGISTRY)/$$img:$(IMAGE_TAG) ."; \
		$(CONTAINER_TOOL) build -f $$dockerfile --build-arg VERSION=$(IMAGE_TAG) -t $(IMAGE_REGISTRY)/$$img:$(IMAGE_TAG) . || exit 1; \
	done

.PHONY: cluster-up
cluster-up: ## kind cluster + Istio + images + manifests/overlays/dev, waiting for rollouts (needs Docker; docs/operating.md).
	scripts/cluster-up.sh

.PHONY: cluster-down
cluster-down: ## Delete the kind cluster cluster-up created.
	scripts/cluster-down.sh

.PHONY: check-generated
check-generated: ## Fail if regenerating changed any committed file.
	scripts/generate.sh >/dev/null
	@if ! git diff --exit-code --stat || [[ -n "$$(git status --porcelain --untracked-files=all)" ]]; then \
		git status --porcelain --untracked-files=all; \
		echo "check-generated: generated files are stale or uncommitted; run 'make generate' and commit" >&2; exit 1; \
	fi
	@echo "check-generated: ok"

.PHONY: check-deps
check-deps: ## Check the layout and dependency rules (each rule proven by --self-test first) and the pins.
	scripts/check-deps.sh --self-test
	scripts/check-deps.sh

.PHONY: lint
lint: ## gofmt, go vet (each module alone, GOWORK=off), golangci-lint, shellcheck.
	@out=$$(gofmt -l $(MODULE_DIRS)); if [[ -n "$$out" ]]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@for d in $(MODULE_DIRS); do (cd $$d && GOWORK=off go vet ./...) || exit 1; done
	@for d in $(MODULE_DIRS); do (cd $$d && $(BIN)/golangci-lint run --config $(CURDIR)/.golangci.yml ./...) || exit 1; done
	shellcheck -x -P SCRIPTDIR scripts/*.sh .ci/run
	@echo "lint: ok"
