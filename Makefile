# shopcast: `make demo` to watch it run, `make test` to run every test.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
KAFKA  := deploy/kafka-local/kafka.sh

.PHONY: demo test unit integration venv venv-dev kafka-start kafka-stop lint clean

$(VENV)/.base: pyproject.toml
	@bash .ci/disk.sh 8 "a virtual environment with torch (about 6 GiB)"
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

# The suite runs on a throwaway Apache Kafka of its own: every test makes fresh topics, and a
# broker kept between runs grew to 6 GB of them. Its own port keeps it apart from the broker
# of `make kafka-start` (19092), and `reset` deletes its data when the suite ends.
TEST_KAFKA := SHOPCAST_KAFKA_PORT=19192 SHOPCAST_KAFKA_DATA_DIR=$(CURDIR)/.test-kafka

## test: install with the dev and train extras, start a throwaway Apache Kafka, run the whole suite
test: $(VENV)/.dev
	bash .ci/tools.sh
	export $(TEST_KAFKA); $(KAFKA) reset && $(KAFKA) start || exit 1; \
	  SHOPCAST_TEST_BOOTSTRAP=$$($(KAFKA) bootstrap) $(PY) -m pytest tests --durations=25; \
	  status=$$?; $(KAFKA) reset; exit $$status

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
