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

test-slow: $(STAMP) prometheus compose-v1 labelstudio
	$(BIN)/pytest -m slow

# Compose v1 (docker-compose 1.29.2, what Debian ships) in its own venv, to check that
# deploy/docker-compose.yml is valid for it as well as for v2 (tests/test_service_containers.py).
# Its PyYAML 5.4 only builds with Cython < 3, hence the two steps.
COMPOSE_V1 := .compose-v1/bin/docker-compose
.PHONY: compose-v1
compose-v1: $(COMPOSE_V1)
$(COMPOSE_V1):
	$(PYTHON) -m venv .compose-v1
	.compose-v1/bin/pip install --quiet --disable-pip-version-check "cython<3" wheel setuptools
	.compose-v1/bin/pip install --quiet --disable-pip-version-check --no-build-isolation "pyyaml==5.4.1"
	.compose-v1/bin/pip install --quiet --disable-pip-version-check "docker-compose==1.29.2"

# Label Studio in its own venv too: it pins Django 5.2, a dozen django-* packages and more,
# which must not meet flywheel's dependencies; tests/test_labelstudio_import.py imports
# `flywheel predict --format labelstudio` output into it, started on loopback, and
# tests/test_labelstudio_loop.py pushes and pulls through its API. sentry-sdk 3 drops an
# option Label Studio 1.23.2 passes at start-up (TypeError: Unknown option 'send_default_pii').
LABEL_STUDIO := .labelstudio/bin/label-studio
.PHONY: labelstudio
labelstudio: $(LABEL_STUDIO)
$(LABEL_STUDIO):
	$(PYTHON) -m venv .labelstudio
	.labelstudio/bin/pip install --quiet --disable-pip-version-check "label-studio==1.23.2" "sentry-sdk>=2.16,<3"

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
