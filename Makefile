# Two entry points on a fresh machine: `make demo` and `make test` (see README.md).
# Every install step leaves a stamp under .tools/stamps and is redone only when its inputs change;
# downloads are cached by pip (~/.cache/pip), Maven (~/.m2) and Go (~/go/pkg/mod).
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
TOOLS := .tools
STAMPS := $(TOOLS)/stamps
JVM_POMS := $(wildcard infra/jvm/pom.xml infra/jvm/*/pom.xml) infra/jvm/settings.xml

.PHONY: help install lint format unit integration test faults demo clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMPS)/python: pyproject.toml constraints.txt
	@mkdir -p $(STAMPS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

$(STAMPS)/jars: $(JVM_POMS)
	@mkdir -p $(STAMPS)
	mvn -B -q -s infra/jvm/settings.xml -f infra/jvm/pom.xml dependency:copy-dependencies
	touch $@

$(STAMPS)/ferretdb: infra/ferretdb/go.mod infra/ferretdb/go.sum infra/ferretdb/build.sh infra/build_go_module.sh
	@mkdir -p $(STAMPS)
	bash infra/ferretdb/build.sh $(TOOLS)/bin/ferretdb
	touch $@

$(STAMPS)/seaweedfs: infra/seaweedfs/go.mod infra/seaweedfs/go.sum infra/seaweedfs/build.sh infra/build_go_module.sh
	@mkdir -p $(STAMPS)
	bash infra/seaweedfs/build.sh $(TOOLS)/bin/weed
	touch $@

# Debian's Chromium for the dashboard's browser test: Playwright cannot download its own browser here.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
$(STAMPS)/chromium:
	@mkdir -p $(STAMPS)
	command -v chromium >/dev/null || { $(SUDO) apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }
	touch $@

install: $(STAMPS)/python $(STAMPS)/jars $(STAMPS)/ferretdb $(STAMPS)/seaweedfs  ## Install the venv, the JVM jars, FerretDB and SeaweedFS

lint: $(STAMPS)/python  ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMPS)/python  ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

unit: $(STAMPS)/python  ## Unit tests only (no services)
	$(BIN)/pytest -m 'not integration and not faults'

integration: install $(STAMPS)/chromium  ## Integration tests against the real services (and a browser)
	$(BIN)/pytest -m integration

test: install $(STAMPS)/chromium lint  ## Install everything, lint, run the unit and integration tests
	$(BIN)/pytest -m 'not faults' --durations=15

faults: install  ## Fault injection against the real services (crashes, outages, frozen stores; ~20 min)
	$(BIN)/pytest -m faults tests/faults --durations=5

demo: install  ## Install everything and run the whole pipeline (URLs printed; Ctrl-C stops it all)
	$(BIN)/userpulse demo

clean:  ## Stop the stack and remove its data (installed tools are kept)
	-$(BIN)/userpulse stack down
	rm -rf .stack
