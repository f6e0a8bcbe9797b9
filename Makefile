# Two commands cover the project: `make demo` (install, build the default dataset, train, caption) and
# `make test` (install, run the test suite); `make lint` runs the linter configured in pyproject.toml.
# Everything runs inside .venv, built from requirements.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MODEL ?= lstm

.PHONY: demo test lint results bench clean-venv

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python training.py --model $(MODEL)
	$(BIN)/python inference.py --model $(MODEL)

test: $(VENV)/.installed
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check .

results: $(VENV)/.installed
	$(BIN)/python results.py

bench: $(VENV)/.installed
	$(BIN)/python -m benchmarks.bench_rnn --cell lstm
	$(BIN)/python -m benchmarks.bench_transformer
	$(BIN)/python -m benchmarks.bench_cider
	$(BIN)/python -m benchmarks.bench_scst
	$(BIN)/python -m benchmarks.bench_att_lstm
	$(BIN)/python -m benchmarks.bench_grid_io

clean-venv:
	rm -rf $(VENV)
