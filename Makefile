# KimiChat: `make run` serves the app, `make test` runs every check. Both set up everything they need first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
OFFLINE_KIMI_PORT ?= 8765
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The second test pass runs on these when they answer (this machine has both on their standard ports).
TEST_PG_URL ?= postgres://postgres@127.0.0.1:5432/kimichat
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: run test lint check-django pytest pytest-scale system-deps migrate offline clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt $(VENV)/.installed
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# What the tests need from apt: Debian's Chromium for the browser tests, gettext for the translations, a CJK font
# so the Chinese screenshots show characters rather than boxes, redis-server for the Redis-restart test, iproute2's
# ss to read a listening socket's queue (tests/test_serve.py).
system-deps:
	@missing=""; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	command -v msgfmt >/dev/null || missing="$$missing gettext"; \
	dpkg -s fonts-wqy-microhei >/dev/null 2>&1 || missing="$$missing fonts-wqy-microhei"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v ss >/dev/null || missing="$$missing iproute2"; \
	if [ -n "$$missing" ]; then \
	  echo "apt-get install:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

migrate: $(VENV)/.installed
	$(PY) manage.py migrate --noinput

# Serve the app on http://$(HOST):$(PORT)/. With no KIMI_API_KEY, the built-in offline Kimi-compatible server
# runs beside it on 127.0.0.1:$(OFFLINE_KIMI_PORT) and the app talks to it; the app starts only once that server
# listens, so a busy port stops here (with one line naming OFFLINE_KIMI_PORT) instead of reaching someone else's.
run: migrate
	$(PY) manage.py reapgenerations
	@if [ -z "$$KIMI_API_KEY" ] && [ -z "$$KIMI_API_KEY_FILE" ]; then \
	  echo "No KIMI_API_KEY: using the built-in offline Kimi-compatible server on 127.0.0.1:$(OFFLINE_KIMI_PORT)"; \
	  ready=$$(mktemp); \
	  $(PY) manage.py offlinekimi --port $(OFFLINE_KIMI_PORT) >"$$ready" & offline=$$!; \
	  trap 'kill $$offline 2>/dev/null; rm -f "$$ready"' EXIT INT TERM; \
	  until grep -q "Offline Kimi-compatible server on" "$$ready"; do \
	    kill -0 $$offline 2>/dev/null || { wait $$offline; exit 1; }; \
	    sleep 0.2; \
	  done; \
	  cat "$$ready"; \
	  $(PY) -m kimichat.serve -b $(HOST) -p $(PORT) kimichat.asgi:application; \
	else \
	  exec $(PY) -m kimichat.serve -b $(HOST) -p $(PORT) kimichat.asgi:application; \
	fi

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

check-django: $(VENV)/.installed-dev
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run

pytest: $(VENV)/.installed-dev system-deps
	$(PY) -m pytest

# The same suite on PostgreSQL + Redis (the scale-out setup), when both answer; a notice when they do not. The browser
# tests (what a person sees; the same pages and frames) run in the first pass only: their database work is the same
# as the non-browser tests', which all run here, and leaving them out keeps `make test` well inside CI's hour.
pytest-scale: $(VENV)/.installed-dev system-deps
	@if $(PY) -m tests.services_up "$(TEST_PG_URL)" "$(TEST_REDIS_URL)"; then \
	  echo "=== Second pass: PostgreSQL + Redis ==="; \
	  DATABASE_URL="$(TEST_PG_URL)" REDIS_URL="$(TEST_REDIS_URL)" $(PY) -m pytest -m "not browser"; \
	else \
	  echo "NOTICE: PostgreSQL or Redis not reachable; skipping the PostgreSQL + Redis pass."; \
	fi

test: lint check-django pytest pytest-scale

offline: $(VENV)/.installed
	$(PY) manage.py offlinekimi --port $(OFFLINE_KIMI_PORT)

clean:
	rm -rf $(VENV) var/staticfiles .pytest_cache

# Benchmarks (docs/performance.md): each prints its figures and exits; a few minutes each at the default sizes.
.PHONY: bench bench-relay bench-userapi bench-history bench-scale bench-attachments
bench-relay: $(VENV)/.installed-dev
	$(PY) bench/relay.py --streams 1,100,500,1000

bench-userapi: $(VENV)/.installed-dev
	$(PY) bench/userapi.py --streams 1,100

bench-history: $(VENV)/.installed-dev
	$(PY) bench/history.py

bench-scale: $(VENV)/.installed-dev
	$(PY) bench/scale.py

bench-attachments: $(VENV)/.installed-dev
	$(PY) bench/attachments.py --pdf-mb 10 --docx-pages 50 --streams 20

bench: bench-relay bench-userapi bench-history bench-scale bench-attachments
