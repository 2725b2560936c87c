# Two entry points, both idempotent: `make quickstart` (the main job) and `make test`.
# They create ./.venv, install the torch/torchvision pair first, then this package.
# Users with another CUDA override the pair, e.g.
#   make test TORCH_SPEC="torch==2.5.1 torchvision==0.20.1 --index-url https://download.pytorch.org/whl/cu121"

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
QUICKSTART_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup quickstart test mutation clean-venv

setup: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install "setuptools>=65" wheel
	$(PY) -m pip install $(TORCH_SPEC)
	$(PY) -m pip install --no-build-isolation -e ".[test,face]"
	$(PY) -m pip check
	touch $(STAMP)

quickstart: $(STAMP)
	$(PY) -m basicsr_sinca.quickstart $(QUICKSTART_ARGS)

test: $(STAMP)
	$(PY) -m pytest -q tests $(PYTEST_ARGS)

# plant each bug of tests/mutations.py in a temporary copy and check its tests catch it; writes docs/mutation.md
mutation: $(STAMP)
	$(PY) scripts/mutation_check.py --write docs/mutation.md

clean-venv:
	rm -rf $(VENV)
