# shopcast: `make demo` to watch it run, `make test` to run every test.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
KAFKA  := deploy/kafka-local/kafka.sh

.PHONY: demo test unit integration venv venv-dev kafka-start kafka-stop lint clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PIP) install -q -e '.[dev,train]'
	touch $@

venv: $(VENV)/.base
venv-dev: $(VENV)/.dev

## demo: install and run the whole thing on this machine (embedded broker, worker, traffic)
demo: $(VENV)/.base
	$(VENV)/bin/shopcast demo

## test: install with the dev and train extras, start Apache Kafka, run the whole suite
test: $(VENV)/.dev
	bash .ci/tools.sh
	$(KAFKA) start
	SHOPCAST_TEST_BOOTSTRAP=$$($(KAFKA) bootstrap) $(PY) -m pytest tests --durations=25; \
	  status=$$?; $(KAFKA) stop; exit $$status

unit: $(VENV)/.dev
	$(PY) -m pytest tests/unit

integration: $(VENV)/.dev
	$(PY) -m pytest tests/integration

kafka-start:
	$(KAFKA) start

kafka-stop:
	$(KAFKA) stop

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check streams model_export tests
	$(VENV)/bin/mypy streams

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
