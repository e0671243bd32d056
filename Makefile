# zorb: common tasks. `make install` once, then `make run` / `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

# The editable install, redone only when what it builds from changes: the stamp is newer
# than pyproject.toml, setup.py and the C++ sources. The build's own chatter (setuptools,
# the compiler) goes to $(VENV)/install.log, shown only if the install fails.
STAMP := $(VENV)/.installed
INSTALL_LOG := $(VENV)/install.log
BUILD_INPUTS := pyproject.toml setup.py $(wildcard zorb/kernels/*.cc zorb/kernels/*.h)

.PHONY: install run test test-fast lint clean ui sweep experiment tables bench

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip > $(INSTALL_LOG) 2>&1 || { cat $(INSTALL_LOG); exit 1; }

install: $(STAMP)

$(STAMP): $(BUILD_INPUTS) | $(PY)
	@echo "installing zorb into $(VENV) (build log: $(INSTALL_LOG))"
	@$(PY) -m pip install --quiet -e '.[test]' > $(INSTALL_LOG) 2>&1 || { cat $(INSTALL_LOG); exit 1; }
	@touch $@

run: $(STAMP)
	$(PY) run.py

# A sweep run in parallel (one job per core): make sweep SWEEP="dataset=iris,xor seed=0,1,2"
SWEEP ?= dataset=iris,xor,two_spirals seed=0,1,2,3,4
sweep: $(STAMP)
	$(PY) run.py -m hydra/launcher=joblib $(SWEEP)

# A paper table's sweep (experiments/<name>.yaml): make experiment EXPERIMENT=paper_b
EXPERIMENT ?= paper_a
experiment: $(STAMP)
	$(PY) run.py -m experiment=$(EXPERIMENT)

# Markdown + CSV tables in tables/ from the latest sweep of every experiment in the store
# (MLFLOW_TRACKING_URI if set, else ./mlflow.db); one: make tables TABLES=paper_a
TABLES ?=
tables: $(STAMP)
	$(PY) scripts/tables.py $(TABLES)

# The MLflow UI for the runs' store (MLFLOW_TRACKING_URI if set, else ./mlflow.db), on 127.0.0.1 only.
UI_HOST ?= 127.0.0.1
UI_PORT ?= 5000
STORE ?= $(or $(MLFLOW_TRACKING_URI),sqlite:///$(CURDIR)/mlflow.db)
ui: $(PY)
	@echo "MLflow UI: http://$(UI_HOST):$(UI_PORT); an experiment's runs: http://$(UI_HOST):$(UI_PORT)/#/experiments/<id>?workflowType=machine_learning"
	$(PY) -m mlflow ui --backend-store-uri '$(STORE)' --host $(UI_HOST) --port $(UI_PORT) --workers 1

# Fit times against the flop-bound limit, peak memory, Adam's time to ZORB's error (scripts/bench.py --help)
bench: $(STAMP)
	$(PY) scripts/bench.py

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

clean:
	rm -rf outputs multirun tables .pytest_cache
