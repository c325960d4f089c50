# make run: set up and start Azurite + the service.  make test: set up and run the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup run test test-image train fuzz load bench protocols docs clean

setup: $(VENV)/.installed node_modules/.installed web/vendor/.installed

# One environment for the service, the client, training and the tests; pins live in pyproject.toml.
# The editable install also compiles bfv/_kernels.c next to it (again when the C file changes).
$(VENV)/.installed: pyproject.toml bfv/_kernels.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

# Azurite (the Azure Storage emulator) and @noble/ciphers, pinned in package.json / package-lock.json.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The browser client's ChaCha20 (@noble/ciphers), copied where the service serves it (/demo/vendor/).
web/vendor/.installed: node_modules/.installed scripts/vendor_web.py
	$(PYTHON) scripts/vendor_web.py
	touch $@

run: setup
	./scripts/run-local.sh

# The JavaScript client's unit tests first (they compare with Python/SEAL), then pytest.
test: setup
	node --test tests/js/*.test.mjs
	$(PY) -m pytest $(PYTEST_ARGS)

# Only the container tests: build the image, run it, compose up and down (needs a Docker engine,
# which scripts/container-env.sh provides on Debian).
test-image: setup
	$(PY) -m pytest -m container tests/deploy/container $(PYTEST_ARGS)

train: setup
	$(PY) -m model.train
	$(PY) -m model.train --kind square-mlp

# Long runs, each starting its own Azurite and service on free loopback ports.
fuzz: setup
	$(PY) -m bench.fuzz

load: setup
	$(PY) -m bench.load

bench: setup
	$(PY) -m bench.engines

protocols: setup
	$(PY) -m bench.protocols $(if $(wildcard ../shared/data/mnist),--mnist-dir ../shared/data/mnist)

# docs/settings.md from service/settings.py (tests/deploy/test_settings_doc.py checks it is current).
docs: setup
	$(PY) scripts/settings_doc.py

clean:
	rm -rf $(VENV) node_modules web/vendor .azurite .pytest_cache .hypothesis *.egg-info build bfv/*.so
