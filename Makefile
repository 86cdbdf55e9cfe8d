# The two commands of the quickstart, `make demo` and `make test`, bootstrap everything
# they need from a fresh clone (see tools/bootstrap.sh).
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: bootstrap bootstrap-demo test lint typecheck unit demo demo-down schema clean

# What the tests use (chromium, etcd, the benches' peers...); the demo needs less.
bootstrap:
	@bash tools/bootstrap.sh test

bootstrap-demo:
	@bash tools/bootstrap.sh demo

# Every layer as root (CI runs it so). Without root the system layer cannot run (network
# namespaces, nftables, packet capture): the others run, and the last line says so.
test: bootstrap lint typecheck
	@if [ "$$(id -u)" -eq 0 ] || [ -n "$${CI:-}" ]; then \
	  echo "$(BIN)/python -m pytest -q"; $(BIN)/python -m pytest -q; \
	else \
	  echo "$(BIN)/python -m pytest -q tests/unit tests/integration tests/browser"; \
	  $(BIN)/python -m pytest -q tests/unit tests/integration tests/browser && \
	  echo "make test: not root, so tests/system (network namespaces, nftables) did not run; sudo make test runs every layer"; \
	fi

lint: bootstrap
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/lint-imports

typecheck: bootstrap
	$(BIN)/mypy

unit: bootstrap
	$(BIN)/python -m pytest -q tests/unit

demo: bootstrap-demo
	$(BIN)/python examples/demo.py

demo-down: bootstrap-demo
	$(BIN)/python examples/demo.py --down

schema: bootstrap
	$(BIN)/python -m mycelium.api.schema docs/schema

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
