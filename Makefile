# Set-up and checks on a fresh machine: `make test` runs the tests, `make run-test` runs the pipeline
# on the bundled synthetic data. Both install everything they need (Python venv, Nextflow).

PYTHON   ?= python3
VENV     ?= .venv
OUTDIR   ?= results/test
TESTDATA := build/test_data
NEXTFLOW := scripts/nextflow
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup nextflow-runtime test-data lint test run-test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $@

nextflow-runtime:
	$(NEXTFLOW) -version >/dev/null

setup: $(VENV)/.installed nextflow-runtime

$(TESTDATA)/samplesheet.csv: $(VENV)/.installed $(wildcard src/cell2location_nf/simulate/*.py src/cell2location_nf/io/*.py)
	$(VENV)/bin/cell2location-nf make-test-data --outdir $(TESTDATA)

test-data: $(TESTDATA)/samplesheet.csv

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests bin/cell2location-nf

test: setup lint test-data
	$(VENV)/bin/python -m pytest

run-test: setup test-data
	$(NEXTFLOW) run . -profile test --outdir $(OUTDIR)
	@echo "Results are in $(abspath $(OUTDIR))"

clean:
	rm -rf build work results .nextflow .nextflow.log*
