# The two commands a newcomer needs:  make run  (a whole region on this machine)  and  make test.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run run-celery stop test lint bench install fuzz docs

# The run-time lock and the tools of the tests, the demo and the docs (requirements-dev.txt:
# never in the production image, which installs requirements.txt alone).
# setup.py and the .pyx: the compiled modules are rebuilt when one of them changes.
$(BIN)/.installed: requirements.txt requirements-dev.txt pyproject.toml setup.py plugins/rpu/formats/patient_reader.pyx \
		plugins/rpu/store/clean_rows.pyx
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

install: $(BIN)/.installed

## The tests: lint, then every test (they start PostgreSQL, SFTP and SMTP themselves).
test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -p no:cacheprovider -q

lint: $(BIN)/.installed
	$(BIN)/ruff check .

## A demo region on this machine: PostgreSQL, SFTP, SMTP, Airflow standalone, demo files.
run: $(BIN)/.installed docs
	$(BIN)/python -m rpu demo start
	@echo "  Guide en français (établissements, ARS, régions) : $(CURDIR)/site/index.html (sources : docs/fr/)"

## The same demo on the CeleryExecutor: Redis as broker, two Celery workers (worker-1, worker-2).
run-celery: $(BIN)/.installed docs
	$(BIN)/python -m rpu demo start --executor celery
	@echo "  Guide en français (établissements, ARS, régions) : $(CURDIR)/site/index.html (sources : docs/fr/)"

stop: $(BIN)/.installed
	$(BIN)/python -m rpu demo stop

## The French guide for establishments, the ARS and regions (docs/fr/) as a static site in site/.
docs: $(BIN)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --quiet --strict

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/ingest_night.py
	$(BIN)/python benchmarks/extract.py

## A longer fuzz run of the reader (both PATIENT readers), the validator, the loader and the compiled COPY rows (the suite runs 150 to 400 examples).
fuzz: $(BIN)/.installed
	RPU_FUZZ_EXAMPLES=$${RPU_FUZZ_EXAMPLES:-5000} $(BIN)/python -m pytest -p no:cacheprovider -q tests/test_hostile.py tests/test_patient_reader.py \
		tests/test_clean_rows.py -k "fuzzed or agree"
