"""Verification rate: VerifyTicket calls/s through the gRPC API vs the transport floor.

    .venv/bin/python -m bench.bench_verify [--calls 20000] [--concurrency 64] [--seconds 2]

Starts a private Temporal dev server, a fresh database, `python worker.py` and
`python -m service.api.server`, issues five tickets through the API, then calls VerifyTicket
(by ticket_id, with the ticket itself, and with the public proof bundle GetInclusionProof gives
without a token) from this process over one grpc.aio channel. In the same run: the floor, a
servicer with the same proto returning the response golden-press gave from memory, and raw nacl
VerifyKey.verify of the same payloads (for scale). Ends with ONE JSON line: bench, rate (the
slower of by ticket_id and by ticket), floor_rate, rate_vs_floor (target >= 0.75), and the
public bundle's own bundle_rate and bundle_vs_floor (its requests are larger: its own floor).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import tempfile
import time
from functools import partial
from pathlib import Path

import grpc
from nacl.signing import VerifyKey

from bench.common import (
    API_VARIANTS,
    auth_metadata,
    cpu_seconds,
    finish,
    golden_processes,
    machine,
    ms,
    pct,
    print_table,
    run_load,
    start_floor_server,
    temporal_dev,
)
from golden_press.signing import canonical_payload, verify_payload
from service.api.convert import ticket_from_pb
from service.api.pb import golden_pb2, golden_pb2_grpc

#: The subjects measured; the headline rate is the slower of the first two (as before the public
#: bundle was measured), the bundle is reported beside it against its own floor.
MODES = ("ticket_id", "ticket", "bundle")
HEADLINE_MODES = ("ticket_id", "ticket")


def verify_request(
    mode: str, ticket: golden_pb2.Ticket, public_bundles: dict[str, str]
) -> golden_pb2.VerifyTicketRequest:
    """The VerifyTicket request of one subject for one ticket."""
    if mode == "ticket_id":
        return golden_pb2.VerifyTicketRequest(ticket_id=ticket.ticket_id)
    if mode == "ticket":
        return golden_pb2.VerifyTicketRequest(ticket=ticket)
    return golden_pb2.VerifyTicketRequest(bundle_json=public_bundles[ticket.ticket_id])


def raw_rate(keys: dict[str, bytes], tickets: list[golden_pb2.Ticket], seconds: float) -> dict:
    """Verifications per second in one thread: bare nacl, and golden_press.signing's wrapper."""
    prepared = []
    for t in tickets:
        ticket = ticket_from_pb(t)
        payload = canonical_payload(
            ticket.ticket_id, ticket.serial, ticket.user_id, ticket.issued_at, ticket.key_id
        )
        prepared.append((keys[t.key_id], payload, t.signature))
    out = {}
    verify_keys = [VerifyKey(pk) for pk, _, _ in prepared]
    sigs = [base64.b64decode(s) for _, _, s in prepared]

    def bare(i: int) -> None:
        verify_keys[i].verify(prepared[i][1], sigs[i])

    def wrapped(i: int) -> None:
        pk, payload, sig = prepared[i]
        verify_payload(pk, payload, sig)

    def full(i: int) -> None:
        # What a verifier does from the wire: rebuild the payload, decode, verify.
        ticket = ticket_from_pb(tickets[i])
        payload = canonical_payload(
            ticket.ticket_id, ticket.serial, ticket.user_id, ticket.issued_at, ticket.key_id
        )
        verify_payload(keys[ticket.key_id], payload, ticket.signature)

    for name, fn in (
        ("raw nacl VerifyKey.verify", bare),
        ("golden_press.signing.verify_payload", wrapped),
        ("ticket_from_pb + canonical_payload + verify", full),
    ):
        n = 0
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            for _ in range(100):
                fn(n % len(prepared))
                n += 1
        out[name] = n / (time.perf_counter() - start)
    return out


async def main_async(args: argparse.Namespace) -> int:
    rows: list[list[str]] = []
    api_rates: dict[str, float] = {}
    requests_by_mode: dict[str, list[golden_pb2.VerifyTicketRequest]] = {}
    sample = golden_pb2.VerifyTicketResponse()
    raw: dict[str, float] = {}
    tickets: list[golden_pb2.Ticket] = []
    async with temporal_dev() as env:
        address = env.client.service_client.config.target_host  # type: ignore[attr-defined]
        for variant in args.variants.split(","):
            async with golden_processes(address, variant=variant) as stack:
                async with grpc.aio.insecure_channel(stack.address) as channel:
                    stub = golden_pb2_grpc.GoldenPressStub(channel)
                    tickets = []
                    for i in range(5):
                        resp = await stub.IssueTicket(
                            golden_pb2.IssueTicketRequest(user_id=f"verify-user-{i}"),
                            metadata=auth_metadata(),
                        )
                        tickets.append(resp.ticket)
                    keys_resp = await stub.GetPublicKeys(golden_pb2.GetPublicKeysRequest())
                    keys = {k.key_id: k.public_key for k in keys_resp.keys}
                    public_bundles = {}
                    for t in tickets:  # without a token: the public (redacted) bundle
                        proof = await stub.GetInclusionProof(
                            golden_pb2.GetInclusionProofRequest(ticket_id=t.ticket_id)
                        )
                        public_bundles[t.ticket_id] = proof.bundle_json
                    if not raw:
                        raw = raw_rate(keys, tickets, args.seconds)
                    for mode in MODES:
                        requests = [
                            verify_request(mode, tickets[i % len(tickets)], public_bundles)
                            for i in range(args.calls)
                        ]
                        # Warm up (connections in the pool, code paths), then measure.
                        await run_load(
                            [partial(stub.VerifyTicket, r) for r in requests[:500]],
                            args.concurrency,
                        )
                        api = next(c for c in stack.children if c.name == "api")
                        before, cpu0 = os.times(), cpu_seconds(api.proc.pid)
                        result = await run_load(
                            [partial(stub.VerifyTicket, r, timeout=30) for r in requests],
                            args.concurrency,
                        )
                        now = os.times()
                        client_cpu = now.user - before.user + now.system - before.system
                        api_cpu = cpu_seconds(api.proc.pid) - cpu0
                        bad = {k: v for k, v in result.outcomes().items() if k != "ok"}
                        assert not bad, f"VerifyTicket failed: {bad}"
                        resp = await stub.VerifyTicket(requests[0])
                        assert resp.valid and resp.signature_valid, resp
                        if mode == "bundle":
                            assert resp.proof_valid, resp
                        else:
                            sample = resp  # the floor's answer (a bundle's adds two fields)
                        requests_by_mode[mode] = requests
                        if variant == "stock":
                            api_rates[mode] = result.rate
                        base = raw["raw nacl VerifyKey.verify"]
                        rows.append(
                            [
                                f"VerifyTicket({mode}) via API"
                                + ("" if variant == "stock" else f" [{variant}]"),
                                f"{result.rate:.0f}",
                                f"{100 * result.rate / base:.1f}%",
                                ms(pct(result.latencies(), 50)),
                                ms(pct(result.latencies(), 99)),
                                f"client {client_cpu:.1f} / api {api_cpu:.1f}",
                            ]
                        )
    floor_rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="golden-bench-") as tmp:
        # The same responses golden-press gave, from memory: the transport floor of this run.
        child, addr = await start_floor_server(Path(tmp), verified=sample.SerializeToString())
        try:
            async with grpc.aio.insecure_channel(addr) as channel:
                stub = golden_pb2_grpc.GoldenPressStub(channel)
                for mode in MODES:
                    requests = requests_by_mode[mode]
                    await run_load(
                        [partial(stub.VerifyTicket, r) for r in requests[:500]],
                        args.concurrency,
                    )
                    before, cpu0 = os.times(), cpu_seconds(child.proc.pid)
                    result = await run_load(
                        [partial(stub.VerifyTicket, r, timeout=30) for r in requests],
                        args.concurrency,
                    )
                    now = os.times()
                    client_cpu = now.user - before.user + now.system - before.system
                    server_cpu = cpu_seconds(child.proc.pid) - cpu0
                    floor_rates[mode] = result.rate
                    base = raw["raw nacl VerifyKey.verify"]
                    rows.append(
                        [
                            f"floor: same proto, same response from memory ({mode})",
                            f"{result.rate:.0f}",
                            f"{100 * result.rate / base:.1f}%",
                            ms(pct(result.latencies(), 50)),
                            ms(pct(result.latencies(), 99)),
                            f"client {client_cpu:.1f} / server {server_cpu:.1f}",
                        ]
                    )
        finally:
            child.stop()
    base = raw["raw nacl VerifyKey.verify"]
    head = [
        [name, f"{rate:.0f}", f"{100 * rate / base:.1f}%", "", "", ""] for name, rate in raw.items()
    ]
    print_table(
        f"verify: {args.calls} VerifyTicket calls, {args.concurrency} in flight -- {machine()}",
        ["path", "verifications/s", "vs raw", "p50 ms", "p99 ms", "CPU s"],
        head + rows,
    )
    rate = min(api_rates[m] for m in HEADLINE_MODES)  # the slower of by-id and by-ticket
    floor_rate = sum(floor_rates[m] for m in HEADLINE_MODES) / len(HEADLINE_MODES)
    figures = {
        "bench": "verify",
        "rate": round(rate),
        "floor_rate": round(floor_rate),
        "rate_vs_floor": round(rate / floor_rate, 2),
        "bundle_rate": round(api_rates["bundle"]),
        "bundle_vs_floor": round(api_rates["bundle"] / floor_rates["bundle"], 2),
    }
    print("\ntarget: rate_vs_floor >= 0.75 (rate: the slower of by ticket_id and by ticket)")
    print(json.dumps(figures))
    return 0


def main() -> None:
    """Parse options, run, leave with os._exit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each raw loop")
    parser.add_argument(
        "--variants",
        default="stock",
        help=f"comma-separated API variants to run, of {', '.join(API_VARIANTS)}",
    )
    args = parser.parse_args()
    finish(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
