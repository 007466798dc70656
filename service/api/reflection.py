"""gRPC server reflection that serves the .proto comments (the API reference) with the types.

Generated `_pb2` modules embed their file descriptors without source info, and a descriptor
pool drops it too, so stock reflection answers with no comments. `make proto` also writes
proto/descriptors.binpb (every proto compiled with `--include_source_info`, under the same file
names). This servicer answers lookups from the default pool as usual, then swaps each of our files
in the answer for its copy from that set, comments included; health and reflection's own files
are served as before. Without the set (not generated), it behaves exactly like stock reflection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import _async as reflection_aio
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import proto

#: Written by service/devstack/protogen.py beside the generated code.
DESCRIPTOR_SET = Path(proto.__file__).resolve().parent / "descriptors.binpb"


def files_with_source_info(path: Path = DESCRIPTOR_SET) -> dict[str, bytes]:
    """File name -> serialized FileDescriptorProto with its comments ({} without the set)."""
    if not path.is_file():
        return {}
    return {
        f.name: f.SerializeToString()
        for f in descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file
    }


class CommentedReflectionServicer(reflection_aio.ReflectionServicer):  # type: ignore[misc]
    """Stock reflection whose file answers carry source info for the files we have it for."""

    def __init__(self, service_names: tuple[str, ...], with_source: dict[str, bytes]) -> None:
        super().__init__(service_names)
        self._with_source = with_source

    def _file_by_filename(self, request: Any, filename: str) -> Any:
        return self._commented(super()._file_by_filename(request, filename))

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        return self._commented(super()._file_containing_symbol(request, fully_qualified_name))

    def _commented(
        self, response: reflection_pb2.ServerReflectionResponse
    ) -> reflection_pb2.ServerReflectionResponse:
        if not response.HasField("file_descriptor_response"):
            return response
        files = response.file_descriptor_response.file_descriptor_proto
        swapped = [
            self._with_source.get(descriptor_pb2.FileDescriptorProto.FromString(raw).name, raw)
            for raw in files
        ]
        del files[:]
        files.extend(swapped)
        return response


def enable_reflection(service_names: tuple[str, ...], server: grpc.aio.Server) -> None:
    """Serve reflection for these services, with comments when the descriptor set exists."""
    servicer = CommentedReflectionServicer(service_names, files_with_source_info())
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)


__all__ = ["DESCRIPTOR_SET", "enable_reflection", "files_with_source_info"]
