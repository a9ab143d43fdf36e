# Developer and CI entry points. `make test` is what CI runs (after `make lint`), see .ci/run.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stormwatch-installed
KAFKA := bash deploy/kafka/local-kafka.sh
# Extra pytest arguments, e.g. make test PYTEST_ARGS='-m "not cluster" -x'
PYTEST_ARGS ?=
# pytest-xdist workers for `make test`: the broker tests all run on one of them (one xdist group,
# tests/conftest.py), the unit tests beside them on the other. 0: one process, as plain pytest
# (for -s or --pdb).
PYTEST_WORKERS ?= 2
# A specific interpreter for a new venv (default: the first of python3.11, 3.12, 3.13, python3 that is >= 3.11)
PYTHON ?=

.PHONY: help up down stack-status venv jemalloc test test-tools lint constraints kafka-up kafka-down kafka-status kafka-cluster-up kafka-cluster-down kafka-cluster-status

help:
	@echo "make up                  Kafka + the whole pipeline on 127.0.0.1 (ingest, correlator, linker, agent, executor, gateway,"
	@echo "                         the notifier sending to a demo webhook receiver), then a demo storm through it"
	@echo "make down                stop everything make up started"
	@echo "make venv                create or update $(VENV) (Python >= 3.11) from constraints.txt"
	@echo "make test                the whole test suite; starts a local Kafka when KAFKA_BOOTSTRAP_SERVERS is unset"
	@echo "make lint                ruff check, ruff format --check, mypy, import-linter (the layers)"
	@echo "make constraints         re-pin constraints.txt from the current venv"
	@echo "make kafka-up / down     single local broker on 127.0.0.1:9092 (deploy/kafka/local-kafka.sh)"
	@echo "make kafka-cluster-up / down   3-node cluster on 127.0.0.1:29092-29094"

up: venv jemalloc
	bash deploy/local-stack.sh up

down:
	bash deploy/local-stack.sh down

stack-status:
	bash deploy/local-stack.sh status

venv: $(STAMP)

# Re-installs only when pyproject.toml or constraints.txt changed since the last install.
$(STAMP): pyproject.toml constraints.txt
	@set -euo pipefail; \
	ok() { "$$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; }; \
	if [[ ! -x $(PY) ]] || ! ok $(PY); then \
		py=""; \
		for c in $(PYTHON) python3.11 python3.12 python3.13 python3; do \
			if command -v "$$c" >/dev/null 2>&1 && ok "$$c"; then py=$$c; break; fi; \
		done; \
		[[ -n $$py ]] || { echo "make venv: Python 3.11 or newer is needed (none of python3.11..python3 found)" >&2; exit 1; }; \
		echo "creating $(VENV) with $$($$py --version)"; \
		rm -rf $(VENV); \
		"$$py" -m venv $(VENV); \
	fi; \
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'; \
	touch $(STAMP)

test: venv jemalloc test-tools
	$(PY) -m pytest tests -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# jemalloc (Debian's libjemalloc2): the correlator re-executes itself with it, so that memory
# freed after a takeover or a catch-up goes back to the OS (stormwatch/allocator.py,
# docs/performance.md "Memory after faults"). Installed when missing and apt-get can; without it
# the correlator runs on CPython's own allocator and says so in stormwatch_memory_allocator.
jemalloc:
	@if ! ls /usr/lib/*-linux-gnu/libjemalloc.so.2 /usr/lib64/libjemalloc.so.2 /usr/lib/libjemalloc.so.2 2>/dev/null | grep -q .; then \
		if [[ $$(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libjemalloc2 >/dev/null \
				|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libjemalloc2 >/dev/null; } \
				|| echo "make: libjemalloc2 could not be installed; the correlator will use CPython's allocator"; \
		else \
			echo "make: libjemalloc.so.2 not found (apt-get install libjemalloc2); the correlator will use CPython's allocator"; \
		fi; \
	fi

# Tools some tests run besides Python: amtool (Debian's prometheus-alertmanager package) for the
# Alertmanager API v2 test, and Debian's chromium with its chromedriver for the console's browser
# tests (docs/console.md). Installed when missing and apt-get can (as root, as CI runs); else that
# test is skipped and says why. The package's init script is kept from starting an Alertmanager.
test-tools:
	@if ! command -v amtool >/dev/null 2>&1; then \
		if [[ $$(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then \
			added=0; \
			if [[ ! -e /usr/sbin/policy-rc.d ]]; then \
				printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && added=1; \
			fi; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus-alertmanager >/dev/null \
				|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus-alertmanager >/dev/null; } \
				|| echo "make test: amtool could not be installed; the amtool test will be skipped"; \
			if [[ $$added == 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi; \
		else \
			echo "make test: amtool not found (apt-get install prometheus-alertmanager); the amtool test will be skipped"; \
		fi; \
	fi
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
		if [[ $$(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null \
				|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null; } \
				|| echo "make test: chromium could not be installed; the console's browser tests will be skipped"; \
		else \
			echo "make test: chromium/chromedriver not found (apt-get install chromium chromium-driver); the console's browser tests will be skipped"; \
		fi; \
	fi

lint: venv
	@status=0; \
	$(VENV)/bin/ruff check . || status=1; \
	$(VENV)/bin/ruff format --check . || status=1; \
	$(PY) tools/package_view.py $(VENV)/bin/mypy || status=1; \
	$(PY) tools/package_view.py $(VENV)/bin/lint-imports || status=1; \
	exit $$status

# Pins every package of the venv except the project itself.
constraints: venv
	$(PY) -m pip freeze --exclude-editable --disable-pip-version-check | grep -v -i '^stormwatch[ =@]' > constraints.txt

kafka-up:
	$(KAFKA) start

kafka-down:
	$(KAFKA) stop

kafka-status:
	$(KAFKA) status

kafka-cluster-up:
	$(KAFKA) start --nodes 3

kafka-cluster-down:
	$(KAFKA) stop --nodes 3

kafka-cluster-status:
	$(KAFKA) status --nodes 3
