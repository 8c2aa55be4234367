# kdrepro: every target sets up .venv on its own when it is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= demo
NB ?=
#: make reproduce: parallel training workers before the notebooks (empty: 2, or none with NB; 0: the notebooks
#: train the runs one at a time)
JOBS ?=
#: every extra: `make setup` is the development environment (pyproject.toml lists what each one adds)
EXTRAS := notebooks,test,cluster,tensorboard,docs
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))

.PHONY: setup test test-fast reproduce notebooks lab bench site clean-venv help

help:
	@echo "make setup      create .venv from constraints.txt (exact versions) with kdrepro (editable) and every extra"
	@echo "make test       all tests: pytest + nbval on the stored notebooks (smoke profile)"
	@echo "make reproduce  train the profile's runs in JOBS workers (default 2), then run every notebook headless [PROFILE=demo] [NB=03: one notebook, its runs trained inside it] [JOBS=N]"
	@echo "make notebooks  refresh the stored notebook outputs (smoke profile) after a deliberate change"
	@echo "make bench      benchmark the fast path against the authors' training loop"
	@echo "make site       build/site: docs/ and every profile's executed notebooks as one static HTML site"
	@echo "make lab        open JupyterLab on notebooks/"

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (kdrepro)" >/dev/null
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests $(NOTEBOOKS) --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg

test-fast: $(STAMP)
	$(PY) -m pytest tests -m "not slow"

reproduce: $(STAMP)
	$(PY) -m kdrepro.reproduce --profile $(PROFILE) $(if $(NB),--notebook $(NB),) $(if $(JOBS),--jobs $(JOBS),$(if $(NB),,--jobs 2))

notebooks: $(STAMP)
	$(PY) -m kdrepro.reproduce --profile smoke --store-in-place

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root,)

bench: $(STAMP)
	$(PY) benchmarks/bench_kd.py
	$(PY) benchmarks/bench_bf16_cpu.py

site: $(STAMP)
	$(PY) tools/build_site.py

clean-venv:
	rm -rf $(VENV)
