# gnnzero: `make demo` and `make test` work on a fresh machine (2 cores, no GPU).
# The venv is created and filled once; a stamp file makes later runs skip set-up.
PYTHON     ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
PIP        := $(PY) -m pip
# CPU build from local disk; override for a GPU build, e.g.
#   make install TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
STAMP      := $(VENV)/.gnnzero-installed
PYTEST_ARGS ?=
DEMO_ARGS  ?=
BENCH_ARGS ?=

.PHONY: install demo test test-fast bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel

$(STAMP): $(PY) setup.py Makefile
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install $(TORCH_SPEC)
	$(PIP) install -q --no-build-isolation -e ".[dev,bench]"
	@# torch-scatter / torch-sparse have no wheels for this torch: build from source
	@# against the installed torch (pip caches the built wheels, so this is slow once).
	@$(PY) -c "import torch_scatter" 2>/dev/null || $(PIP) install --no-build-isolation torch-scatter
	@$(PY) -c "import torch_sparse" 2>/dev/null || $(PIP) install --no-build-isolation torch-sparse
	$(PY) -c "import torch_geometric.typing as t; assert t.WITH_TORCH_SPARSE, 'torch-sparse failed to load'"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" deepspeed launch/train.py --ds_config ds_configs/zero2.json \
		--output-dir runs/demo $(DEMO_ARGS)

test: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q tests $(PYTEST_ARGS)

# Everything but the tests that start DeepSpeed / launch/train.py / a benchmark script (marked e2e).
test-fast: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q tests -m "not e2e" $(PYTEST_ARGS)

bench: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf runs .cache .pytest_cache
