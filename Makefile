# Two commands: `make run` and `make test`. Each sets up .venv on first use; the
# install is keyed on pyproject.toml, so a second call installs nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.drivestack-installed
OUT    ?= out/run
PYTEST_ARGS ?= -n 2

.PHONY: run test bench towns setup clean

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/drivestack drive --scenario default --agent expert --out $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m sim.bench

towns: $(STAMP)
	$(BIN)/python -m sim.towns.generate_towns

clean:
	rm -rf $(VENV) out build *.egg-info
