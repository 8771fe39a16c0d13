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
	$(PY) -m pip install -q -e ".[dev,classical,napari-tests]" torch==2.13.0 "pydantic<2.13"
	touch $(STAMP)

setup: system $(STAMP)

# System packages the tests use: PostgreSQL (the zoo's service tests run on it as well as SQLite),
# Debian's chromium (the web tests drive it with Playwright), Xvfb and the xcb/GL libraries Qt needs
# (the napari plugin's tests open a viewer on a virtual display). Installed with apt-get when run as
# root and missing; otherwise a note says which tests will skip. Never fails the set-up.
SYSTEM_PACKAGES := postgresql chromium xvfb xauth libgl1 libegl1 libfontconfig1 libdbus-1-3 libxkbcommon-x11-0 \
	libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 \
	libxcb-xfixes0 libxcb-shape0 libxcb-cursor0
system:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1 \
		&& command -v Xvfb >/dev/null 2>&1 && dpkg -s libxcb-icccm4 libxkbcommon-x11-0 >/dev/null 2>&1; then \
		true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's postgresql, chromium, Xvfb and Qt's xcb libraries for the tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			$(SYSTEM_PACKAGES)) || echo "NOTE: apt-get failed: the PostgreSQL, browser and napari tests will skip"; \
	else \
		echo "NOTE: postgresql, chromium or Xvfb is missing and this is not root with apt-get: the PostgreSQL"; \
		echo "      service tests, the browser tests and the napari tests will skip (run 'make system' as root)"; \
	fi

demo: setup
	$(VENV)/bin/microzoo tour --out demo-output

# The static checks first (a minute), then the suite with its doctests, in TEST_WORKERS processes
# (pytest-xdist; one file's tests stay in one process, so its module fixtures are made once; no
# state is shared between files). Each process starts its own throw-away PostgreSQL and Xvfb, and
# each zoo test file its own zoo, on free loopback ports. TEST_WORKERS=0: one process. The 25
# slowest tests are listed at the end (the suite's time budget is 15 minutes).
TEST_WORKERS ?= 2
test: check
	$(PY) -m pytest -q --durations=25 $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# Static checks (pinned in the dev extra): lint, format, types. Developers run it; `make test` runs it too.
check: setup
	$(VENV)/bin/ruff check src tests benchmarks tools
	$(VENV)/bin/ruff format --check src tests benchmarks tools
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) demo-output .pytest_cache
