# Two entry points (see README): `make restore-samples` and `make test`. Both create and fill .venv as needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup restore-samples test lint

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,plot]'
	touch $(STAMP)

setup: $(STAMP)

restore-samples: $(STAMP)
	$(BIN)/dagn restore samples out/samples

# Two workers, whole files each: every worker starts its own Ray and SeaweedFS, and more would only share 2 cores.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=25

lint: $(STAMP)
	$(BIN)/python -m ruff check dagn pipeline jobs tests bench
