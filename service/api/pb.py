"""The generated gRPC code, imported in one place.

`make proto` (service.devstack.protogen) generates it at build time; it is not committed. A missing
module here means the build step was skipped.
"""

from proto.golden.v1 import golden_pb2, golden_pb2_grpc

__all__ = ["golden_pb2", "golden_pb2_grpc"]
