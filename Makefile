# Quick start: `make demo` (a small real training run on CPU) and `make test` (the test suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DATA ?= .cache/demo
PYTEST_ARGS ?=

.PHONY: install demo test test-fast bench bench-attention lint clean

install: $(VENV)/.installed

# Re-installs whenever pyproject.toml changes; a fresh clone gets a fresh venv.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# A fresh run every time: auto_resume would otherwise continue from the last demo checkpoint.
demo: install
	$(PY) tools/build_demo_data.py --out $(DEMO_DATA)
	rm -rf runs/demo
	$(PY) -m internevo_jax.train --config configs/demo.py --launcher local

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

test-fast: install
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS) tests

# Side-by-side train-step throughput; see benchmarks/RESULTS.md for recorded numbers.
bench: install
	$(PY) benchmarks/bench_train_step.py --config configs/demo.py --set data.train_folder=None \
		--set data.valid_every=0 --variant model.scan_layers=False --variant model.scan_layers=True \
		--steps 10

# Attention fwd+bwd, every backend side by side (the full case needs a GPU or TPU; --small on CPU).
bench-attention: install
	$(PY) benchmarks/attention.py $(BENCH_ARGS)

lint: install
	$(PY) -m ruff check internevo_jax tools tests benchmarks examples
	$(PY) -m ruff format --check internevo_jax tools tests benchmarks examples

clean:
	rm -rf $(VENV) .cache runs .pytest_cache
