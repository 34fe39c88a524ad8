"""Temporal features in the running service equal the offline ones (issue 7)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from detector.demo.fleet import FEATURES, FLOW, FleetSpec, simulate
from detector.features.temporal import augment_offline
from detector.metrics import current
from detector.model.train import train
from detector.registry.store import ModelRegistry
from tests.integration.streams import (
    alerts_of,
    offline_alert_ids,
    produce,
    service_thread,
    settings_for_test,
    wait_for,
)

pytestmark = pytest.mark.broker
WINDOWS = {"flow_m3_h": 10}


def test_service_alerts_with_temporal_features_equal_offline_scoring(
    broker, tmp_path: Path
) -> None:
    # Given a model with per-entity temporal features on flow, trained on a 6-pump history
    settings = settings_for_test(
        broker.bootstrap_servers, tmp_path / "models", features={"temporal": WINDOWS}
    )
    spec = FleetSpec(n_pumps=6, seed=11)
    x = simulate(spec, 1200)
    rows = [
        dict(zip(FEATURES, x[s, p].tolist(), strict=True)) for s in range(1000) for p in range(6)
    ]
    ents = [f"pump-{p}" for s in range(1000) for p in range(6)]
    times = [s for s in range(1000) for p in range(6)]
    rows, _ = augment_offline(rows, ents, times, WINDOWS)
    ModelRegistry(settings.registry).publish(train(rows, settings))
    # ...and 200 later steps in which pump 4's flow sensor is stuck from step 1050 on
    x[1050:, 4, FLOW] = x[1049, 4, FLOW]
    base_ms = 1_795_000_000_000
    raws = [
        orjson.dumps(
            {
                "entity": f"pump-{p}",
                "ts": base_ms + 1000 * s,
                "values": dict(zip(FEATURES, x[s, p].tolist(), strict=True)),
            }
        )
        for s in range(1000, 1200)
        for p in range(6)
    ]
    # When the service scores them from a one-partition topic (arrival order = time order)
    topic = settings.kafka.input_topic
    broker.create_topics([topic], partitions=1)
    produced = produce(broker.bootstrap_servers, topic, raws)
    with service_thread(settings) as service:
        wait_for(lambda: service.consumed >= len(raws), 60, "all events")
        wait_for(lambda: not service.offsets.pending, 30, "acks")
    alerts = alerts_of(broker.bootstrap_servers, settings.kafka.alerts_topic)
    # Then its alerts are exactly those of `detector score` on the same events as a file,
    assert {a["alert_id"] for a in alerts} == offline_alert_ids(tmp_path, settings, raws, produced)
    # ...the stuck sensor alerted, and each pump's first 9 events were scored point-wise
    # (warm-up), again after each rebalance: the state restarts with the partition (on a
    # loaded machine a session can expire mid-stream and the events come again)
    assert sum(a["entity"] == "pump-4" for a in alerts) >= 50
    m = service.metrics
    warmups, rest = divmod(current(m.temporal_warmup), 6 * (WINDOWS["flow_m3_h"] - 1))
    rebalances = current(m.rebalances.labels("revoked")) + current(m.rebalances.labels("lost"))
    assert rest == 0 and 1 <= warmups <= 1 + rebalances, (warmups, rebalances)
    assert current(service.metrics.events.labels("dead_lettered")) == 0
