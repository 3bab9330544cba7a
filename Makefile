# icefeed — two commands for a newcomer: `make demo` and `make test`. Each sets itself up.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint format unit integration chaos bench infra-check stack clean sim sim-long image image-test mutate mutate-quick

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
	$(PY) -m tests.mutants
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

## make mutate-quick: the ~20 hand-picked mutants that the unit tests must kill (part of make test)
mutate-quick: install
	$(PY) -m tests.mutants

## make mutate: mutmut over the pure core with the unit tier (docs/testing.md; ~10 min on 2 cores)
mutate: install
	rm -rf mutants && mkdir -p build
	nice -n 10 $(VENV)/bin/mutmut run >build/mutmut.log 2>&1 || { tail -n 40 build/mutmut.log; exit 1; }
	$(PY) -m tests.mutants.score --min-domain 90

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
	rm -rf .icefeed build mutants .pytest_cache .mypy_cache .ruff_cache
