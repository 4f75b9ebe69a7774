# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Installs are pinned by requirements/constraints.txt (every extra) and the Docker
# image by requirements/runtime.txt; `make lock` regenerates both from pyproject.toml.
CONSTRAINTS := requirements/constraints.txt
# setuptools advises, on every editable install of a flat layout, that a folder named like the
# package in the working directory may shadow it; here that folder is the package itself.
EDITABLE_QUIET := PYTHONWARNINGS="ignore:Editable installation:Warning"

.PHONY: demo test venv stack-up stack-down stack-status lint bench clean lock

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@echo "==> Creating $(VENV) and installing cvm-stream with its pinned dependencies"
	@echo "    (about 1-2 minutes the first time; later runs skip this step)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(EDITABLE_QUIET) $(BIN)/python -m pip install --disable-pip-version-check --progress-bar on \
		-c $(CONSTRAINTS) -e '.[dev,eval]'
	@touch $(STAMP)
	@echo "==> Installed: $(BIN)/cvm (try: $(BIN)/cvm --help)"

venv: $(STAMP)

demo: $(STAMP)
	scripts/demo

test: $(STAMP)
	scripts/run-tests
	@echo "Next: make demo for a live view, or $(BIN)/cvm --help"

stack-up: $(STAMP)
	scripts/devstack up

stack-down:
	scripts/devstack down

stack-status:
	scripts/devstack status

# `make bench`: throughput, freshness, lookups, memory, scaling and a profile of the engine;
# writes reports/bench/report.md and bench.png. BENCH_ARGS=--quick: a 2-minute smoke run.
# Like `make test`, it stops only the servers of the dev stack that this run started.
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): pyproject.toml $(STAMP)
	@echo "==> Installing the benchmark tools (py-spy)"
	$(EDITABLE_QUIET) $(BIN)/python -m pip install --disable-pip-version-check -c $(CONSTRAINTS) \
		-e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(STAMP) $(BENCH_STAMP)
	@started="$$(mktemp)"; \
	trap 'if [ -s "$$started" ]; then scripts/devstack down $$(cat "$$started"); fi; rm -f "$$started"' EXIT; \
	scripts/devstack up --started-file "$$started" && \
	$(BIN)/python -m load.bench $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

# Pin every dependency (and every extra) from PyPI with uv; commit both files.
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 \
		--custom-compile-command "make lock" -o requirements/runtime.txt
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --all-extras \
		--custom-compile-command "make lock" -o $(CONSTRAINTS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
