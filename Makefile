# `make run`: set up and serve on the embedded defaults (SQLite, no Twilio account needed).
# `make test`: set up and run the test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

.PHONY: setup run test demo bench
setup: $(BIN)/.installed

run: setup
	$(BIN)/flask --app app demo-business
	$(BIN)/python app.py

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python -m bench.calls
