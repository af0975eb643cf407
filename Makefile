# `make run`: set up and serve on the embedded defaults (SQLite, no Twilio account needed), on
# loopback only and with Twilio's signature check off: a demo, never facing the internet.
# `make test`: set up and run the whole test suite (four pytest processes at once: tests/parallel.py).
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
	HOST=127.0.0.1 TWILIO_SIGNATURE_CHECK=off $(BIN)/python app.py

test: setup
	$(BIN)/python -m tests.parallel

bench: setup
	$(BIN)/python -m bench.calls
