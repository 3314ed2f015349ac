# Two commands do all the set-up on a fresh machine:
#   make demo   -> .venv (torch 2.13.0 CPU first, then tlrec), then `tlrec demo`
#   make test   -> the same set-up (and, as root, Chromium for the console's browser tests),
#                  then the default test suite (< 10 min on 2 cores)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_OUT ?= demo_out

.PHONY: demo test test-slow bench setup browser clean

setup: $(STAMP)

# torch first: an exact pin takes the CPU wheel on disk; anything looser pulls CUDA.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tlrec demo --out $(DEMO_OUT)

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

# headless Chromium + chromedriver (Debian) for tests/console; without them those tests skip and say why
browser:
	@sh tests/console/install_browser.sh

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
