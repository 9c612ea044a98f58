# Set-up and checks on a fresh machine: `make test` runs the tests, `make run-test` runs the pipeline
# on the bundled synthetic data. Both install everything they need (Python venv, Nextflow).

PYTHON   ?= python3
VENV     ?= .venv
OUTDIR   ?= results/test
TESTDATA := build/test_data
NEXTFLOW := scripts/nextflow
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup lock nextflow-runtime browser test-data lint test run-test bench bench-upstream-env clean

# Installs exactly the pinned dependencies of containers/*.lock (no resolver at install time). The images'
# runtime lock goes first and `pip check` proves it complete on its own, as the images install it; then the
# test tools. No pip cache: torch's CUDA wheels would otherwise be kept twice on disk (about 3 GB more).
PIP := $(VENV)/bin/python -m pip --quiet --no-cache-dir
$(VENV)/.installed: pyproject.toml containers/requirements.lock containers/requirements-test.lock
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install --no-deps -r containers/requirements.lock
	$(PIP) install --no-deps -e .
	$(VENV)/bin/python -m pip check
	$(PIP) install --no-deps -r containers/requirements-test.lock
	$(VENV)/bin/python -m pip check
	touch $@

# Re-pin containers/*.lock after a change of pyproject.toml's dependencies.
lock:
	scripts/lock-dependencies

nextflow-runtime:
	$(NEXTFLOW) -version >/dev/null

setup: $(VENV)/.installed nextflow-runtime

# Debian's Chromium, for the tests that open the MultiQC report and a notebook in a real browser.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

$(TESTDATA)/samplesheet.csv: $(VENV)/.installed $(wildcard src/cell2location_nf/simulate/*.py src/cell2location_nf/io/*.py)
	$(VENV)/bin/cell2location-nf make-test-data --outdir $(TESTDATA)

test-data: $(TESTDATA)/samplesheet.csv

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests bench bin/cell2location-nf
	$(VENV)/bin/hadolint containers/cpu/Dockerfile containers/cuda/Dockerfile

test: setup browser lint test-data
	$(VENV)/bin/python -m pytest

run-test: setup test-data
	$(NEXTFLOW) run . -profile test --outdir $(OUTDIR)
	@echo "Results are in $(abspath $(OUTDIR))"

# The performance benchmarks of bench/RESULTS.md (hours with upstream; see bench/README.md). Upstream
# cell2location runs too when bench/.venv-upstream exists (make bench-upstream-env); reused when done before.
BENCH_THREADS ?= 1
bench: setup
	$(VENV)/bin/python bench/run_benchmark.py --seeds 0 1 --threads $(BENCH_THREADS)
	$(VENV)/bin/python bench/run_reference_benchmark.py --seeds 0 1 --threads $(BENCH_THREADS)
	$(VENV)/bin/python bench/profile_step.py --threads $(BENCH_THREADS)
	$(VENV)/bin/python bench/run_benchmark.py --grid 25 40 --n-genes 3000 --n-types 20 --seeds 0 \
		--threads $(BENCH_THREADS) --upstream-epochs 300
	$(VENV)/bin/python bench/run_scale.py --batch-sizes 5000 --epochs 20 --threads 2

bench-upstream-env: setup
	bash bench/setup_upstream.sh

clean:
	rm -rf build work results .nextflow .nextflow.log*
