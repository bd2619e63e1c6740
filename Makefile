# waferstream: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast bench stack-up stack-down lint clean

# One pip resolve with every pin (torch 2.13.0 CPU build included), so pip
# never pulls a CUDA torch and faust/huggingface-hub agree on click.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[train,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/waferstream demo --wafers 50

test: install lint
	$(BIN)/waferstream schemas check
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/waferstream bench pipeline --wafers 3000 --json bench.json

test-fast: install
	$(BIN)/python -m pytest -q tests/unit tests/ml tests/producers

stack-up: install
	$(BIN)/waferstream stack up

stack-down: install
	$(BIN)/waferstream stack down

clean:
	-$(BIN)/waferstream stack down
	rm -rf $(VENV) .waferstream .pytest_cache
