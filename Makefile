# Two commands do all the set-up on a fresh machine:
#   make run    creates .venv, installs dercosim, runs the default scenario
#   make test   creates .venv, installs dercosim with test extras, runs the tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SCENARIO ?= scenarios/ieee33_households.toml

.PHONY: run test lint bench install clean

# strict editable mode: the package is a tree of links under build/ that mypy and IDEs follow; a module, bundled
# scenario or data file added later needs the install again, which the list of them (.venv/.modules, rewritten
# only when it changes) triggers
MODULES := $(shell find . \( -name '*.py' -o -name '*.toml' -o -name '*.vy' -o -name '*.csv' \) -not -path './.venv/*' -not -path './build/*' -not -path './tests/*' \
             -not -path './benchmarks/*' -not -path './examples/*' -not -path './runs/*' -not -path './.git/*' | sort)

$(VENV)/.modules: FORCE
	@mkdir -p $(VENV)
	@echo '$(MODULES)' | cmp -s - $@ || echo '$(MODULES)' > $@

$(VENV)/.installed: pyproject.toml $(VENV)/.modules
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]' --config-settings editable_mode=strict
	touch $@

.PHONY: FORCE
FORCE:

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/dercosim run $(SCENARIO)

# one worker per core; a module's tests stay on one worker (its fixtures are built once)
test: $(VENV)/.installed
	$(BIN)/python -m pytest -q -n auto --dist loadscope

# ruff, and mypy on the installed package (the strict editable install lets it follow dercosim.*)
lint: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet 'ruff>=0.6' 'mypy>=1.10'
	$(BIN)/ruff check .
	$(BIN)/mypy -p dercosim

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
