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

# Debian packages the tests use for real, installed when missing and apt is available:
# `$(call apt_ensure,<check that it is there>,<package>)`.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get
define apt_ensure
	@$(1) >/dev/null 2>&1 || ! command -v apt-get >/dev/null || \
		($(APT) update -qq && $(APT) install -y -qq $(2) >/dev/null)
endef

system-deps:
	@# redis-server: the Redis store's tests start their own (they fail without one).
	$(call apt_ensure,command -v redis-server,redis-server)
	@# Chromium: Playwright drives it in the dashboard's browser test (it fails without one).
	$(call apt_ensure,test -x /usr/bin/chromium,chromium)
	@# A real PDF from Debian's documentation for the pipeline tests (small; that test skips without one).
	$(call apt_ensure,ls /usr/share/doc/*/*.pdf,libtasn1-doc)

test: lint typecheck pytest

BENCH_EXTRAS ?= dev,bench

bench: system-deps
	@# wrk: the HTTP benchmark's load generator (without it, a slower Python client).
	$(call apt_ensure,command -v wrk,wrk)
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
