"""The service's Kafka client in this test run (``DETECTOR_TEST_CLIENT``)."""

from __future__ import annotations

import os

# Which Kafka client the service runs on in this run: kafka-python (the default) or
# confluent; tests/conftest.py says it in the run's header and skips, with the reason, a
# test marked needs_client for the other one.
CLIENT_ENV = "DETECTOR_TEST_CLIENT"
CLIENTS = ("kafka-python", "confluent")


def client_of_run() -> str:
    client = os.environ.get(CLIENT_ENV, "").strip() or "kafka-python"
    if client not in CLIENTS:
        raise ValueError(f"{CLIENT_ENV}={client!r}: choose one of {', '.join(CLIENTS)}")
    return client
