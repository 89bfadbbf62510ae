# `make run` and `make test` work on a fresh machine: they create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test servers docker-test format clean bench bench-smoke bench-tools bench-instructions

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/gateway demo

# Real servers the tests run against (nginx, redis-server, caddy, headless chromium), the tools that
# check the operators' files in config/ (promtool from Debian's prometheus package, systemd-analyze from
# systemd), and node and npm for octokit (its packages go to .cache/npm, from tests/clients' lockfile,
# the first time the test runs); installed with apt-get when this machine allows it, else the tests
# that need them are skipped.
servers:
	@{ { command -v nginx || [ -x /usr/sbin/nginx ]; } && command -v redis-server && command -v caddy && \
	   command -v promtool && command -v systemd-analyze && command -v chromium && command -v chromedriver && \
	   command -v node && command -v npm; } >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    apt-get update -qq >/dev/null 2>&1 && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light redis-server caddy prometheus systemd \
	      chromium chromium-driver nodejs npm >/dev/null 2>&1; } || \
	  echo "nginx, redis-server, caddy, promtool, systemd-analyze, chromium, node or npm is not installed:" \
	    "the tests that need them will be skipped"

test: $(STAMP) servers
	$(BIN)/ruff check gateway tests bench
	$(BIN)/ruff format --check gateway tests bench
	$(BIN)/mypy gateway tests bench
	$(BIN)/pytest -q

# The container image (Dockerfile) built and run with podman: tests/test_container_image.py, which
# `make test` leaves out. podman, runc and debootstrap (scripts/base-image makes the base image from
# Debian's packages where no registry serves it) are installed with apt-get when this machine allows it,
# else the tests are skipped with the reason. About a minute the first time, seconds after.
docker-test: $(STAMP)
	@{ command -v podman && command -v runc && command -v debootstrap; } >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    apt-get update -qq >/dev/null 2>&1 && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null 2>&1; } || \
	  echo "podman, runc or debootstrap is not installed and cannot be: the container tests will be skipped"
	$(BIN)/pytest -q -rs -m container tests/test_container_image.py

# The benchmark of issue 5 (bench/run.py): a few minutes; BENCH_DURATION=S sets the seconds per target,
# BENCH_FALLBACK=1 uses the aiohttp upstream and load generator instead of nginx and wrk. Exits 1 when a
# target fails. bench-smoke is the same run in seconds, for CI: small sizes, no target enforced.
bench: $(STAMP) bench-tools
	$(BIN)/python -m bench.run

bench-smoke: $(STAMP)
	$(BIN)/python -m bench.run --smoke

# User-space instructions per request of the bare proxy and the gateway under valgrind's callgrind:
# a ratio that does not drift with the machine's load (bench/instructions.py; about two minutes)
bench-instructions: $(STAMP)
	@command -v valgrind >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null 2>&1; } || true
	$(BIN)/python -m bench.instructions

# nginx-light and wrk, when they are missing and apt-get can be used (root); else the fallbacks stand in
bench-tools:
	@if { ! command -v wrk || ! { command -v nginx || [ -x /usr/sbin/nginx ]; }; } >/dev/null 2>&1 \
	  && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "bench: installing nginx-light and wrk with apt-get"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk; } \
	    >/dev/null 2>&1 || echo "bench: apt-get failed; the built-in fallbacks stand in for what is missing"; \
	fi

format: $(STAMP)
	$(BIN)/ruff format gateway tests bench
	$(BIN)/ruff check --fix gateway tests bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
