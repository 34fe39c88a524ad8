# Everything a fresh machine with only Python 3.11 needs: `make demo`, `make test`.
# The integration tests (in `make test`) run on Apache Kafka where java 17+ and mvn are
# present (the first run fetches its jars into ~/.cache/detector), on Tansu otherwise;
# DETECTOR_TEST_BROKER=kafka|tansu chooses. `make bench BENCH_ARGS="--broker tansu"` likewise.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Test files run on two workers, each with its own broker (a file's tests share one worker:
# module fixtures are built once). PYTEST_WORKERS= runs them in one process.
PYTEST_WORKERS ?= -n 2 --dist loadfile

.PHONY: test demo lint typecheck unit integration integration-kafka integration-tansu integration-confluent bench bench-transports bench-quality bench-train bench-cooldown bench-eos bench-replicas clean image

# The venv is rebuilt only when pyproject.toml changes (the stamp is newer otherwise).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check detector tests bench
	$(BIN)/mypy detector bench
	$(BIN)/python -m pytest -q -rxX -p no:cacheprovider --durations=25 $(PYTEST_WORKERS)

lint: $(STAMP)
	$(BIN)/ruff check detector tests bench
	$(BIN)/ruff format --check detector tests bench

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration

integration-kafka: $(STAMP)
	DETECTOR_TEST_BROKER=kafka $(BIN)/python -m pytest -q -p no:cacheprovider tests/integration

# The service's integration tests with kafka.client = "confluent" (confluent-kafka), on the
# run's broker (Apache Kafka where java runs).
integration-confluent: $(STAMP)
	DETECTOR_TEST_CLIENT=confluent $(BIN)/python -m pytest -q -rxX -p no:cacheprovider $(PYTEST_WORKERS) tests/integration

integration-tansu: $(STAMP)
	DETECTOR_TEST_BROKER=tansu $(BIN)/python -m pytest -q -rxX -p no:cacheprovider $(PYTEST_WORKERS) tests/integration

demo: $(STAMP)
	$(BIN)/detector demo $(DEMO_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench.throughput $(BENCH_ARGS)

bench-transports: $(STAMP)
	$(BIN)/python -m bench.transports $(BENCH_ARGS)

bench-quality: $(STAMP)
	$(BIN)/python -m bench.quality $(BENCH_ARGS)

bench-train: $(STAMP)
	$(BIN)/python -m bench.train_time $(BENCH_ARGS)

# The per-batch pipeline with 1,000,000 distinct alerting entities, cooldown on vs off (no Kafka).
bench-cooldown: $(STAMP)
	$(BIN)/python -m bench.cooldown $(BENCH_ARGS)

# Exactly-once against at-least-once on Apache Kafka: events/s and produce-to-alert p50/p99.
bench-eos: $(STAMP)
	$(BIN)/python -m bench.eos $(BENCH_ARGS)

# Events/s with 1, 2 and 3 replicas in one group, models through the registry topic.
bench-replicas: $(STAMP)
	$(BIN)/python -m bench.replicas $(BENCH_ARGS)

# The container image (deploy/Dockerfile), built with the first of docker or podman whose
# engine answers. Where none does (no CLI, or a CLI without a daemon) it says so and exits
# 0, so `make image` is safe on a build machine without a container engine.
IMAGE ?= detector:0.1.0
image:
	@engine=""; \
	for cli in docker podman; do \
		if command -v $$cli >/dev/null 2>&1; then \
			if $$cli info >/dev/null 2>&1; then engine=$$cli; break; fi; \
			echo "make image: $$cli is installed but its engine does not answer ($$cli info failed)"; \
		fi; \
	done; \
	if [ -z "$$engine" ]; then \
		echo "make image: no working container engine (docker or podman); image $(IMAGE) NOT built."; \
		echo "  Build it where one runs: docker build -f deploy/Dockerfile -t $(IMAGE) ."; \
		exit 0; \
	fi; \
	echo "make image: building $(IMAGE) with $$engine"; \
	$$engine build -f deploy/Dockerfile -t $(IMAGE) .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
