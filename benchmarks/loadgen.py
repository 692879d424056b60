"""Drives load at a server: wrk runs, and a small client counting workers.

Owns: building and running one wrk command (with the Lua hook that prints its
summary as JSON), measuring the CPU wrk itself burned, one measured point (a
wrk run with the server's CPU, memory and per-worker share read from /proc
around it), and the asyncio client behind the "spread over workers" figure.
Targets are always 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import measure

HERE = Path(__file__).resolve().parent
LUA_DIR = HERE / "lua"
HOST = "127.0.0.1"


@dataclass
class WrkResult:
    """One wrk run, latencies in milliseconds."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    errors: int  # socket errors + non-2xx/3xx answers
    error_detail: dict[str, int]
    bytes_read: int
    wrk_cpu_s: float


def lua_script(tmp: Path, upload: bool) -> Path:
    """The Lua file for a run: optional 1 MiB POST setup + the JSON reporter."""
    parts = []
    if upload:
        parts.append((LUA_DIR / "upload.lua").read_text())
    parts.append((LUA_DIR / "report.lua").read_text())
    path = tmp / ("wrk-upload.lua" if upload else "wrk-report.lua")
    path.write_text("\n".join(parts))
    return path


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_wrk(
    wrk: str,
    port: int,
    *,
    script: Path,
    concurrency: int,
    duration: float,
    keepalive: bool,
    threads: int = 1,
    timeout_s: int = 5,
) -> WrkResult:
    """Runs wrk once and parses the FSBENCH line its done() hook prints."""
    argv = [wrk, "-t", str(max(1, min(threads, concurrency))), "-c", str(concurrency)]
    argv += ["-d", f"{duration:g}s", "--timeout", f"{timeout_s}s", "--latency"]
    argv += ["-s", str(script)]
    if not keepalive:
        argv += ["-H", "Connection: close"]
    argv.append(f"http://{HOST}:{port}/")
    # wrk is our only child reaped during the run, so the RUSAGE_CHILDREN
    # delta is exactly wrk's CPU time (user + system).
    before = _children_cpu()
    res = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    wrk_cpu = _children_cpu() - before
    line = next((x for x in res.stdout.splitlines() if x.startswith("FSBENCH ")), None)
    if res.returncode != 0 or line is None:
        raise RuntimeError(
            f"wrk failed (exit {res.returncode}): {res.stderr.strip()[-500:]} {res.stdout.strip()[-500:]}"
        )
    d = json.loads(line[len("FSBENCH ") :])
    seconds = d["duration_us"] / 1e6
    detail = {k: d[k] for k in ("connect", "read", "write", "timeout", "status")}
    return WrkResult(
        requests=d["requests"],
        seconds=seconds,
        rps=d["requests"] / seconds if seconds else 0.0,
        p50_ms=d["p50_us"] / 1000,
        p90_ms=d["p90_us"] / 1000,
        p99_ms=d["p99_us"] / 1000,
        p999_ms=d["p999_us"] / 1000,
        max_ms=d["max_us"] / 1000,
        errors=sum(detail.values()),
        error_detail=detail,
        bytes_read=d["bytes"],
        wrk_cpu_s=wrk_cpu,
    )


# ----------------------------------------------------------- one measured point


def warm_up(wrk: str, port: int, script: Path, threads: int = 1, seconds: float = 1.0) -> None:
    """A short keep-alive run whose figures are discarded: imports, lazy app
    setup and first database connections happen here, not in a measured run."""
    run_wrk(wrk, port, script=script, concurrency=16, duration=seconds, keepalive=True, threads=threads)


def worker_requests(before: dict[int, int], after: dict[int, int], requests: int, workers: int) -> list[int]:
    """Requests per worker, busiest first, estimated from CPU shares.

    Each of the ``workers`` busiest children gets the run's requests in
    proportion to the CPU it used during the run (``measure.children_ticks``
    before and after). Works for every server without an access log; it
    assumes a request costs a worker the same CPU whichever worker runs it.
    """
    deltas = sorted((ticks - before.get(pid, 0) for pid, ticks in after.items()), reverse=True)
    deltas = deltas[:workers]
    total = sum(deltas)
    return [round(requests * d / total) for d in deltas] if total > 0 else []


def measure_point(
    wrk: str, port: int, server_pid: int, *, mode: str, workers: int = 1, **wrk_args: Any
) -> dict[str, Any]:
    """One wrk run against ``port`` with the CPU and memory of the process
    tree rooted at ``server_pid`` read from /proc around it.

    ``mode`` is "keep-alive" or "close" (every request says ``Connection:
    close``, so the server CPU per request is its CPU per closed connection);
    ``workers`` is how many worker processes to report requests for;
    ``wrk_args`` go to ``run_wrk`` (script, concurrency, duration, threads).
    """
    cpu0, workers0 = measure.cpu_seconds(server_pid), measure.children_ticks(server_pid)
    res = run_wrk(wrk, port, keepalive=mode == "keep-alive", **wrk_args)
    cpu1, workers1 = measure.cpu_seconds(server_pid), measure.children_ticks(server_pid)
    mem = measure.tree_memory(server_pid)
    spread = worker_requests(workers0, workers1, res.requests, workers)
    return {
        "rps": res.rps,
        "p50_ms": res.p50_ms,
        "p99_ms": res.p99_ms,
        "p999_ms": res.p999_ms,
        "errors": res.errors,
        "error_detail": res.error_detail,
        "requests": res.requests,
        "seconds": res.seconds,
        "cpu_us_per_req": (cpu1 - cpu0) / res.requests * 1e6 if res.requests else 0.0,
        "server_cpu_s": cpu1 - cpu0,
        "worker_requests": spread,
        "busiest_worker_pct": 100 * spread[0] / sum(spread) if sum(spread) else 0.0,
        "rss_mib": mem.rss_kib / 1024,
        "pss_mib": mem.pss_kib / 1024,
        "processes": mem.processes,
        "wrk_cpu_pct": res.wrk_cpu_s / res.seconds * 100 if res.seconds else 0.0,
    }


# ------------------------------------------------------- spread over workers


async def _read_response(reader: asyncio.StreamReader) -> tuple[bytes, bool]:
    """Returns (body, server_wants_close) of one HTTP/1.1 response."""
    head = await reader.readuntil(b"\r\n\r\n")
    length, close = 0, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and b"close" in value.lower():
            close = True
    return await reader.readexactly(length), close


async def _client(port: int, requests: int, keepalive: bool, pids: Counter) -> None:
    """Sends ``requests`` GETs, reusing the connection while both sides allow."""
    reader = writer = None
    try:
        for i in range(requests):
            if writer is None:
                reader, writer = await asyncio.open_connection(HOST, port)
            last = not keepalive or i == requests - 1
            hdr = b"Connection: close\r\n" if last else b""
            writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + hdr + b"\r\n")
            body, close = await _read_response(reader)
            pids[body.decode()] += 1
            if close or last:
                writer.close()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()


async def _spread(port: int, clients: int, requests: int, keepalive: bool) -> Counter:
    pids: Counter = Counter()
    tasks = [_client(port, requests, keepalive, pids) for _ in range(clients)]
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    return pids


def worker_spread(port: int, keepalive: bool, clients: int = 16, requests: int = 50) -> Counter:
    """Counts answers per worker pid from ``clients`` concurrent clients.

    Keep-alive: each client keeps one connection for all its requests, so the
    count shows how connections were spread. Close: one connection per
    request, so it shows how accepts were spread.
    """
    return asyncio.run(_spread(port, clients, requests, keepalive))
