# kdgat: `make demo` runs the most complete real path; `make test` sets up, checks the house rules, runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.kdgat-installed
# Set to https://download.pytorch.org/whl/cpu to take torch's CPU build from PyTorch's index (empty: pip decides)
TORCH_INDEX ?=

.PHONY: all install lint test demo bench clean

all: test

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(TORCH_INDEX),$(PY) -m pip install -q torch==2.13.0 --index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The house rules (CONTRIBUTING.md): style, types, and the import contracts of the layer table in pyproject.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest --durations=25 $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) scripts/demo.py $(DEMO_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .import_linter_cache demo_out
