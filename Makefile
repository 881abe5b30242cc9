# Two commands do all the set-up on a fresh machine:
#   make run    creates .venv, installs dercosim, runs the default scenario
#   make test   creates .venv, installs dercosim with test extras, runs the tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SCENARIO ?= scenarios/ieee33_households.toml

.PHONY: run test bench install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/dercosim run $(SCENARIO)

# one worker per core; a module's tests stay on one worker (its fixtures are built once)
test: $(VENV)/.installed
	$(BIN)/python -m pytest -q -n auto --dist loadscope

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/powerflow.py
	$(BIN)/python benchmarks/pms.py
	$(BIN)/python benchmarks/mpc.py
	$(BIN)/python benchmarks/admm.py
	$(BIN)/python benchmarks/aggregator.py
	$(BIN)/python benchmarks/contract.py
	$(BIN)/python benchmarks/fullstack.py --scaling
	$(BIN)/python benchmarks/solverfloor.py
	$(BIN)/python benchmarks/pricemaker.py

clean:
	rm -rf $(VENV) runs .pytest_cache *.egg-info
