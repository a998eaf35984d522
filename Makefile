# The two set-up commands: `make test` and `make run` do everything on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS ?= dev
STAMP := $(VENV)/.installed-$(EXTRAS)

.PHONY: test lint typecheck pytest bench venv clean system-deps run

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: venv
	$(BIN)/mypy src

pytest: venv system-deps
	$(BIN)/pytest

# Servers the tests run for real (the Redis store's tests start their own redis-server).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system-deps:
	@command -v redis-server >/dev/null || ! command -v apt-get >/dev/null || \
		($(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null)
	@# A real PDF from Debian's documentation for the pipeline tests (small; the test skips without one).
	@ls /usr/share/doc/*/*.pdf >/dev/null 2>&1 || ! command -v apt-get >/dev/null || \
		($(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libtasn1-doc >/dev/null) || true
	@# Debian's Chromium for the dashboard's browser test (Playwright drives it; it fails without one).
	@test -x /usr/bin/chromium || ! command -v apt-get >/dev/null || \
		($(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

test: lint typecheck pytest

BENCH_EXTRAS ?= dev,bench

bench: system-deps
	$(MAKE) --no-print-directory venv EXTRAS=$(BENCH_EXTRAS)
	$(BIN)/python -m benchmarks

# `make run` sets up a venv with the service's extras and starts `docstatus serve`
# (http://127.0.0.1:8002, data under ./docstatus-data). Options: make run ARGS="--port 9000".
RUN_EXTRAS ?= all

run:
	$(MAKE) --no-print-directory venv EXTRAS=$(RUN_EXTRAS)
	exec $(BIN)/docstatus serve $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
