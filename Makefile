# One place for set-up. `make bandit` (the main job) and `make test` (the suite) each set up a fresh
# machine first: a virtual environment in .venv with torch, then dqltoolkit and its dependencies.
#
# TORCH_SPEC is the one torch pin. It is installed before the package so that pyproject's range
# (torch>=2.3) is already satisfied and pip pulls no CUDA packages on a CPU machine. On a machine
# whose pip has no local CPU wheel, ask for one explicitly, e.g.
#   make setup TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.dqltoolkit-installed
PYTEST_ARGS ?=

.PHONY: setup bandit test test-all bench ablate wheel clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e '.[dev,mujoco,tensorboard,wandb,hub,export,ray,video]'
	touch $(STAMP)

# The main job: train Diffusion-QL on the 2-D bandit and show the result (runs/bandit/bandit.png).
bandit: setup
	$(BIN)/dqltoolkit train --agent diffusion-ql --env bandit2d-v0 --out runs/bandit

# The default suite (< 10 min on 2 cores); slow and benchmark tests are excluded by pyproject's addopts.
test: setup
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

# Everything, the long learning runs included.
test-all: setup
	$(BIN)/python -m pytest -n 2 -m "" $(PYTEST_ARGS)

bench: setup
	$(BIN)/dqltoolkit bench

ablate: setup
	$(BIN)/dqltoolkit ablate --env bandit2d-v0 --out runs/ablation

wheel: setup
	$(BIN)/python -m build --wheel --outdir dist .

clean:
	rm -rf $(VENV) build dist runs .pytest_cache
