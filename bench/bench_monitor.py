"""Monitor benchmark: verification rate over a large public log, tile fetches, peak memory.

    .venv/bin/python -m bench.bench_monitor [--entries 1000000] [--http] [--parallel N]
        [--keep DIR]

Writes a log of N entries as C2SP tlog-tiles files into a temporary directory (a realistic mix:
issue, redeem, revoke, void, and a cap change every 50,000 entries, always within the cap, signed
by a fresh ledger key), then runs `golden-press monitor` over it in a child process (its peak
memory is its own VmHWM): from the directory, and with --http also through the tiles HTTP
server the API runs (`--parallel` fetches in flight). Reports entries/s, tile fetches per 1,000
entries and peak memory, and ends with ONE JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from nacl.signing import SigningKey

from golden_press.checkpoint import Checkpoint, NoteVerifier, sign_checkpoint
from golden_press.tiles import Tile, TreeBuilder, encode_bundle, encode_tile

ORIGIN = "golden-press.bench/ledger"
AT = "2026-12-03T05:00:00.000000Z"
COMMIT = "c0" * 32
DIGEST = "d1" * 32


def _ticket(kind: str, tid: uuid.UUID, serial: int, reason: str = "") -> bytes:
    """Canonical v1 entry bytes (golden_press/ledger_entry.py), formatted directly for speed."""
    key_id = "ab12" if kind == "issued" else ""
    digest = DIGEST if kind == "issued" else ""
    return (
        f"golden-press/ledger-entry/v1\nkind={kind}\nticket_id={tid}\nserial={serial}\n"
        f"key_id={key_id}\nsignature_digest={digest}\nuser_commitment={COMMIT}\nat={AT}\n"
        f"reason={reason}\n"
    ).encode()


def _cap(cap: int, scope: str, serial: int) -> bytes:
    return (
        f"golden-press/ledger-entry/v2\nkind=cap\ncap={cap}\nscope={scope}\nserial={serial}\n"
        f"at={AT}\n"
    ).encode()


def entries(n: int) -> list[bytes]:
    """N entries that keep every rule: at most 5 live tickets, each one closed in turn."""
    out: list[bytes] = []
    live: list[tuple[uuid.UUID, int]] = []
    serial = 0
    step = 0
    while len(out) < n:
        step += 1
        if step % 50_000 == 0:
            out.append(_cap(5, "live", serial))
            continue
        if step % 97 == 0:
            serial += 1
            out.append(_ticket("voided", uuid.uuid4(), serial, "compensated"))
            continue
        if len(live) < 5:
            serial += 1
            tid = uuid.uuid4()
            live.append((tid, serial))
            out.append(_ticket("issued", tid, serial))
            continue
        tid, s = live.pop(0)
        kind = "revoked" if step % 31 == 0 else "redeemed"
        out.append(_ticket(kind, tid, s, "fraud" if kind == "revoked" else ""))
    return out[:n]


def write_log(directory: Path, data: list[bytes], key: SigningKey) -> bytes:
    """Every tile and bundle of the log, then its signed checkpoint; returns the root."""
    builder = TreeBuilder()

    def put(tile: Tile, hashes: list[bytes]) -> None:
        path = directory / tile.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_tile(hashes))
        if tile.level == 0:
            start = tile.index * 256
            bundle = directory / tile.bundle().path
            bundle.parent.mkdir(parents=True, exist_ok=True)
            bundle.write_bytes(encode_bundle(data[start : start + tile.width]))

    for e in data:
        for tile, hashes in builder.add_entry(e):
            put(tile, hashes)
    for tile, hashes in builder.partial_tiles():
        put(tile, hashes)
    root = builder.root()
    note = sign_checkpoint(Checkpoint(origin=ORIGIN, size=len(data), root=root), key, ORIGIN)
    (directory / "checkpoint").write_text(note)
    return root


def _vm_hwm_kb(pid: int) -> int:
    """The process's peak resident set since its exec (VmHWM), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_monitor(source: str, vkey: str, env: dict[str, str], *extra: str) -> dict[str, object]:
    """`golden-press monitor SOURCE --json` in a child; its JSON plus its own peak RSS.

    The peak is the child's VmHWM, read while it runs (it only grows; the last reading is
    within 20 ms of the end). Not getrusage: on Linux a child's ru_maxrss keeps the high-water
    mark of the memory it shared with this process before exec, so it reported the size of the
    log this benchmark had just built (~356 MB) for any monitor.
    """
    argv = [sys.executable, "-m", "service.cli.app", "monitor", source, "--vkey", vkey, "--json"]
    started = time.perf_counter()
    peak_kb = 0
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([*argv, *extra], stdout=out, stderr=err, env=env)
        while proc.poll() is None:
            peak_kb = max(peak_kb, _vm_hwm_kb(proc.pid))
            time.sleep(0.02)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"monitor failed ({proc.returncode}): {stdout} {stderr[-2000:]}")
    doc: dict[str, object] = json.loads(stdout)["monitor"]
    doc["wall_s"] = round(wall, 2)
    doc["peak_rss_mb"] = round(peak_kb / 1024, 1)
    return doc


def main() -> None:
    """Build the log, run the monitor, print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--http", action="store_true", help="also verify through HTTP")
    parser.add_argument("--keep", metavar="DIR", help="write the log here and keep it")
    parser.add_argument("--parallel", type=int, default=4, help="HTTP fetches in flight")
    args = parser.parse_args()

    key = SigningKey.generate()
    vkey = NoteVerifier(ORIGIN, bytes(key.verify_key)).vkey
    directory = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="golden-tiles-"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    try:
        t0 = time.perf_counter()
        data = entries(args.entries)
        write_log(directory, data, key)
        build_s = time.perf_counter() - t0
        del data
        print(f"log of {args.entries:,} entries written in {build_s:.1f} s to {directory}")

        results = {"directory": run_monitor(str(directory), vkey, env)}
        if args.http:
            from service.api.tiles_http import start_tiles_server

            server = start_tiles_server(directory, "127.0.0.1:0")
            try:
                url = f"http://127.0.0.1:{server.port}/"
                results["http"] = run_monitor(url, vkey, env, "--parallel", str(args.parallel))
            finally:
                server.stop()
        for name, doc in results.items():
            rate = float(doc["entries_verified"]) / float(doc["seconds"])  # type: ignore[arg-type]
            doc["rate"] = round(rate)
            doc["fetches_per_1k_entries"] = round(
                1000 * float(doc["fetches"]) / args.entries,  # type: ignore[arg-type]
                2,
            )
            print(
                f"{name:9s} {doc['entries_verified']:>9,} entries in {doc['seconds']:>7.1f} s: "
                f"{rate:>8,.0f} entries/s, {doc['fetches']} fetches "
                f"({doc['fetches_per_1k_entries']} per 1,000 entries), "
                f"peak RSS {doc['peak_rss_mb']} MB"
            )
        main_doc = results["directory"]
        line = {
            "bench": "monitor",
            "entries": args.entries,
            "rate": main_doc["rate"],
            "fetches": main_doc["fetches"],
            "fetches_per_1k_entries": main_doc["fetches_per_1k_entries"],
            "peak_rss_mb": main_doc["peak_rss_mb"],
            "http_rate": results["http"]["rate"] if "http" in results else None,
            "http_peak_rss_mb": results["http"]["peak_rss_mb"] if "http" in results else None,
            "http_parallel": args.parallel if "http" in results else None,
            "build_s": round(build_s, 1),
        }
        print(json.dumps(line))
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
