# The two commands of the README: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv and install clsp with its extras the first time; later runs reuse it.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.clsp-installed

.PHONY: demo test install data clean-venv

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch and torchvision come together from PyPI (README, "The two commands": a lone CPU wheel of torch breaks torchvision).
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

install: $(STAMP)

# Make Fashion-MNIST (and Chromium for the report test) available; prints why when it cannot.
data:
	@bash scripts/provision.sh

demo: $(STAMP) data
	$(BIN)/clsp pipeline --config configs/demo.yaml

test: $(STAMP) data
	$(BIN)/python -m pytest

clean-venv:
	rm -rf $(VENV)
