# The two quick-start commands: `make run` and `make test`. Both install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: run test test-fast lint install install-dev system-packages test-packages browser clean

# Only what the product itself uses: no browser or tracer (those are for the tests).
run: install system-packages
	$(BIN)/assistant serve

# The suite twice: on SQLite, then every database test on a fresh PostgreSQL database of its
# own (the local server; tests/conftest.py starts it if it is down).
test: install-dev system-packages test-packages
	$(BIN)/ruff check assistant web worker tests
	$(BIN)/python -m pytest -q
	ASSISTANT_TEST_DATABASE=postgresql $(BIN)/python -m pytest -q

test-fast: install-dev system-packages test-packages
	$(BIN)/python -m pytest -q -m "not slow"

lint: install-dev
	$(BIN)/ruff check assistant web worker tests
	$(BIN)/ruff format --check assistant web worker tests

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# llama-cpp-python builds from source the first time (about 5 minutes), then comes from pip's cache.
$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

# Debian packages, installed only when missing. The product's: Tesseract OCRs scanned PDF
# pages (via pytesseract); sqlite3 makes the online database copy in deploy/backup.sh.
# The tests' only: Chromium drives the browser tests (Playwright's own browser download needs
# the internet); strace watches for outbound connections.
SYSTEM_PACKAGES := tesseract-ocr tesseract-ocr-eng sqlite3
TEST_PACKAGES := chromium strace
define apt_install_missing
	@missing=$$(for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo installing $$missing; apt-get update -q && apt-get install -y -q $$missing; fi
endef

system-packages:
	$(call apt_install_missing,$(SYSTEM_PACKAGES))

test-packages:
	$(call apt_install_missing,$(TEST_PACKAGES))

browser: test-packages

clean:
	rm -rf $(VENV) var
