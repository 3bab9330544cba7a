# icefeed — two commands for a newcomer: `make demo` and `make test`. Each sets itself up.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint format unit integration chaos bench infra-check stack clean sim sim-long image image-test

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## make demo: start the embedded stack, load the sample files, show the result, stop everything
demo: install
	$(PY) -m worker demo

## make test: lint + the whole suite (unit, integration on the real local stack, infra checks)
test: install lint
	$(PY) -m pytest -q -p no:cacheprovider
	bash infra/check.sh

lint: install
	$(VENV)/bin/ruff check worker tests load
	$(VENV)/bin/ruff format --check worker tests load
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## make format: rewrite the code in the house style (ruff format), then apply ruff's safe fixes
format: install
	$(VENV)/bin/ruff format worker tests load
	$(VENV)/bin/ruff check --fix worker tests load

unit: install
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

integration: install
	$(PY) -m pytest -q -p no:cacheprovider tests/integration

chaos: install
	$(PY) -m pytest -q -p no:cacheprovider tests/chaos

## make sim SEEDS=N: the deterministic fleet simulator over N seeds (docs/simulation.md)
SEEDS ?= 2000
sim: install
	$(PY) -m tests.sim --seeds $(SEEDS)

## make sim-long: 100 000 seeds (nightly)
sim-long: install
	$(PY) -m tests.sim --seeds 100000 --show 5

## make bench: the standard load scenario (not part of the suite); writes load/results/latest.json
bench: install
	$(PY) -m load run

infra-check:
	bash infra/check.sh

## make image: build the worker image from the Dockerfile (docker with a daemon; otherwise buildah,
## from a stand-in base image made locally with debootstrap; docs/image.md)
image:
	bash infra/image/build.sh

## make image-test: build the image and check it from outside (tests/image, also part of `make test`)
image-test: install
	$(PY) -m pytest -q -p no:cacheprovider tests/image

## make stack: the local stack in the foreground (Ctrl-C stops it)
stack: install
	$(PY) -m worker stack up --routes worker/samples/routes.toml

clean:
	rm -rf .icefeed build .pytest_cache .mypy_cache .ruff_cache
