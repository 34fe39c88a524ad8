"""Kafka side of the detector: clients, the consumer loop, alerts and dead letters."""
