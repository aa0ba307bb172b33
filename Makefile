# Two commands on a fresh machine with Python 3.11+:
#   make demo   pretrain a small BERT on the embedded corpus, then fill in some blanks
#   make test   run the test suite (8 simulated CPU devices)
# Each creates or refreshes .venv (when setup.py changes) and installs what it needs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.flaxlm-installed
DEMO_WORKDIR ?= runs/demo
# XLA's CPU runtime maps fresh memory for every step's buffers; transparent huge pages cut the page
# faults ~60x and the step time by about a quarter here. Ignored where glibc is not the allocator.
export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1

.PHONY: demo test venv clean

venv: $(STAMP)

$(STAMP): setup.py Makefile
	@$(PYTHON) -c 'import sys; sys.exit("flaxlm needs Python 3.11+, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m flaxlm.main --config experiments/demo.py --workdir $(DEMO_WORKDIR)

test: $(STAMP)
	XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu $(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) runs build *.egg-info
