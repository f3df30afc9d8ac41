# durable: `make run` (the product on SQLite with demo data) and `make test` (the suite on SQLite
# and PostgreSQL). Both create .venv and install what they need on a fresh machine.

SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
PG_URL ?= postgres://postgres@127.0.0.1:5432/durable
# Django 6 needs Python >= 3.12; the machine's python3 may be 3.11 (STACK-NOTES T17).
PYTHON ?= $(shell for c in python3.13 python3.12 $$HOME/.pyenv/versions/3.13*/bin/python3.13 \
	$$HOME/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.13 /usr/bin/python3.12 python3; do \
	$$c -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null && { echo $$c; break; }; done)

.PHONY: install run test test-sqlite test-postgres browser lint bench chaos clean

$(BIN)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: Python 3.12 or newer is required" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	$(BIN)/python -c "import django, sys; assert django.VERSION >= (6,), django.__version__"
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/python manage.py migrate --noinput -v0
	$(BIN)/python manage.py durable demo-data
	$(BIN)/python manage.py durable serve --host $(HOST) --port $(PORT)

# Chromium for the browser tests comes from Debian's package (a browser download fails here).
browser:
	@command -v chromium >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
		&& (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) \
		|| echo "warning: chromium missing; browser tests will be skipped" >&2; }

test: install browser lint
	$(MAKE) --no-print-directory test-sqlite
	$(MAKE) --no-print-directory test-postgres

test-sqlite: install
	@echo "== tests on SQLite =="
	$(BIN)/pytest -q -p no:cacheprovider

test-postgres: install
	@echo "== tests on PostgreSQL =="
	DATABASE_URL=$(PG_URL) $(BIN)/pytest -q -p no:cacheprovider

# Benchmarks and the long chaos campaign print JSON (and write bench/results/*.json); not part of `make test`.
bench: install
	$(BIN)/python bench/engine.py --db both
	$(BIN)/python bench/agents.py --db both
	$(BIN)/python bench/browser.py --db both
	$(BIN)/python bench/approvals.py --db both

chaos: install
	$(BIN)/python bench/chaos.py --db both --rounds $(or $(ROUNDS),20)

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) var staticfiles
