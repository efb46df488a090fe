# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test install lint bench clean

$(STAMP): requirements.txt requirements-test.txt scripts/install.sh pyproject.toml
	scripts/install.sh $(VENV) requirements-test.txt
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) app.py

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff (lint and format), mypy on crowd/ and storage/, and the import-linter contracts in
# pyproject.toml (the layers ui -> service -> rounds -> domain -> storage).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) bench/serve.py

clean:
	rm -rf $(VENV) .pytest_cache
