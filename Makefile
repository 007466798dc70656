# golden-press: `make demo` runs the demo, `make test` runs lint, type checks and the test suite.
# Both create .venv on first use; later runs reinstall only when pyproject.toml changed.

# python3.11 when it exists, else python3 (which must be 3.11).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.golden-press-installed

.PHONY: demo test lint buf typecheck pytest proto dev-up dev-down clean-state

demo: proto
	$(BIN)/golden-press demo

test: lint buf typecheck pytest

lint: proto
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# Protobuf contract: buf lint (buf.yaml) and buf breaking against the last release's protos, kept in
# released/proto/<version>/ (move it forward at each release). buf comes from the npm package
# @bufbuild/buf, pinned in package.json / package-lock.json and installed by `npm ci`.
PROTO_RELEASED := released/proto/v0.1.0
NPM_STAMP := node_modules/.golden-press-installed

buf: $(NPM_STAMP)
	node_modules/.bin/buf lint
	node_modules/.bin/buf breaking proto --against $(PROTO_RELEASED)

$(NPM_STAMP): package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund
	touch $@

typecheck: proto
	$(BIN)/mypy golden_press service activities workflows worker.py starter tests bench

pytest: proto
	$(BIN)/pytest -q

dev-up: proto
	$(BIN)/golden-press dev up

dev-down: $(STAMP)
	$(BIN)/golden-press dev down

# Generated *_pb2*.py are not committed; protogen only regenerates stale ones (fast when fresh).
proto: $(STAMP)
	$(BIN)/python -m service.devstack.protogen

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

clean-state: dev-down
	rm -rf .golden
