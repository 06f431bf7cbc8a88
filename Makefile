# The two README commands, `./quickstart run` (main job) and `./quickstart test` (test suite),
# bootstrap make itself and then run `make run` / `make test`.
# Both set up everything they need first: system packages, the virtualenv, the models.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test setup system system-runtime venv models bench clean

run: system-runtime venv models
	$(BIN)/dancewire up

test: system venv models
	$(BIN)/python -m pytest -q

setup: system venv models

system:
	bash scripts/system-deps.sh

system-runtime:
	bash scripts/system-deps.sh --runtime

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q 'torch==2.13.0'
	$(BIN)/pip install -q -e '.[dev,mic,postgres]'
	touch $(STAMP)

models: venv
	$(BIN)/dancewire models build

bench: venv models
	$(BIN)/dancewire bench latency --json out/bench-latency.json

clean:
	rm -rf $(VENV) out artifacts
