# The two commands of the README: `make demo` and `make test`. Both install into .venv first.
# `make serve` runs the production server (gunicorn, settings from the environment: docs/deploy.md).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= var/demo
HOST ?= 127.0.0.1
PORT ?= 8000
FAMILY ?= sd15

.PHONY: install demo serve test test-fast lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "peftlab needs Python 3.11 (set PYTHON=...)"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# The demo serves with runserver, for local use: DEBUG=1 makes it serve the static files and rendered images and
# accept the session cookie over plain http; ALLOWED_HOSTS keeps its loopback default (HOST is 127.0.0.1).
# FAMILY=sdxl runs it on the tiny SDXL model (the same four methods) instead of the tiny SD 1.x one.
demo: install
	HF_HUB_OFFLINE=1 $(BIN)/python manage.py migrate --no-input
	DEBUG=1 HF_HUB_OFFLINE=1 $(BIN)/python manage.py demo --family $(FAMILY) --output $(DEMO_DIR) --serve --host $(HOST) --port $(PORT)

# WEB_CONCURRENCY sets the worker count; SECRET_KEY, ALLOWED_HOSTS and DATABASE_URL come from the environment.
serve: install
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py collectstatic --no-input
	$(BIN)/gunicorn peftlab.wsgi --config gunicorn.conf.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

test: lint
	bash scripts/test-legs

test-fast: install
	$(BIN)/pytest -m "not slow" -q

clean:
	rm -rf $(VENV) var
