"""Temporal features in the running service equal the offline ones (issue 7)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from detector.demo.fleet import FEATURES, FLOW, FleetSpec, simulate
from detector.features.temporal import MIN_PEERS, augment_offline
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
# The level-invariant variant (issue 20): flow's raw value left out, its deviation from the
# pump's own robust baseline in.
LEVEL_INVARIANT = {
    "temporal_forms": ["diff", "std", "dev"],
    "temporal_raw": False,
    "temporal_halflife_events": 20.0,
}
# ...and those forms relative to the other pumps (features.temporal_peer).
AGAINST_PEERS = {**LEVEL_INVARIANT, "temporal_peer": True}


@pytest.mark.parametrize(
    "forms",
    [{}, LEVEL_INVARIANT, AGAINST_PEERS],
    ids=["default", "level_invariant", "against_peers"],
)
def test_service_alerts_with_temporal_features_equal_offline_scoring(
    broker, tmp_path: Path, forms: dict
) -> None:
    # Given a model with per-entity temporal features on flow, trained on a 6-pump history
    settings = settings_for_test(
        broker.bootstrap_servers,
        tmp_path / "models",
        features={"temporal": WINDOWS, **forms},
    )
    spec = FleetSpec(n_pumps=6, seed=11)
    x = simulate(spec, 1200)
    rows = [
        dict(zip(FEATURES, x[s, p].tolist(), strict=True)) for s in range(1000) for p in range(6)
    ]
    ents = [f"pump-{p}" for s in range(1000) for p in range(6)]
    times = [s for s in range(1000) for p in range(6)]
    rows, _ = augment_offline(rows, ents, times, settings.features.temporal_plan)
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
    m = service.metrics
    rebalances = current(m.rebalances.labels("revoked")) + current(m.rebalances.labels("lost"))
    # Then its alerts are exactly those of `detector score` on the same events as a file,
    # (a rebalance restarts every entity's state: the windows warm up again in 9 events,
    # but a restarted baseline differs from a replay's for a few half-lives, so there the
    # level-invariant variant can only be compared when the group stayed put)
    offline = offline_alert_ids(tmp_path, settings, raws, produced)
    if not (forms and rebalances):
        assert {a["alert_id"] for a in alerts} == offline, f"rebalances: {rebalances}"
    # ...the stuck sensor alerted, and each pump's first 9 events were scored point-wise
    # (warm-up), again after each rebalance: the state restarts with the partition (on a
    # loaded machine a session can expire mid-stream and the events come again)
    # (less with the raw flow left out: a sensor stuck at a plausible value is seen only by
    # its zero rolling std, 13 alerts measured; the raw level showed it against pressure)
    assert sum(a["entity"] == "pump-4" for a in alerts) >= (50 if not forms else 5)
    # (with peers, also the first MIN_PEERS pumps of the first warm step: too few peers yet)
    per_start = 6 * (WINDOWS["flow_m3_h"] - 1) + (MIN_PEERS if forms.get("temporal_peer") else 0)
    warmups, rest = divmod(current(m.temporal_warmup), per_start)
    assert rest == 0 and 1 <= warmups <= 1 + rebalances, (warmups, rebalances)
    assert current(service.metrics.events.labels("dead_lettered")) == 0
