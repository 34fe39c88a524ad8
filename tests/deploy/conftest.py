"""The real broker for the one deploy check that needs a running detector."""

from tests.integration.conftest import broker, make_topic

__all__ = ["broker", "make_topic"]
