# gnnzero: `make demo` and `make test` work on a fresh machine (2 cores, no GPU).
# The venv is created and filled once; a stamp file makes later runs skip set-up.
PYTHON     ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
PIP        := $(PY) -m pip
# CPU build from local disk; override for a GPU build, e.g.
#   make install TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
# e.g. --system-site-packages: reuse a base image's CUDA torch (Dockerfile)
VENV_FLAGS ?=
STAMP      := $(VENV)/.gnnzero-installed
PYTEST_ARGS ?=
DEMO_ARGS  ?=
BENCH_ARGS ?=

.PHONY: install demo test test-fast bench gpu-wheels clean

$(PY):
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
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

# Wheels that benchmarks/gpu_check.sh installs on the lent GPU machine, whose image (CPython 3.12,
# torch, torch_geometric, numpy, scipy, msgpack, ninja, ...) reaches no registry.  Exactly the
# versions in $(VENV), for CPython 3.12 / manylinux x86-64; DeepSpeed publishes no wheel, so
# its sdist is built here (pure Python, ops JIT-compiled there).  Versions left from an
# earlier .venv are removed: two of one package stop the install there.  COMMIT names the
# checkout the wheels travel with (the GPU machine gets no .git).
GPU_WHEELS      ?= .whl
GPU_WHEEL_NAMES := deepspeed hjson pydantic pydantic-core annotated-types typing-inspection \
                   typing-extensions pymetis ninja py-cpuinfo msgpack
GPU_PLATFORM    := --only-binary=:all: --python-version 3.12 --implementation cp \
                   --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
                   --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
                   --platform manylinux1_x86_64

gpu-wheels: $(STAMP)
	@mkdir -p $(GPU_WHEELS)
	@set -e; for name in $(GPU_WHEEL_NAMES); do \
	  version=$$($(PY) -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" $$name); \
	  stem=$$(echo $$name | tr - _); \
	  for old in $(GPU_WHEELS)/$$stem-*.whl; do \
	    case $$old in $(GPU_WHEELS)/$$stem-$$version-*|"$(GPU_WHEELS)/$$stem-*.whl") ;; *) rm -v "$$old";; esac; \
	  done; \
	  if ls $(GPU_WHEELS)/$$stem-$$version-*.whl >/dev/null 2>&1; then continue; fi; \
	  echo "$$name==$$version"; \
	  if [ $$name = deepspeed ]; then \
	    DS_BUILD_OPS=0 $(PIP) wheel -q --no-deps --no-build-isolation -w $(GPU_WHEELS) $$name==$$version; \
	  else \
	    $(PIP) download -q --no-deps $(GPU_PLATFORM) -d $(GPU_WHEELS) $$name==$$version; \
	  fi; \
	done
	@{ git rev-parse --short HEAD; git status --porcelain --untracked-files=no | grep -q . \
	   && echo "+ uncommitted changes" || true; } | paste -sd' ' > $(GPU_WHEELS)/COMMIT
	@ls $(GPU_WHEELS)/*.whl | wc -l | xargs echo "wheels:"; du -ch $(GPU_WHEELS)/*.whl | tail -1

clean:
	rm -rf runs .cache .pytest_cache
