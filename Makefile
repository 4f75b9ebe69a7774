# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv stack-up stack-down stack-status lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	scripts/demo

test: $(STAMP)
	scripts/run-tests

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
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(STAMP) $(BENCH_STAMP)
	@started="$$(mktemp)"; \
	trap 'if [ -s "$$started" ]; then scripts/devstack down $$(cat "$$started"); fi; rm -f "$$started"' EXIT; \
	scripts/devstack up --started-file "$$started" && \
	$(BIN)/python -m load.bench $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
