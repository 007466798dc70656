"""Stream replicas and NATS seeds from the settings (compose runs a 3-node cluster, R3)."""

from __future__ import annotations

from golden_press.settings import Settings
from service.store.outbox import stream_config


def test_stream_replicas_default_to_one_and_follow_the_setting() -> None:
    assert Settings().stream_replicas == 0
    assert stream_config(Settings()).num_replicas == 1
    three = Settings(GOLDEN_STREAM_REPLICAS=3)  # type: ignore[call-arg]
    assert stream_config(three).num_replicas == 3


def test_nats_url_may_list_every_node_of_a_cluster() -> None:
    cluster = Settings(GOLDEN_NATS_URL="nats://nats-1:4222, nats://nats-2:4222,nats://nats-3:4222")  # type: ignore[call-arg]
    assert cluster.nats_servers == [
        "nats://nats-1:4222",
        "nats://nats-2:4222",
        "nats://nats-3:4222",
    ]
    assert Settings().nats_servers == ["nats://127.0.0.1:4222"]
