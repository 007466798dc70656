"""Generate Python from every proto/**/*.proto (a build step; generated code is not committed)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _stale(proto: Path) -> bool:
    generated = proto.with_name(proto.stem + "_pb2.py")
    return not generated.exists() or generated.stat().st_mtime < proto.stat().st_mtime


#: Every proto with its comments (source info), for server reflection (service/api/reflection).
DESCRIPTOR_SET = ROOT / "proto" / "descriptors.binpb"


def generate(force: bool = False) -> list[Path]:
    """Run protoc (grpcio-tools) over stale .proto files, writing *_pb2*.py beside them."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted((ROOT / "proto").rglob("*.proto"))
    todo = [p for p in protos if force or _stale(p)]
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    if todo or not DESCRIPTOR_SET.exists():
        descriptor_args = [
            "protoc",
            f"-I{ROOT}",
            f"-I{well_known}",
            f"--descriptor_set_out={DESCRIPTOR_SET}",
            "--include_imports",
            "--include_source_info",
            *(str(p.relative_to(ROOT)) for p in protos),
        ]
        if protoc.main(descriptor_args) != 0:
            raise RuntimeError("protoc failed writing the descriptor set")
    if not todo:
        return []
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{well_known}",
        f"--python_out={ROOT}",
        f"--pyi_out={ROOT}",
        f"--grpc_python_out={ROOT}",
        *(str(p.relative_to(ROOT)) for p in todo),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed for {[str(p) for p in todo]}")
    return todo


if __name__ == "__main__":
    done = generate(force="--force" in sys.argv)
    print(f"generated {len(done)} proto file(s)")
