# The two commands of the README: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv and install clsp with its extras the first time; later runs reuse it.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.clsp-installed

.PHONY: demo test install data clean-venv gpu-kit gpu-check-dry-run

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

# The GPU run kit (benchmarks/results/README.md): wheels the lent GPU machine lacks, Fashion-MNIST (clsp runs from src/).
gpu-kit: $(STAMP) data
	$(BIN)/python scripts/gpu_kit.py --kit gpu-kit

# The kit's proof on this CPU: a fresh environment installs from gpu-kit/ alone and runs every step at micro sizes.
gpu-check-dry-run: gpu-kit
	PYTHON=$(BIN)/python benchmarks/gpu_check.sh --dry-run

clean-venv:
	rm -rf $(VENV)
