# cropssl — run `make help` for the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Real WorldCereal files used by the demo when present (else the bundled synthetic generator).
DATA ?= ../shared/data/worldcereal
WORK ?= work
STEPS ?= 300

.PHONY: help install demo test test-fast test-all lint format bench clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	$(BIN)/pip install -e '.[dev]'
	touch $@

install: $(BIN)/.installed ## Create .venv and install cropssl with its dev tools

demo: install ## Shard the bundled data, pre-train MAE for a few minutes on CPU, print where results are
	$(BIN)/cropssl-demo --data $(DATA) --work $(WORK) --steps $(STEPS)

test: install ## Run the test suite except tests marked slow
	$(BIN)/python -m pytest -m "not slow" -q

test-fast: install ## Quick loop: not-slow tests, failed first, stop at the first failure
	$(BIN)/python -m pytest -m "not slow" -q -x --ff

test-all: install ## Run every test, slow ones included (what CI runs)
	$(BIN)/python -m pytest -q

lint: install ## ruff lint + format check
	$(BIN)/ruff check src tests experiments
	$(BIN)/ruff format --check src tests experiments

format: install ## Apply ruff formatting and autofixes
	$(BIN)/ruff check --fix src tests experiments
	$(BIN)/ruff format src tests experiments

bench: install ## Benchmarks: ingest, shards, stream, encoder, training steps and embedding vs the official Presto code
	$(BIN)/python experiments/benchmarks/run.py --data $(DATA)
	$(BIN)/python experiments/benchmarks/bench_ingest.py --data $(DATA)
	$(BIN)/python experiments/benchmarks/bench_data.py --pixels 1000000
	$(BIN)/python experiments/benchmarks/vs_presto.py
	$(BIN)/python experiments/benchmarks/attention_bound.py
	$(BIN)/python experiments/benchmarks/cpu_ceiling.py

clean: ## Remove the work dir, runs and caches (keeps .venv)
	rm -rf $(WORK) runs multirun outputs .pytest_cache .ruff_cache
