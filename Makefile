# The two commands a user types: `make demo` and `make test`.
# Each creates .venv and installs the project with its test extras when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo sim-demo test test-slow sim lint bench-storage bench-peers clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --quiet -e '.[test,dev,fast]'
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
	@$(PY) -m ruff check rsm tests benchmarks
	@$(PY) -m mypy
	@$(PY) -m mypy benchmarks

bench-storage: $(STAMP)
	@$(PY) benchmarks/storage.py

# rsm against PySyncObj and etcd (docs/performance.md). etcd comes from Debian's
# etcd-server, installed here when missing and we are root; otherwise it is skipped.
$(VENV)/.installed-bench: $(STAMP)
	@$(PY) -m pip install --quiet -e '.[bench]'
	@touch $@

bench-peers: $(VENV)/.installed-bench
	@command -v etcd >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null; } \
		|| echo "etcd not installed (apt-get install etcd-server as root): it will be skipped"
	@$(PY) benchmarks/peers.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
