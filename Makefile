# nodemeter — `make help` lists the targets.
# Every target installs what it needs first (venv, Python deps); the Kafka jars are
# resolved from Maven Central on first use of the local broker; Apicurio Registry (the
# registry-mode tests' Schema Registry) is built from Maven Central by `make registry`.

PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
# The SDK's compiled emit path (Rust, pyo3): built into the venv when cargo exists.
NATIVE_SRC := $(wildcard producers/native/Cargo.toml producers/native/Cargo.lock \
                producers/native/pyproject.toml producers/native/src/*.rs \
                producers/native/nodemeter_native/*)
NATIVE  ?= auto
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml $(NATIVE_SRC) | cksum | cut -d' ' -f1)-native-$(NATIVE)
PYTEST_ARGS ?=
K       ?= 10
# pytest-xdist workers for `make test` / `make test-fast` (tests/conftest.py groups them)
TEST_WORKERS ?= 2
XDIST   := -n $(TEST_WORKERS) --dist loadgroup

.DEFAULT_GOAL := help

$(STAMP): pyproject.toml $(NATIVE_SRC)
	@command -v java >/dev/null && command -v mvn >/dev/null || { \
	  echo "[setup] java 17+ and maven are needed for the local Kafka broker; installing"; \
	  apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null; }
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@echo "[setup] installing nodemeter with worker, gpu and dev extras into $(VENV)"
	@$(BIN)/pip install -q --upgrade pip
	@$(BIN)/pip install -q -e ".[worker,gpu,dev]"
	@if [ "$(NATIVE)" = 0 ]; then \
	  echo "[setup] NATIVE=0: the SDK uses its pure-Python encoder"; \
	  $(BIN)/pip uninstall -y -q nodemeter-native 2>/dev/null || true; \
	elif command -v cargo >/dev/null; then \
	  echo "[setup] building the SDK's compiled emit path (producers/native, Rust + pyo3)"; \
	  start=$$(date +%s); \
	  $(BIN)/pip install -q ./producers/native || { \
	    echo "[setup] producers/native failed to build; 'make setup NATIVE=0' skips it"; exit 1; }; \
	  echo "[setup] compiled emit path built in $$(( $$(date +%s) - start )) s"; \
	else \
	  echo "[setup] cargo not found: the SDK uses its pure-Python encoder (about 5x slower emit);"; \
	  echo "[setup]   install Rust (https://rustup.rs) and run make setup again for the compiled path"; \
	  $(BIN)/pip uninstall -y -q nodemeter-native 2>/dev/null || true; \
	fi
	@rm -f $(VENV)/.installed-* && touch $@

.PHONY: help setup browser registry node-deps go-deps demo test test-fast torture check fmt cluster-golden kafka-up kafka-down bench clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv and install everything (idempotent; NATIVE=0: no Rust build)

browser: ## Debian's headless Chromium for the HTML report's screenshot test (skipped without it)
	@command -v chromium >/dev/null || { echo "[setup] installing chromium (Debian) for the screenshot test"; \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
	  echo "[setup] chromium unavailable: the screenshot test will be skipped"; }

registry: $(STAMP) ## build Apicurio Registry from Maven Central for the registry tests (cached)
	@$(BIN)/nodemeter dev registry build >/dev/null

node-deps: ## npm ci for the TypeScript SDK (producers/ts); skipped without npm
	@if command -v npm >/dev/null; then cd producers/ts && npm ci --no-audit --no-fund --loglevel=error && npm run -s build; \
	else echo "[setup] npm not found: the TypeScript SDK tests will be skipped"; fi

go-deps: ## go mod download for the Go SDK (producers/go); skipped without go
	@if command -v go >/dev/null; then cd producers/go && go mod download; \
	else echo "[setup] go not found: the Go SDK tests will be skipped"; fi

demo: $(STAMP) ## the main job: run the demo pipeline on the embedded defaults
	$(BIN)/nodemeter demo

test: $(STAMP) browser registry node-deps go-deps ## the whole test suite, fault tests included
	$(BIN)/pytest $(XDIST) $(PYTEST_ARGS)

test-fast: $(STAMP) ## quick loop: everything but the slow integration and fault tests
	$(BIN)/pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

torture: $(STAMP) ## the fault tests K times (K=10) with one core kept busy; logs: .nodemeter/torture/
	$(BIN)/python bench/torture.py --loops $(K) -- $(PYTEST_ARGS)

check: $(STAMP) ## ruff (lint + format check), mypy, and the pure stages' import contract
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy bench
	$(BIN)/pytest -q -p no:randomly tests/unit/test_import_contracts.py

fmt: $(STAMP) ## apply ruff formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

cluster-golden: $(STAMP) ## regenerate tests/golden/cluster (migrate --cluster) after a migration
	$(BIN)/python tests/unit/test_cluster_schema.py --write

kafka-up: $(STAMP) ## start the local Kafka broker (KRaft) on 127.0.0.1:19092
	$(BIN)/nodemeter dev kafka up

kafka-down: $(STAMP) ## stop the local Kafka broker
	$(BIN)/nodemeter dev kafka down

clean: ## stop the local broker, delete local data (.nodemeter) and the venv
	-$(BIN)/nodemeter dev kafka down
	-$(BIN)/nodemeter dev registry down
	rm -rf .nodemeter $(VENV) producers/native/target
