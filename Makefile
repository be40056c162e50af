# tugboat — see README.md. `make demo` and `make test` work on a fresh Debian 12 machine as root.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PKGS := $(shell grep -v '^\#' .ci/debian-packages.txt)

.PHONY: setup deps venv demo test test-unit lint bench clean

setup: deps venv

# Debian packages (skipped when all are installed; needs root).
deps:
	@missing=$$(for p in $(PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d; \
	  (apt-get update -q || true) >/dev/null; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null || exit 1; \
	  rm -f /usr/sbin/policy-rc.d; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/tug-runtime install-launcher $(BIN)/tug-runtime  # lean -I -S start-up
	$(BIN)/python -m compileall -q src >/dev/null || true  # bytecode even under PYTHONDONTWRITEBYTECODE
	cd / && $(CURDIR)/$(BIN)/python -m tugboat.cli.launcher >/dev/null  # lean `tug` (python -S)
	touch $@

demo: setup
	$(BIN)/python -I demo/demo.py

test: setup
	$(BIN)/python -m pytest -q tests

test-unit: venv
	$(BIN)/python -m pytest -q tests/unit

lint: venv
	$(BIN)/ruff check src tests bench

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
