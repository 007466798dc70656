"""Server reflection serves the API with its comments (the .proto is the API reference)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from service.api.server import bound_port, serve, shutdown
from tests.helpers.stack import Stack


async def _ask(
    stub: reflection_pb2_grpc.ServerReflectionStub, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    async def one() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield request

    [response] = [r async for r in stub.ServerReflectionInfo(one())]
    return response


def _comments(files: list[descriptor_pb2.FileDescriptorProto], package: str) -> list[str]:
    [found] = [f for f in files if f.package == package]
    return [loc.leading_comments.strip() for loc in found.source_code_info.location]


async def test_reflection_serves_the_comments(stack: Stack) -> None:
    server = await serve(
        stack.settings, pool=stack.pool, client=stack.client, address="127.0.0.1:0"
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{bound_port(server)}") as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            listed = await _ask(stub, reflection_pb2.ServerReflectionRequest(list_services=""))
            names = {s.name for s in listed.list_services_response.service}
            assert {"golden.v1.GoldenPress", "grpc.health.v1.Health"} <= names

            found = await _ask(
                stub,
                reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol="golden.v1.GoldenPress"
                ),
            )
            files = [
                descriptor_pb2.FileDescriptorProto.FromString(raw)
                for raw in found.file_descriptor_response.file_descriptor_proto
            ]
            comments = _comments(files, "golden.v1")
            assert any(c.startswith("Mint a ticket for user_id.") for c in comments)
            assert "UUID, lowercase with hyphens." in comments  # a field's comment

            health = await _ask(
                stub,
                reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol="grpc.health.v1.Health"
                ),
            )
            assert health.file_descriptor_response.file_descriptor_proto
    finally:
        await shutdown(server, grace=None)
