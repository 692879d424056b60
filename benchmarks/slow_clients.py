"""Slow clients: do ordinary requests still get through while many connections
dribble their request heads one byte per second?

For each server (forkserve and Gunicorn sync by default, 2 workers, hello
app): open N slow connections that each send one byte of a request head per
second for a bounded time, and meanwhile send ordinary requests from a few
clients, each with a 5 s timeout. Prints how many slow connections were open
(and how many the server closed early), and the success count and p50/p99
latency of the ordinary requests. Loopback only; every loop is bounded.

    python benchmarks/slow_clients.py [--connections 200] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import servers
from servers import APPS, HOST, SERVERS, Running

SLOW_HEAD = b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"z" * 64 + b"\r\n\r\n"
NORMAL_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
REQUEST_TIMEOUT_S = 5.0


@dataclass
class Outcome:
    slow_opened: int = 0
    slow_refused: int = 0
    slow_closed_early: int = 0  # the server hung up before the dribble ended
    closed_after_s: list[float] = field(default_factory=list)  # ... this long after connecting
    latencies_ms: list[float] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)

    def fail(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1


async def slow_client(port: int, seconds: float, out: Outcome) -> None:
    """Sends one byte of a request head per second for ``seconds``."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 5)
    except (OSError, TimeoutError):
        out.slow_refused += 1
        return
    out.slow_opened += 1
    start = time.monotonic()
    eof = asyncio.ensure_future(reader.read(65536))  # done = server answered/closed
    hung_up = False
    try:
        for byte in SLOW_HEAD[: int(seconds)]:  # bounded by the head's length too
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(1)
            if eof.done():
                hung_up = True
                break
    except OSError:
        hung_up = True
    finally:
        eof.cancel()
        writer.close()
    if hung_up:
        out.slow_closed_early += 1
        out.closed_after_s.append(time.monotonic() - start)


async def normal_request(port: int) -> bytes:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(NORMAL_REQUEST)
        # The server closes after answering (Connection: close): read to EOF.
        return await reader.read(-1)
    finally:
        writer.close()


async def normal_client(port: int, until: float, out: Outcome, max_requests: int) -> None:
    for _ in range(max_requests):  # bounded by count and by time
        if time.monotonic() >= until:
            return
        t0 = time.monotonic()
        try:
            answer = await asyncio.wait_for(normal_request(port), REQUEST_TIMEOUT_S)
        except TimeoutError:
            out.fail(f"timeout {REQUEST_TIMEOUT_S:g}s")
            continue
        except OSError as exc:
            out.fail(type(exc).__name__)
            await asyncio.sleep(0.05)
            continue
        if answer.startswith(b"HTTP/1.1 200") or answer.startswith(b"HTTP/1.0 200"):
            out.latencies_ms.append((time.monotonic() - t0) * 1000)
        else:
            out.fail(answer.split(b"\r\n", 1)[0].decode(errors="replace") or "empty answer")


async def scenario(port: int, connections: int, seconds: float, clients: int) -> Outcome:
    out = Outcome()
    slow = [asyncio.ensure_future(slow_client(port, seconds, out)) for _ in range(connections)]
    await asyncio.sleep(1.5)  # let the slow connections be accepted first
    until = time.monotonic() + max(1.0, seconds - 2.5)
    await asyncio.gather(*(normal_client(port, until, out, 200_000) for _ in range(clients)))
    await asyncio.wait_for(asyncio.gather(*slow), timeout=seconds + 15)
    return out


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", default="forkserve,gunicorn-sync", help="comma-separated")
    p.add_argument("--connections", type=int, default=200, help="slow connections (200)")
    p.add_argument("--seconds", type=float, default=10, help="how long they dribble (10, max 60)")
    p.add_argument("--clients", type=int, default=4, help="concurrent ordinary clients (4)")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    args.seconds = min(max(args.seconds, 3), 60)
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    for n in names:
        if n not in SERVERS or SERVERS[n].reference:
            p.error(f"unknown or non-WSGI server {n!r}")
    tmp = Path(tempfile.mkdtemp(prefix="forkserve-slow-"))
    rows = []
    try:
        ctx = servers.standalone_context(APPS["hello"], names, args.workers, tmp)
        for name in names:
            print(f"[{name}] {args.connections} slow connections for {args.seconds:g}s ...",
                  file=sys.stderr, flush=True)  # fmt: skip
            try:
                with Running(SERVERS[name], ctx, tmp / f"{name}.log") as run:
                    port = run.wait_ready()
                    out = asyncio.run(scenario(port, args.connections, args.seconds, args.clients))
            except servers.ServerError as exc:
                print(f"[{name}] FAILED: {exc}", file=sys.stderr)
                rows.append((name, None))
                continue
            rows.append((name, out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(
        f"Ordinary requests while {args.connections} connections dribble one byte/s "
        f"for {args.seconds:g}s ({args.workers} workers, hello app, {args.clients} clients)"
    )
    print()
    print(
        "| server | slow open | slow closed early (median after) | ok requests | p50 ms | p99 ms | failures |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, out in rows:
        if out is None:
            print(f"| {SERVERS[name].label} | – | – | – | – | – | server did not start |")
            continue
        after = f" ({statistics.median(out.closed_after_s):.1f} s)" if out.closed_after_s else ""
        lat = out.latencies_ms
        fails = ", ".join(f"{k}: {v}" for k, v in sorted(out.failures.items())) or "0"
        p50 = statistics.median(lat) if lat else float("nan")
        print(
            f"| {SERVERS[name].label} | {out.slow_opened} (refused {out.slow_refused}) | "
            f"{out.slow_closed_early}{after} | {len(lat)} | {p50:.2f} | {percentile(lat, 99):.2f} "
            f"| {fails} |"
        )
    return 0 if all(out is not None for _, out in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
