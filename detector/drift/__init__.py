"""Drift: the samples feed for retraining and sliding-window drift tests."""
