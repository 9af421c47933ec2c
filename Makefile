# The README's two commands: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.edgeslim-installed
RUNS   ?= runs
BUDGET ?= 9m

.PHONY: demo demo-profile test test-all venv data pg clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

data:
	@scripts/ensure-fashion-mnist.sh

# PostgreSQL server binaries for the test of `edgeslim auto --worker` (never fatal: that test skips without them)
pg:
	@scripts/ensure-postgresql.sh

# the main job: train (or reuse) a reference ResNet-20, then the SLA search (max drop 0.5 points)
demo: $(STAMP) data
	$(PY) examples/auto_demo.py --out $(RUNS)/demo --budget $(BUDGET)

# the foundation walk-through: train LeNet-5, profile it, export it with verification
demo-profile: $(STAMP) data
	$(PY) examples/demo.py --out $(RUNS)/demo-profile

test: $(STAMP) data pg
	$(PY) -m pytest -q

test-all: $(STAMP) data pg
	$(PY) -m pytest -q -m "slow or not slow"

clean:
	rm -rf $(RUNS) build *.egg-info
