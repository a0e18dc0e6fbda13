# Two commands a newcomer needs: `make run` and `make test`. Everything else is for developers.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run demo test test-fast test-deploy test-kernel image lint bench venv clean soak sim-hunt

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## run: the main job: a local 3-node cluster on loopback, benched, kept running until Ctrl-C
run: $(STAMP)
	$(BIN)/ramster up

## demo: the local pool alone on the realistic corpus
demo: $(STAMP)
	$(BIN)/ramster demo

## test: lint, type-check and the whole suite
test: $(STAMP) lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## test-fast: the suite without the slow (chaos, container) tests
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m 'not slow' $(PYTEST_ARGS)

## image: the ramster:local image from this checkout; by default FROM a Debian base built here with
## debootstrap (root; no registry needed), or `make image BASE_IMAGE=python:3.11-slim`
BASE_IMAGE ?= ramster-base:bookworm
image: $(STAMP)
	if [ "$(BASE_IMAGE)" = ramster-base:bookworm ]; then deploy/build-base-image.sh; fi
	BASE_IMAGE=$(BASE_IMAGE) PYTHON=$(BIN)/python deploy/build-image.sh

## test-deploy: the compose cluster on the local Docker engine (root): bench, kill, partition, drain
test-deploy: $(STAMP)
	$(BIN)/python -m pytest tests/deploy $(PYTEST_ARGS)

## test-kernel: a Debian kernel in qemu swaps to ramster nbd and to a 3-node cluster (about 4 min)
test-kernel: $(STAMP)
	$(BIN)/python -m pytest tests/kernel $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check ramster tests benchmarks
	$(BIN)/ruff format --check ramster tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/pagestore.py --quick
	$(BIN)/python benchmarks/rpc.py --quick
	$(BIN)/python benchmarks/spill.py --quick

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis .ramster-dev build dist

## soak: the cluster simulation over many seeds (`make soak SEEDS=0..999 STEPS=200`, and
## EXPORTS=1 for NBD exports and operator actions); a failing seed prints its report and
## replays with `python -m ramster.testing.sim --seed N --steps S [--exports]`
SEEDS ?= 0..199
STEPS ?= 200
EXPORTS ?=
soak: $(STAMP)
	$(BIN)/python -m ramster.testing.sim --seeds $(SEEDS) --steps $(STEPS) --quiet $(if $(EXPORTS),--exports)

## sim-hunt: how many seeds the simulation needs to find each kind of failure it knows (the bugs
## of issue 23 among them); run it again once fixes land: each line should then say 0 failed
HUNT ?= 0..299
sim-hunt: $(STAMP)
	for kind in "invariant 10" "call slots" "which references" "under-replicated" \
		"unreadable" "load returned" "invariant 3"; do \
		echo "== $$kind"; \
		$(BIN)/python -m ramster.testing.sim --seeds $(HUNT) --steps $(STEPS) --quiet \
			--first-failure --match "$$kind" | grep -v '^ \|another failure'; \
	done
