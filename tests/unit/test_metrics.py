"""Metrics: the batch histogram exposes what observe() would; reads go through public API."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest

from detector.metrics import BatchHistogram, ServiceMetrics, current, metric_value

BUCKETS = (-10.0, 0.0, 5.0)


def exposition(registry: CollectorRegistry) -> list[str]:
    # _created lines carry the construction time, which differs between the two
    lines = generate_latest(registry).decode().splitlines()
    return [line for line in lines if "_created" not in line]


def test_observe_batch_exposes_the_same_as_observe_one_by_one() -> None:
    # Given two histograms with the same buckets, and values on, between and past the edges
    values = np.array([-50.0, -10.0, -9.99, 0.0, 1.5, 5.0, 5.01, 1e6, -3.0, -3.0])
    by_batch, by_value = CollectorRegistry(), CollectorRegistry()
    batch = BatchHistogram("ll", "h", buckets=BUCKETS, registry=by_batch)
    single = BatchHistogram("ll", "h", buckets=BUCKETS, registry=by_value)
    # When one takes them as two batches and the other value by value
    batch.observe_batch(values[:4])
    batch.observe_batch(values[4:])
    batch.observe_batch(values[:0])  # an empty batch changes nothing
    for v in values:
        single.observe(float(v))
    # Then /metrics reads the same (buckets, count and sum)
    assert exposition(by_batch) == exposition(by_value)


def test_observe_batch_floors_the_sum_so_huge_values_cannot_overflow_it() -> None:
    # Given a histogram that exposes its sum (no negative bucket), and two finite values
    # whose sum overflows a float
    registry = CollectorRegistry()
    hist = BatchHistogram("x", "h", buckets=(0.0, 5.0), registry=registry)
    # When they are observed with a floor
    hist.observe_batch(np.array([-1e308, -1e308]), sum_floor=-1e12)
    # Then the sum is finite and both are counted in the lowest bucket
    assert metric_value(registry, "x_sum") == -2e12
    assert metric_value(registry, "x_bucket", le="0.0") == 2
    assert metric_value(registry, "x_count") == 2


def test_the_log_likelihood_histogram_has_no_sum_line() -> None:
    # Given the service's log-likelihood histogram (negative buckets) after some scores
    m = ServiceMetrics()
    m.log_likelihood.observe_batch(np.array([-1e308, -1e308, 3.0]))
    # Then /metrics has its buckets and count but no sum, as prometheus-client's observe()
    text = generate_latest(m.registry).decode()
    assert 'detector_log_likelihood_bucket{le="-1000.0"} 2.0' in text
    assert "detector_log_likelihood_count 3.0" in text
    assert "detector_log_likelihood_sum" not in text


def test_counts_and_current_read_counters_by_label_and_in_total() -> None:
    # Given a service's metrics after some events
    m = ServiceMetrics()
    m.consumed.inc(7)
    m.events.labels("scored").inc(5)
    m.events.labels("dead_lettered").inc(2)
    m.alerts.labels("warning").inc(3)
    m.alerts.labels("critical").inc(1)
    # When they are read
    counts = m.counts()
    # Then each figure is the counter's, and a parent's value is the sum of its children
    assert (counts.consumed, counts.scored, counts.dead_lettered) == (7, 5, 2)
    assert counts.alerts_by_severity == {"warning": 3, "critical": 1}
    assert counts.alerts == 4 == current(m.alerts)
    assert current(m.events.labels("scored")) == 5
    assert metric_value(m.registry, "detector_events_total", outcome="absent") == 0.0
