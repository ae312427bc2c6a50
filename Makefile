# One command each: `make demo` runs the job on the embedded demo archive, `make test` runs
# the tests. Both create (or reuse) the virtualenv in .venv and install mmx into it with the
# `job` extra (torch, Ray, decoders); an analyst who only queries needs `pip install ".[query]"`.
VENV   ?= .venv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.mmx-installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[job,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) jobs/index_archive.py

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check mmx jobs tests

clean:
	rm -rf .mmx
