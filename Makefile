# Headwater: the two commands of the README, and what they need.
#   make ingest SRC=<folder>   install everything (once), then ingest SRC into the embedded Weaviate
#   make test                  install everything (once), then run the whole test suite
SHELL := /bin/bash
SRC ?= ../shared/data/unstructured-example-docs
PYTEST_ARGS ?=
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)

.PHONY: setup ingest test lint weaviate

$(UV):
	python3 -m pip install --user --quiet "uv>=0.5"

# The venv follows uv.lock exactly; uv's cache (~/.cache/uv) makes a fresh clone's sync quick.
.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen
	touch $@

# The pinned weaviate-server, built once into ~/.cache/headwater/bin (reused across clones).
weaviate: .venv/.synced
	$(UV) run --frozen headwater weaviate install

setup: .venv/.synced weaviate

ingest: setup
	$(UV) run --frozen headwater ingest "$(SRC)"

lint: .venv/.synced
	$(UV) run --frozen ruff check .

# pytest exits 5 when it collected no tests: a broken collection must not pass as green.
test: setup lint
	$(UV) run --frozen pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc
