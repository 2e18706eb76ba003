# Two commands do all the set-up on a fresh machine:
#   make run    the bot (Slack when tokens are set, else the terminal chat on the local PostgreSQL)
#   make test   installs everything the tests need (PostgreSQL server binaries included) and runs them
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= pgsessions.yml

.PHONY: install postgres run test unit lint bench demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

postgres:
	@scripts/ensure-postgres.sh

run: install
	@scripts/run.sh "$(CONFIG)"

lint: install
	$(BIN)/ruff check bot tests bench
	$(BIN)/mypy

test: install postgres lint
	$(BIN)/python -m pytest

# the fast tests only (no PostgreSQL, no fake Slack, no bot process): a few seconds
unit: install
	$(BIN)/python -m pytest -m unit -q

bench: install postgres
	$(BIN)/python -m bench

demo: install postgres
	$(BIN)/python -m bot.shell.demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
