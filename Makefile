# transferlab: two commands on a fresh clone.
#   make demo   -> .venv with CPU torch -> default grokking study -> prints the report path
#   make tour   -> every study's mini preset -> one offline page that reads like the chapter
#   make test   -> .venv with dev extras -> the whole test suite
PYTHON ?= python3
VENV ?= .venv
# A GPU user picks another build, e.g. TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>"
TORCH_SPEC ?= torch==2.13.0
# The versions behind the zoo figures in docs/RESULTS.md: the built-in corpus is read from the installed
# packages' sources, so other versions give another corpus and other numbers. `make CONSTRAINTS= test`
# takes the newest releases instead.
CONSTRAINTS ?= constraints-zoo.txt
PIN := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
BIN := $(VENV)/bin

.PHONY: demo tour test venv dev lint clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)

$(VENV)/.installed: $(BIN)/python pyproject.toml $(CONSTRAINTS)
	$(BIN)/python -m pip install -q $(PIN) -e .
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml $(CONSTRAINTS)
	$(BIN)/python -m pip install -q $(PIN) -e '.[dev]'
	touch $@

venv: $(VENV)/.installed
dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(BIN)/transferlab grok

# the chapter, run on this machine: every study's mini preset (what ./runs holds is reused), one offline page
tour: $(VENV)/.installed
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/transferlab tour

# The report tests open pages in headless Chromium (Debian package `chromium`).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  (echo "installing chromium for the report tests"; \
	   (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	   echo "warning: could not install chromium; the report tests will fail until it is installed")

test: $(VENV)/.installed-dev browser
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest tests

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check transferlab tests bench

clean:
	rm -rf $(VENV) runs .pytest_cache
