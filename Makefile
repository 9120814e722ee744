# One command to run the main job and one to run the checks, each from a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 7700
# The editable install is a tree of links (editable_mode=strict), which mypy and the import
# contract read like any installed package; a new or removed module needs a reinstall, so
# the stamp covers the list of package files as well as pyproject.toml.
SOURCES := $(shell ls __init__.py __main__.py py.typed pyproject.toml 2>/dev/null; \
             find protocol server client -name '*.py' -o -name py.typed 2>/dev/null | sort)
HASH   := $(shell echo $(SOURCES) | cat - pyproject.toml | cksum | cut -d' ' -f1)
INSTALL := $(BIN)/pip install --quiet --config-settings editable_mode=strict

.PHONY: install run test lint bench demo clean

# Everything, dev tools included; run it after adding or removing a module.
install: $(VENV)/.dev-$(HASH)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# `make run` needs the core only; `make test` everything (dev pulls in every extra).
$(VENV)/.run-$(HASH): | $(BIN)/python
	$(INSTALL) -e .
	rm -f $(VENV)/.run-*
	touch $@

$(VENV)/.dev-$(HASH): | $(BIN)/python
	$(INSTALL) -e '.[dev]'
	rm -f $(VENV)/.dev-* $(VENV)/.run-*
	touch $@ $(VENV)/.run-$(HASH)

# Start the server in the background, run the calc client on operations.txt, stop the server.
run: $(VENV)/.run-$(HASH)
	@set -e; \
	$(BIN)/forkwire-server --port $(PORT) --log-format console --log-level warning & server=$$!; \
	trap 'kill -TERM $$server 2>/dev/null; wait $$server' EXIT; \
	for i in $$(seq 50); do $(BIN)/python -c "import socket; socket.create_connection(('127.0.0.1', $(PORT)), 0.2).close()" 2>/dev/null && break; sleep 0.1; done; \
	$(BIN)/forkwire calc operations.txt -o results.txt --port $(PORT)

lint: $(VENV)/.dev-$(HASH)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

bench: $(VENV)/.dev-$(HASH)
	$(BIN)/python -m bench.calc
	$(BIN)/python -m bench.ingest

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache results.txt
