"""Retraining: the samples window becomes a validated new model version."""
