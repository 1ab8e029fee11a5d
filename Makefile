# Two commands work from a clean clone: `make demo` and `make test`. Everything they need is
# installed here (pip into .venv, Debian packages with apt when missing), nothing by hand.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
# the CPU build of torch that this machine kind keeps on disk; an unpinned torch pulls a multi-GB CUDA build
TORCH  := torch==2.13.0

.PHONY: demo test test-cluster check lint types install install-test system-deps bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PIP) install -q $(TORCH) -e '.[torch,remote,dev,cluster]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

system-deps:
	bash scripts/install-test-system-deps.sh

demo: install
	$(PY) scripts/demo.py demo-out

# the gates: ruff (the rule selection in pyproject.toml) and mypy on src/, zero findings
lint: install-test
	$(PY) -m ruff check src

types: install-test
	$(PY) -m mypy

# the fast lane (about a minute): the in-memory backend, settings, targets, secrets and the one typed
# request from the CLI and the Python API; the fault storms, soak and media matrix stay in `make test`
FAST_TESTS := tests/transfer/test_memory_backend.py tests/policy/test_one_request.py \
	tests/policy/test_configuration.py tests/backends/test_targets.py tests/backends/test_secrets.py

# pytest-xdist workers for the suite: one more than the cores, since part of each test is waiting (a stall
# limit waited out, a link's pace, a worker's start) and a third worker fills that time on 2 cores
# (594 tests on one build: 645 s with 2 workers, 571 s with 3; from 3 on the CPU is saturated, so more
# workers only add contention)
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))

# two phases, both run, either failing fails the target (pytest's "no tests ran", exit 5, included):
# the suite on every core (pytest-xdist, TEST_WORKERS), then the Ray cluster tests alone and serially:
# one real cluster in one process, never beside the rest of the suite (a 2-core machine does not start
# Ray's nodes in time under that load)
test: lint types system-deps
	@suite=0; cluster=0; \
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not cluster" --durations=25 || suite=$$?; \
	$(PY) -m pytest -q -p no:xdist -m cluster --durations=10 || cluster=$$?; \
	if [ $$suite -ne 0 ]; then exit $$suite; fi; exit $$cluster

# the Ray cluster phase of `make test` alone
test-cluster: install-test
	$(PY) -m pytest -q -p no:xdist -m cluster --durations=10

check: lint types
	$(PY) -m pytest -q -x $(FAST_TESTS)

bench: install-test
	$(PY) bench/pipeline.py

clean:
	rm -rf demo-out .pytest_cache .mypy_cache .ruff_cache build *.egg-info src/*.egg-info
