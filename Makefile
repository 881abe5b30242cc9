# Two commands do all the set-up on a fresh machine:
#   make run    creates .venv, installs dercosim, runs the default scenario
#   make test   creates .venv, installs dercosim with test extras, runs the tests
# (both install every extra at the versions constraints.txt pins; make docs builds the site into site/)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SCENARIO ?= scenarios/ieee33_households.toml

.PHONY: run test lint docs bench install lock clean

# strict editable mode: the package is a tree of links under build/ that mypy and IDEs follow; a module, bundled
# scenario or data file added later needs the install again, which the list of them (.venv/.modules, rewritten
# only when it changes) triggers
MODULES := $(shell find . \( -name '*.py' -o -name '*.toml' -o -name '*.vy' -o -name '*.csv' \) -not -path './.venv/*' -not -path './build/*' -not -path './tests/*' \
             -not -path './benchmarks/*' -not -path './examples/*' -not -path './docs/*' -not -path './site/*' -not -path './runs/*' -not -path './.git/*' | sort)

$(VENV)/.modules: FORCE
	@mkdir -p $(VENV)
	@echo '$(MODULES)' | cmp -s - $@ || echo '$(MODULES)' > $@

# every extra, each package at the version constraints.txt pins (the set CI tests)
EXTRAS := all,test,lint,docs

$(VENV)/.installed: pyproject.toml constraints.txt $(VENV)/.modules
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]' --config-settings editable_mode=strict
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
	$(BIN)/ruff check .
	$(BIN)/mypy -p dercosim

# the documentation site (MkDocs + Material) into site/; --strict: a broken link or reference fails the build.
# The scenario and command-line references are generated first (docs/gen_reference.py)
docs: $(VENV)/.installed
	$(BIN)/python docs/gen_reference.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# constraints.txt again from a fresh venv with the loose ranges of pyproject.toml resolved today
lock:
	rm -rf .lockvenv && $(PYTHON) -m venv .lockvenv
	.lockvenv/bin/python -m pip install --quiet --upgrade pip
	.lockvenv/bin/python -m pip install --quiet -e '.[$(EXTRAS)]'
	{ sed -n '1,3p' constraints.txt; .lockvenv/bin/python -m pip freeze --exclude-editable; } > constraints.new
	mv constraints.new constraints.txt && rm -rf .lockvenv

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/powerflow.py
	$(BIN)/python benchmarks/pms.py
	$(BIN)/python benchmarks/mpc.py
	$(BIN)/python benchmarks/mpcinputs.py
	$(BIN)/python benchmarks/admm.py
	$(BIN)/python benchmarks/aggregator.py
	$(BIN)/python benchmarks/contract.py
	$(BIN)/python benchmarks/fullstack.py --scaling
	$(BIN)/python benchmarks/solverfloor.py
	$(BIN)/python benchmarks/pricemaker.py
	$(BIN)/python benchmarks/gym.py
	$(BIN)/python benchmarks/dataload.py
	$(BIN)/python benchmarks/report.py

clean:
	rm -rf $(VENV) runs site .pytest_cache *.egg-info
