# Two entry points: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test check clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: a bare `torch` requirement would pull a newer CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,classical]" torch==2.13.0
	touch $(STAMP)

setup: $(STAMP)

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
