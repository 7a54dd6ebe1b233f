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

.PHONY: run test lint typecheck check schema bench soak clean spa

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

# GraphiQL's scripts and styles, pinned in package.json/package-lock.json: `npm ci` where npm
# exists. Without npm (or if `npm ci` fails, e.g. offline) the service serves GraphiQL from a
# CDN instead and says so at start.
ASSETS := node_modules/.installed
$(ASSETS): package.json package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --ignore-scripts --no-audit --no-fund --loglevel=error && touch $@ \
		|| echo "npm ci failed: GraphiQL will load its scripts and styles from the unpkg.com CDN"; \
	else \
		echo "npm not found: GraphiQL will load its scripts and styles from the unpkg.com CDN" \
			"(install Node.js/npm and re-run to serve them from this service)"; \
	fi

run: $(VENV)/.synced $(ASSETS)
	$(PY) -m app serve

# Two workers (pytest-xdist), one a core: each has its own PostgreSQL, template database and
# fake Stripe. TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2
test: $(VENV)/.synced $(ASSETS)
	$(PY) -m pytest -n $(TEST_WORKERS)

# The example SPA (examples/spa/) on http://localhost:3000, beside `make run`.
spa: $(VENV)/.synced
	$(PY) -m app spa

lint: $(VENV)/.synced
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.synced
	$(VENV)/bin/mypy .

check: lint typecheck test

schema: $(VENV)/.synced
	$(PY) -m app export-schema > schema.graphql

# The targets against a bare reference, then the renewal-wave burst (both need wrk:
# `apt-get install wrk`); bench.checkout, bench.webhooks and bench.export measure single
# features in more detail.
bench: $(VENV)/.synced
	$(PY) -m bench.run
	$(PY) -m bench.burst

# A bounded soak (about 60 s of load, then the drain): two servers, a flaky fake Stripe, one
# PostgreSQL restart; non-zero exit if anything was lost or doubled. SOAK_ARGS="--seconds 300"
soak: $(VENV)/.synced
	$(PY) -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) node_modules
