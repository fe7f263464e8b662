# The two commands of the README are `make run` and `make test`; the rest are parts of them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= config.example.yaml

.PHONY: install install-test dist image-check lock run test lint typecheck unit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# What running the relay needs; the test extras only for the targets that test.
install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

# Installs, starts a demo backend on 127.0.0.1:3000, and runs the relay on the embedded SQLite store.
run: install
	@$(BIN)/webhook-relay echo-backend --listen 127.0.0.1:3000 & \
	  trap 'kill $$!' EXIT INT TERM; \
	  $(BIN)/webhook-relay serve -c $(CONFIG)

lint: install-test
	$(BIN)/ruff check relay tests bench
	$(BIN)/ruff format --check relay tests bench

typecheck: install-test
	$(BIN)/mypy --strict relay
	$(BIN)/mypy tests

# The README's test command does the same: lint and mypy run inside pytest (tests/test_static.py).
test: install-test
	$(BIN)/pytest

bench: install-test
	$(BIN)/python -m bench $(ARGS)

# A wheel for servers without a checkout: dist/webhook_relay-VERSION-py3-none-any.whl.
dist: $(BIN)/python
	$(BIN)/pip wheel --quiet --no-deps --wheel-dir dist .

# The image's pinned dependencies (requirements.lock), from pyproject.toml's.
lock: install-test
	$(BIN)/pip install --quiet pip-tools
	$(BIN)/pip-compile --quiet --extra postgres --extra otel --generate-hashes --strip-extras \
	  --no-header --no-emit-index-url --no-emit-find-links --annotation-style=line \
	  -o requirements.lock.new pyproject.toml
	{ sed -n '1,3p' requirements.lock; cat requirements.lock.new; } > requirements.lock.tmp
	mv requirements.lock.tmp requirements.lock && rm requirements.lock.new

# Build the image with buildah and smoke-test it with podman, from a local base
# (deploy/image-check.sh). Kept out of CI on purpose.
image-check:
	deploy/image-check.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info data dist build
