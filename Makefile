# Two entry points (README): `make demo` and `make test`. Both build .venv idempotently.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install

$(STAMP): pyproject.toml Makefile benchmarks/interop/package.json
	@command -v apt-get >/dev/null && ! ldconfig -p | grep -q libusb-1.0.so.0 && \
	  (apt-get update -qq && apt-get install -y -qq libusb-1.0-0) || true
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU machines: the local CPU wheel; never let a dependency pull a multi-GB CUDA build.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test]"
	# an independent reader of our exports for tests/test_formats.py (skipped there without node)
	command -v npm >/dev/null && npm install -s --no-audit --no-fund --prefix benchmarks/interop || true
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/esd-gs train --preset demo

test: $(STAMP)
	$(BIN)/python -m pytest -q tests
