# Quick start: `make demo` (a small real training run on CPU) and `make test` (the test suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DATA ?= .cache/demo
PYTEST_ARGS ?=
# pytest-xdist workers; one test file runs in one worker (module fixtures are built once)
TEST_WORKERS ?= 2

.PHONY: install demo demo-moe test test-fast bench bench-gpu bench-attention bench-moe lint clean

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

# The same with a mixture-of-experts model: a tiny Mixtral, 4 experts top-2 (configs/demo_moe.py).
demo-moe: install
	$(PY) tools/build_demo_data.py --out $(DEMO_DATA)
	rm -rf runs/demo_moe
	$(PY) -m internevo_jax.train --config configs/demo_moe.py --launcher local

test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS) tests

test-fast: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow" $(PYTEST_ARGS) tests

# The CPU performance check of the train step: ours (`fit` in-process) next to a plain hand-written JAX
# step of the same model (benchmarks/plain_step.py), (a) micro_bsz 4 x micro_num 1, one pack of four
# windows; (b) micro_bsz 1 x micro_num 4, accumulation. BENCH_ARGS="--write benchmarks/RESULTS.md" records.
bench: install
	$(PY) benchmarks/bench_train_step.py --config configs/bench_cpu.py --plain --steps 10 $(BENCH_ARGS)
	$(PY) benchmarks/bench_train_step.py --config configs/bench_cpu.py --set data.micro_bsz=1 \
		--set data.micro_num=4 --plain --steps 10 $(BENCH_ARGS)

# The GPU plan: the 1.5B InternLM (configs/bench_1p5b.py) through the real CLI, one process per
# variant (mock data, bin/meta data, activation checkpointing, seq 8192), appended to RESULTS.md.
bench-gpu: install
	$(PY) benchmarks/train_throughput.py --write benchmarks/RESULTS.md $(BENCH_ARGS)

# Attention fwd+bwd, every backend side by side (the full case needs a GPU or TPU; --small on CPU).
bench-attention: install
	$(PY) benchmarks/attention.py $(BENCH_ARGS)

# The MoE layer fwd+bwd: GShard vs Dropless, 8 and 64 experts, tiled vs ragged_dot grouped matmuls,
# next to the dense MLP of the active experts' FLOPs (CPU: a few minutes on 2 cores).
bench-moe: install
	$(PY) benchmarks/bench_moe.py $(BENCH_ARGS)

lint: install
	$(PY) -m ruff check internevo_jax tools tests benchmarks examples
	$(PY) -m ruff format --check internevo_jax tools tests benchmarks examples

clean:
	rm -rf $(VENV) .cache runs .pytest_cache
