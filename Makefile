# The two commands a newcomer needs:  make run  (a whole region on this machine)  and  make test.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run run-celery stop test lint bench install

$(BIN)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
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
run: $(BIN)/.installed
	$(BIN)/python -m rpu demo start

## The same demo on the CeleryExecutor: Redis as broker, two Celery workers (worker-1, worker-2).
run-celery: $(BIN)/.installed
	$(BIN)/python -m rpu demo start --executor celery

stop: $(BIN)/.installed
	$(BIN)/python -m rpu demo stop

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/ingest_night.py
	$(BIN)/python benchmarks/extract.py
