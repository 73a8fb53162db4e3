# The two commands: `make run` (sample data -> dry-run, migrate, verify, monitor) and `make test`.
# Each target creates .venv itself when it is missing; nothing is assumed installed but Python 3.11.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Extra arguments for `runbook all` in `make run` (the sample re-runs cleanly into the same embedded Qdrant).
RUN_ARGS ?= -p on_existing resume

.PHONY: run test lab lint format clean-venv bench system-tools

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (found %d.%d): set PYTHON=/path/to/python3.11" % sys.version_info[:2])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# `make run` needs the runbook layer (the `runbook` extra); a production app installs the package without extras.
$(VENV)/.installed-base: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[runbook]'
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@ $(VENV)/.installed-base

$(VENV)/.installed-lab: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[lab]'
	@touch $@ $(VENV)/.installed-base

run: $(VENV)/.installed-base
	$(BIN)/runbook sample-data --if-missing
	$(BIN)/runbook all $(RUN_ARGS)
	$(BIN)/runbook runs

# Debian packages the tests drive (chromium for the JupyterLab browser test; prometheus and promtool for the
# monitoring tests): installed when missing, only as root (CI); elsewhere those tests skip with the reason.
SYSTEM_TOOLS := chromium:chromium promtool:prometheus prometheus:prometheus

system-tools:
	@if [ "$$(id -u)" = 0 ]; then \
	  missing=""; for pair in $(SYSTEM_TOOLS); do \
	    command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  fi; \
	fi

test: $(VENV)/.installed-test system-tools
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lab: $(VENV)/.installed-lab
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (runbook)" >/dev/null
	$(BIN)/jupyter lab notebooks/

# The benchmarks on the engine (Qdrant Edge): runbook migrate vs the simplest script, the copy vs the bare read and
# the Edge floor, peak RSS across scales, sync with 1 % changed (benchmarks/README.md). Scale 10 is long on a busy
# 2-core machine: `make bench BENCH_SCALES=1,2` runs the largest scale it can. Local-mode benchmarks run by hand.
BENCH_SCALES ?= 1,10
BENCH_ARGS ?=

bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/edge_bench.py --scales $(BENCH_SCALES) $(BENCH_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check runbook_lib runbook_fixtures tests benchmarks tools monitoring

format: $(VENV)/.installed-test
	$(BIN)/ruff format runbook_lib runbook_fixtures tests benchmarks tools monitoring

clean-venv:
	rm -rf $(VENV)
