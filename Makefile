# The two commands a user types: `make demo` and `make test`.
# Each creates .venv and installs the project with its test extras when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo sim-demo test test-slow sim lint bench-storage clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --quiet -e '.[test,dev]'
	@touch $(STAMP)

demo: $(STAMP)
	@$(PY) -m rsm.demo

sim-demo: $(STAMP)
	@$(PY) -m rsm.sim.demo

test: $(STAMP)
	@$(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP)
	@$(PY) -m pytest -q -m slow

sim: $(STAMP)
	@$(PY) -m rsm.sim --seeds 500 --nodes 5

lint: $(STAMP)
	@$(PY) -m ruff check rsm tests
	@$(PY) -m mypy

bench-storage: $(STAMP)
	@$(PY) benchmarks/storage.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
