# Two commands on a fresh machine:  make demo  |  make test
# Both create (or reuse) .venv with the pinned versions in requirements-lock.txt.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test venv clean-venv bench-quick docs-api

$(STAMP): pyproject.toml requirements-lock.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements-lock.txt -e ".[test]"
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m edgecond.demo

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests

# API reference from the docstrings (pdoc): out/docs-api/index.html
DOCS_MODULES := edgecond edgecond.buffer edgecond.budget edgecond.units edgecond.errors edgecond.data \
	edgecond.models edgecond.condense edgecond.evaluate edgecond.show edgecond.progress edgecond.export \
	edgecond.deploy edgecond.continual edgecond.federated edgecond.transfer edgecond.report edgecond.apps edgecond.apps.edge \
	edgecond.apps.avalanche edgecond.apps.flower_client edgecond.apps.flower_server edgecond.apps.flower_config \
	edgecond.apps.flower_records
docs-api: $(STAMP)
	$(PY) -m pdoc --docformat restructuredtext -o out/docs-api $(DOCS_MODULES)

clean-venv:
	rm -rf $(VENV)
