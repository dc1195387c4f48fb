# normexp: `make reproduce` and `make test` work on a fresh machine (Python 3.10+, package registries only).
PYTHON ?= python3
VENV ?= .venv
CLAIM ?= ioffe2015-fig1
SCALE ?= cpu
# Extra Hydra overrides for `make reproduce`, space-separated: make reproduce OVERRIDES="data.download=true seed=0,1"
OVERRIDES ?=
# CPU scales run one process per core; a paper-scale grid on a GPU box runs in process (launcher=joblib gpus=N spreads it).
LAUNCHER ?= $(if $(filter cpu smoke,$(SCALE)),joblib,basic)
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install data reproduce test lint format clean-runs wheels gpu-check

install: $(STAMP)

# The venv is rebuilt when the dependencies change.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,mnist]"
	touch $(STAMP)

# Offline data from Debian's packages (Fashion-MNIST, fortunes); the paper scale downloads through torchvision.
data:
	@if [ -d /usr/share/datasets/fashion-mnist ] && [ -d /usr/share/games/fortunes ]; then \
		echo "offline data present"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist fortunes >/dev/null; \
	else \
		echo "install Debian's dataset-fashion-mnist and fortunes (sudo apt-get install ...), or use data.download=true"; \
	fi

reproduce: install data
	$(BIN)/normexp reproduce $(CLAIM) --scale $(SCALE) --override launcher=$(LAUNCHER) $(foreach o,$(OVERRIDES),--override $(o))

test: install data
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check normexp tests scripts
	$(BIN)/ruff format --check normexp tests scripts

format: install
	$(BIN)/ruff format normexp tests scripts
	$(BIN)/ruff check --fix normexp tests scripts

clean-runs:
	rm -rf runs

# The GPU check (scripts/gpu_check.sh): its output folder, and the wheels it installs on a box without network.
OUT ?= gpu-check
WHEELS ?= .whl

wheels:
	scripts/prepare_wheels.sh $(WHEELS)

gpu-check:
	scripts/gpu_check.sh $(OUT) --wheels $(WHEELS)
