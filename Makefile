# Two commands set up everything on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.alpr-installed

.PHONY: demo test test-slow bench bench-quick faults gpu-check stack-up stack-down lint clean

# nginx (a system package) runs the registry cache of the production profile; its tests and the fleet benchmark use
# it. Installed here only where that starts nothing (root with apt-get, no systemd: containers, CI machines); else,
# or when the install fails, a note: those tests then skip and say why.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ ! -d /run/systemd/system ]; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q nginx-light >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q nginx-light >/dev/null 2>&1; }; \
	  fi; \
	  command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || \
	    echo "note: nginx is not installed: the registry cache needs it (sudo apt-get install nginx-light)"; }
	touch $(STAMP)

## demo: start the embedded stack, train/export/register both detectors, print versions and UI addresses
demo: $(STAMP)
	$(BIN)/alpr demo

## test: lint, type-check and the default test suite (no GPU, no network; 10 to 22 minutes on 2 cores, by CPU)
test: $(STAMP)
	$(BIN)/ruff check alpr_pipelines alpr_pipelines_tests scripts bench
	$(BIN)/mypy alpr_pipelines
	$(BIN)/pytest -m "not slow and not gpu"

## test-slow: the long tests (the full demo graph, longer trainings)
test-slow: $(STAMP)
	$(BIN)/pytest -m slow

## bench: every figure of docs/benchmarks.md beside its baseline (medians, ratios; about 2 hours on 2 cores, the reader's training included); bench-quick: smoke run
bench: $(STAMP)
	$(BIN)/python bench/run_all.py
bench-quick: $(STAMP)
	$(BIN)/python bench/run_all.py --quick

## faults: the fault suite on real servers (edge kills, tampered versions, auth matrix, bad datasets; ~15 min)
faults: $(STAMP)
	mkdir -p .alpr/bench/results
	$(BIN)/python bench/faults.py --json .alpr/bench/results/faults.json

## gpu-check: verify CUDA training, GPU ONNX export and TensorRT engines on a machine with a GPU
gpu-check: $(STAMP)
	$(BIN)/python scripts/verify_gpu.py

stack-up: $(STAMP)
	$(BIN)/alpr stack up
stack-down: $(STAMP)
	$(BIN)/alpr stack down

# clean: stops the stack, then deletes the state folder ($$ALPR_HOME, default .alpr); stops if the stack does not.
clean:
	@home="$${ALPR_HOME:-.alpr}"; \
	case "$$(cd "$$home" 2>/dev/null && pwd -P)" in /|"$$HOME"|"$$(pwd -P)") \
	  echo "refusing to delete ALPR_HOME=$$home"; exit 1;; esac; \
	if [ -x $(BIN)/alpr ]; then ALPR_HOME="$$home" $(BIN)/alpr stack down || \
	  { echo "stack down failed: $$home is kept (stop the services, then run make clean again)"; exit 1; }; fi; \
	rm -rf "$$home"
