# The two commands of the contract: `make run` and `make test`. Everything else is set-up.
PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python

# uv must use the machine's Python, never download one, and sync into .venv.
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: run test lint typecheck check schema bench clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

run: $(VENV)/.synced
	$(PY) -m app serve

test: $(VENV)/.synced
	$(PY) -m pytest

lint: $(VENV)/.synced
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.synced
	$(VENV)/bin/mypy .

check: lint typecheck test

schema: $(VENV)/.synced
	$(PY) -m app export-schema > schema.graphql

bench: $(VENV)/.synced
	$(PY) -m bench.checkout

clean:
	rm -rf $(VENV) $(TOOLS)
