# asm developer commands. `make run` serves the app; `make test` runs both test tiers.
# Everything runs from the virtualenv in $(VENV), created on first use.

VENV ?= .venv
PY = $(VENV)/bin/python
PYTHON3 ?= python3

.DEFAULT_GOAL := help

.PHONY: help venv install install-dev migrate run worker beat test lint typecheck imports migrations-check check \
	bench examples \
	superuser clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

# ---------------------------------------------------------------- environment
$(PY):
	$(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

venv: $(PY) ## create the virtualenv (.venv) if missing

# Stamp files: reinstall only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml package-lock.json | $(PY)
	$(PY) -m pip install -e '.[dev]'
	@# the codex CLI (npm @openai/codex, pinned in package-lock.json) for the codex provider
	@if command -v npm >/dev/null; then npm ci --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the codex provider's CLI tests will be skipped" >&2; fi
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed ## pip install -e .

install-dev: $(VENV)/.installed-dev ## pip install -e '.[dev]' (tests, lint, types)

# ---------------------------------------------------------------- running
migrate: install ## apply database migrations (SQLite var/asm.sqlite3 unless DATABASE_URL)
	$(PY) manage.py migrate

# "The run command" of the README: the ASGI app plus, with no REDIS_URL, the in-process
# worker and reaper (embedded mode).
HOST ?= 127.0.0.1
PORT ?= 8000
run: install migrate ## install, migrate and serve on http://127.0.0.1:8000 (with the worker)
	$(PY) manage.py asm_serve --host $(HOST) --port $(PORT)

worker: install ## a Celery worker (distributed mode: needs REDIS_URL)
	$(VENV)/bin/celery -A asm_project worker -l info

beat: install ## Celery beat: the stale-run reaper schedule (distributed mode)
	$(VENV)/bin/celery -A asm_project beat -l info

superuser: install ## create an admin user
	$(PY) manage.py createsuperuser

# ---------------------------------------------------------------- checks
test: install-dev ## both test tiers (throwaway PostgreSQL/Redis unless DATABASE_URL/REDIS_URL)
	$(PY) scripts/run_tests.py $(PYTEST_ARGS)

lint: install-dev ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install-dev ## mypy (config in pyproject.toml)
	$(VENV)/bin/mypy .

imports: install-dev ## import-linter contracts
	$(VENV)/bin/lint-imports

migrations-check: install ## fail when the models have changes without a migration
	$(PY) manage.py makemigrations --check --dry-run

check: lint typecheck imports migrations-check test ## everything CI checks

# Every examples/*.py against the embedded default (echo, a throwaway SQLite database);
# EXAMPLE_ARGS="--provider claude" runs them against a live provider instead.
examples: install ## run every example in examples/ (embedded echo by default)
	$(PY) examples/run_all.py $(EXAMPLE_ARGS)

bench: install ## run every bench/*.py (needs DATABASE_URL)
	@test -n "$$DATABASE_URL" || { echo "make bench needs DATABASE_URL (a PostgreSQL URL)" >&2; exit 1; }
	@set -e; found=0; for script in bench/[!_]*.py; do \
		[ -e "$$script" ] || continue; found=1; \
		echo "== $$script"; PYTHONPATH=. $(PY) "$$script"; \
	done; [ $$found = 1 ] || echo "no benchmarks in bench/"

clean: ## remove the virtualenv, caches and build output (keeps var/ and its database)
	rm -rf $(VENV) .ci-venv build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +
