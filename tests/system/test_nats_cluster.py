"""The production shape of NATS (docker-compose): a 3-node JetStream cluster, stream replicas 3.

Three nats-server processes on loopback, routed into one cluster, the way compose runs nats-1..3.
ensure_stream creates the stream with GOLDEN_STREAM_REPLICAS=3, and with one node down a publish
still lands (a quorum of 2 remains), which is what docs/operations.md promises.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import nats
from nats.js.errors import Error as JetStreamError

from golden_press.settings import Settings
from service.devstack.servers import NatsServer, free_port
from service.store.outbox import ensure_stream, stream_subject


async def test_stream_keeps_three_replicas_and_survives_a_node_down(tmp_path: Path) -> None:
    cluster_ports = [free_port() for _ in range(3)]
    routes = ",".join(f"nats://127.0.0.1:{port}" for port in cluster_ports)
    nodes: list[NatsServer] = []
    try:
        for i, port in enumerate(cluster_ports):
            args = ["--name", f"node-{i}", "--cluster_name", "golden-test"]
            args += ["--cluster", f"nats://127.0.0.1:{port}", "--routes", routes]
            node = await asyncio.to_thread(NatsServer.start, tmp_path / f"n{i}", extra_args=args)
            nodes.append(node)
        run = uuid.uuid4().hex[:8]
        settings = Settings(  # type: ignore[call-arg]
            GOLDEN_NATS_URL=",".join(node.url for node in nodes),
            GOLDEN_STREAM=f"CLUSTER_{run.upper()}",
            GOLDEN_SUBJECT_PREFIX=f"c{run}.choco.events.monetization",
            GOLDEN_STREAM_REPLICAS=3,
        )
        nc = await nats.connect(settings.nats_servers)
        js = nc.jetstream(timeout=10)
        try:
            # The cluster elects its meta leader a moment after the routes connect.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while True:
                try:
                    await ensure_stream(js, settings)
                    break
                except (JetStreamError, nats.errors.TimeoutError):
                    if loop.time() > deadline:
                        raise
                    await asyncio.sleep(0.5)
            info = await js.stream_info(settings.stream_name)
            assert info.config.num_replicas == 3
            assert info.config.subjects == [stream_subject(settings)]
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2

            nodes[2].stop()
            subject = f"{settings.subject_prefix}.golden_ticket.issued"
            deadline = loop.time() + 60
            while True:
                try:
                    ack = await js.publish(subject, b"event", headers={"Nats-Msg-Id": run})
                    break
                except (JetStreamError, nats.errors.TimeoutError):
                    if loop.time() > deadline:
                        raise
                    await asyncio.sleep(0.5)
            assert ack.stream == settings.stream_name and not ack.duplicate
            assert (await js.stream_info(settings.stream_name)).state.messages == 1
        finally:
            await nc.close()
    finally:
        for node in nodes:
            node.stop()
