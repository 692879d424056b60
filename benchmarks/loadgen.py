"""Drives load at a server: wrk runs, and a small client counting workers.

Owns: building and running one wrk command (with the Lua hook that prints its
summary as JSON), measuring the CPU wrk itself burned, and the asyncio client
behind the "spread over workers" figure. Targets are always 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

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
