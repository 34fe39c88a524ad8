"""Streaming anomaly detector."""
