# SAFER Exchange — the two commands a newcomer needs:
#   make demo   run the whole flow on synthetic data (on a local Apache Kafka)
#   make test   lint, type-check and run every test
# Both create or reuse .venv and install what they need from PyPI, and fetch the
# pinned Apache Kafka jars from Maven Central (needs Java 17+ and Maven).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint unit bench clean help kafka browser

help:
	@echo "make demo   run the demo on a local Apache Kafka"
	@echo "make kafka  fetch and check the pinned Apache Kafka jars (done by demo and test)"
	@echo "make test   lint, type-check and run all tests (installs Debian's chromium for the browser tests)"
	@echo "make bench  run the benchmarks (prints ratios; the audit one writes ~1.7 GB to a temp dir)"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "SAFER Exchange needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

kafka: $(STAMP)
	$(BIN)/safer kafka install

demo: kafka
	$(BIN)/safer demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The web app's browser tests drive Debian's chromium through Playwright (never a
# browser that Playwright downloads itself). Installed with apt as root, or through
# sudo without a password; otherwise the step says what to run.
SUDO := $(shell test "$$(id -u)" = 0 || echo sudo -n)
browser:
	@command -v chromium >/dev/null || { \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	} || { echo "could not install chromium: run 'sudo apt-get install chromium' and try again"; exit 1; }

test: lint kafka browser
	$(BIN)/python -m pytest -q -rs -p no:cacheprovider --durations=15

bench: $(STAMP)
	$(BIN)/python bench/bench_router.py
	$(BIN)/python bench/bench_scale_out.py
	$(BIN)/python bench/bench_produce.py
	$(BIN)/python bench/bench_plan_pool.py
	$(BIN)/python bench/bench_latency.py
	$(BIN)/python bench/bench_decide.py
	$(BIN)/python bench/bench_week.py
	$(BIN)/python bench/bench_audit.py

clean:
	rm -rf $(VENV) .safer .mypy_cache .ruff_cache .pytest_cache
	@echo "the Kafka jars stay cached in ~/.cache/safer-exchange (delete it to fetch again)"
