# Two entry points: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup system demo test check clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: a bare `torch` requirement would pull a newer CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,classical]" torch==2.13.0
	touch $(STAMP)

setup: system $(STAMP)

# System packages the zoo's tests use: PostgreSQL (the service tests run on it as well as SQLite) and
# Debian's chromium (the web tests drive it with Playwright). Installed with apt-get when run as root
# and missing; otherwise a note says which tests will skip. Never fails the set-up.
system:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1; then \
		true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's postgresql and chromium for the zoo's tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			postgresql chromium) || echo "NOTE: apt-get failed: the PostgreSQL and browser tests will skip"; \
	else \
		echo "NOTE: postgresql or chromium is missing and this is not root with apt-get: the PostgreSQL"; \
		echo "      service tests and the browser tests will skip (run 'make system' as root to install them)"; \
	fi

demo: setup
	$(VENV)/bin/microzoo demo --out demo-output

# The static checks first (a minute), then the suite with its doctests.
test: check
	$(PY) -m pytest -q

# Static checks (pinned in the dev extra): lint, format, types. Developers run it; `make test` runs it too.
check: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) demo-output .pytest_cache
