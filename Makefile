# `make demo` and `make test` are the README's two commands: each sets up what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-slow lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	rm -rf demo-data
	$(BIN)/flywheel demo demo-data

lint: $(STAMP)
	$(BIN)/ruff check flywheel tests
	$(BIN)/mypy

test: lint postgres
	$(BIN)/pytest

test-slow: $(STAMP) prometheus
	$(BIN)/pytest -m slow

# Debian's Prometheus server and promtool, for the slow tests of the dashboard and alerts
# (tests/test_prometheus_server.py); installs only when missing (needs root and apt).
.PHONY: prometheus
prometheus:
	bash deploy/prometheus/ensure-prometheus.sh

# The PostgreSQL server binaries, for the store tests on both backends (tests/pg_server.py);
# installs only when missing (needs root and apt). FLYWHEEL_SKIP_POSTGRES=1: SQLite only.
.PHONY: postgres
postgres:
	bash deploy/postgres/ensure-postgres.sh

clean:
	rm -rf $(VENV) demo-data .pytest_cache .mypy_cache .ruff_cache
