# The whole set-up on a fresh Debian/Ubuntu machine is `make run` (the appliance on
# simulated hardware) and `make test` (every test). Both create the virtual environment
# and install what is missing, system packages included; the second time they are quick.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= data
PORT   ?= 8080
PYTEST_ARGS ?=

# On a Raspberry Pi the venv must see apt's picamera2, libcamera, numpy and av.
VENV_FLAGS := $(shell grep -qs 'Raspberry Pi' /proc/device-tree/model && echo --system-site-packages)

CITY   ?= city
CITY_PORT ?= 8090
COUNTERS ?= 3

.PHONY: run test city setup-run setup-test setup-city clean

run: setup-run
	$(BIN)/kiroku run --data $(DATA) --port $(PORT)

# The whole city on one machine, simulated (docs/hub.md): a private PostgreSQL and Mosquitto
# under $(CITY), the hub on http://127.0.0.1:$(CITY_PORT)/, $(COUNTERS) counters and a call recorder.
city: setup-city
	$(BIN)/kiroku city --data $(CITY) --port $(CITY_PORT) --counters $(COUNTERS) --calls

# Every stage at once (image-build's checks, its boot and stack tests, the suite on several
# workers), each logged to test-results/stages/, and a table of their times at the end.
test: setup-test
	$(BIN)/python tools/run-tests $(PYTEST_ARGS)

setup-run: $(VENV)/.run-installed
setup-test: $(VENV)/.test-installed
setup-city: $(VENV)/.city-installed

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.run-installed: pyproject.toml tools/system-packages | $(VENV)/bin/python
	tools/system-packages run
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.city-installed: pyproject.toml tools/system-packages | $(VENV)/bin/python
	tools/system-packages city
	$(BIN)/python -m pip install -q -e '.[hub]'
	touch $@ $(VENV)/.run-installed $(VENV)/.city-installed

$(VENV)/.test-installed: pyproject.toml tools/system-packages | $(VENV)/bin/python
	tools/system-packages test
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.run-installed $(VENV)/.city-installed

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache test-results
