"""Stand-ins for worker.py and service.api.server, so the dev stack's own machinery (start, record,
health-check, stop, restart) is tested on its own: a worker that polls the task queue, a server
with gRPC health, and a runner that points the stack at them."""

from __future__ import annotations

import pytest

from service.devstack import servers

needs_postgres = pytest.mark.skipif(
    servers.find_postgres_bin_dir() is None, reason="no initdb/pg_ctl on this machine"
)

STUB_WORKER = """
import asyncio, os
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker

@workflow.defn
class Noop:
    @workflow.run
    async def run(self) -> None:
        return None

async def main() -> None:
    client = await Client.connect(os.environ["TEMPORAL_ADDRESS"])
    await Worker(client, task_queue=os.environ["GOLDEN_TASK_QUEUE"], workflows=[Noop]).run()

if __name__ == "__main__":
    asyncio.run(main())
"""
STUB_API = """
import os
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2_grpc

server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
server.add_insecure_port(os.environ["GOLDEN_GRPC_ADDR"])
server.start()
server.wait_for_termination()
"""
STUB_RUNNER = """
import os, sys
import service.devstack.stack as d
d.WORKER_CMD = [sys.executable, sys.argv[1]]
d.API_CMD = [sys.executable, sys.argv[2]]
code = d.main(sys.argv[3:])
sys.stdout.flush(); sys.stderr.flush()
os._exit(code)
"""
