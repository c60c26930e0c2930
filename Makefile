# The same targets run locally and in CI.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo up down status test unit lint bench clean

# A virtual environment with the project and its pinned dependencies (re-run when pyproject changes).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/rendezvous demo

bench: install
	$(BIN)/python -m bench.latency

up: install
	$(BIN)/rendezvous up

down: install
	$(BIN)/rendezvous down

status: install
	$(BIN)/rendezvous status

test: install
	$(BIN)/python -m pytest

unit: install
	$(BIN)/python -m pytest -m unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	-$(BIN)/rendezvous down
	rm -rf $(VENV) .state
