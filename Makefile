# Two commands do all the set-up: `make run` and `make test` create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Test processes (pytest-xdist; each test file runs whole in one of them): auto, the
# default, starts one per core; JOBS=0 runs the suite in this one process.
JOBS ?= auto
STAMP := $(VENV)/.installed

.PHONY: run paper test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/microscale run $(ARGS)

paper: $(STAMP)
	$(VENV)/bin/microscale paper $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -n $(JOBS) --dist loadfile --durations=15 $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check microscale flows tests benchmarks
	$(VENV)/bin/ruff format --check microscale flows tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) paper-out microscale-store
