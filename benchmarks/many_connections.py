"""10,000 concurrent keep-alive connections against 2 workers.

For each server (forkserve, Gunicorn sync and granian, hello app), measures
keep-alive throughput at 256 connections and then at --connections (10,000)
on the same running server, and prints both, their ratio, p99 and errors.

Limits raised for the run: RLIMIT_NOFILE soft -> hard for this process,
inherited by wrk and the servers; the listen backlog of every server is
asked to hold --connections (forkserve and Gunicorn ``--backlog``, granian
``--backlog``); forkserve's ``--worker-connections`` is set to
--connections so one worker may hold them all. The kernel still caps the
backlog at net.core.somaxconn, which is printed and left as it is (it is the
machine's, shared with other work); wrk's connects that overflow it are
retried by TCP. Loopback only; every loop is bounded.

    python benchmarks/many_connections.py [--connections 10000] [--duration 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import deps
import loadgen
import servers
from servers import APPS, SERVERS, Context, Running

DEFAULT_SERVERS = ["forkserve", "gunicorn-sync", "granian"]
REFERENCE_CONNECTIONS = 256
SPARE_FDS = 1000  # files besides the connections: logs, pipes, the listener


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def raise_nofile(needed: int) -> int:
    """Raises this process's RLIMIT_NOFILE soft limit to the hard one
    (children inherit it); fails if the hard limit is below ``needed``."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} < {needed}: raise it (ulimit -Hn) first")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def somaxconn() -> int:
    try:
        return int(Path("/proc/sys/net/core/somaxconn").read_text())
    except (OSError, ValueError):
        return 0


def limit_args(name: str, connections: int) -> list[str]:
    """Each server's options for holding ``connections`` at once."""
    backlog = ["--backlog", str(connections)]
    if name == "forkserve":
        return [*backlog, "--worker-connections", str(connections)]
    return backlog  # Gunicorn sync has no connection limit; granian's backpressure follows its backlog


def bench_server(wrk: str, base: Context, name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Both points on one running server: (figures at 256, figures at --connections)."""
    ctx = dataclasses.replace(base, extra_args=limit_args(name, args.connections))
    script = loadgen.lua_script(base.tmp, upload=False)
    row: dict[str, Any] = {"server": name}
    with Running(SERVERS[name], ctx, base.tmp / f"{name}.log") as run:
        port = run.wait_ready()
        loadgen.warm_up(wrk, port, script, args.wrk_threads)
        for conc in (REFERENCE_CONNECTIONS, args.connections):
            m = loadgen.measure_point(
                wrk, port, run.pid, script=script, mode="keep-alive", concurrency=conc,
                duration=args.duration, threads=args.wrk_threads, workers=args.workers,
            )  # fmt: skip
            say(
                f"  {name:<14} c={conc:<6} {m['rps']:>8,.0f} req/s  p99 {m['p99_ms']:8.2f} ms"
                f"  errors {m['errors']} {m['error_detail']}"
            )
            row[conc] = m
            if run.proc.poll() is not None:
                raise servers.ServerError(f"{name} exited during the run:\n{run.log_tail()}")
    return row


def table(rows: list[dict[str, Any]], connections: int) -> list[str]:
    ref = REFERENCE_CONNECTIONS
    out = [
        f"| server | req/s at {ref} | req/s at {connections:,} | ratio | p99 ms at {ref} "
        f"| p99 ms at {connections:,} | errors at {connections:,} | server CPU µs/req "
        "| requests per worker |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        low, high = r[ref], r[connections]
        ratio = f"×{high['rps'] / low['rps']:.2f}" if low["rps"] else "–"
        spread = " / ".join(f"{n:,}" for n in high["worker_requests"]) or "–"
        out.append(
            f"| {SERVERS[r['server']].label} | {low['rps']:,.0f} | {high['rps']:,.0f} | {ratio} "
            f"| {low['p99_ms']:.2f} | {high['p99_ms']:.2f} | {high['errors']:,} "
            f"| {high['cpu_us_per_req']:.0f} | {spread} |"
        )
    return out


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", default=",".join(DEFAULT_SERVERS), help="comma-separated")
    p.add_argument("--connections", type=int, default=10_000, help="open connections (10000)")
    p.add_argument("--duration", type=float, default=10, help="seconds per point (10)")
    p.add_argument("--workers", type=int, default=2, help="worker processes per server (2)")
    p.add_argument("--wrk-threads", type=int, default=4, help="wrk threads, at both points (4)")
    args = p.parse_args()
    args.servers = [s for s in args.servers.split(",") if s]
    for name in args.servers:
        if name not in SERVERS or SERVERS[name].reference:
            p.error(f"unknown or non-WSGI server {name!r}")
    if not 0 < args.duration <= 120 or args.connections <= REFERENCE_CONNECTIONS:
        p.error(f"--duration must be in (0, 120] and --connections above {REFERENCE_CONNECTIONS}")
    return args


def main() -> int:
    args = parse_args()
    nofile = raise_nofile(args.connections + SPARE_FDS)
    wrk = deps.ensure_wrk()
    tmp = Path(tempfile.mkdtemp(prefix="forkserve-many-"))
    rows, failed = [], []
    try:
        base = servers.standalone_context(APPS["hello"], args.servers, args.workers, tmp)
        for name in args.servers:
            say(f"[{name}] {REFERENCE_CONNECTIONS} then {args.connections:,} keep-alive connections")
            try:
                rows.append(bench_server(wrk, base, name, args))
            except (servers.ServerError, RuntimeError, OSError) as exc:
                say(f"  {name}: FAILED: {exc}")
                failed.append(name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(
        f"hello app, keep-alive, {args.workers} workers, wrk -t{args.wrk_threads}, {args.duration:g} s "
        f"per point; RLIMIT_NOFILE {nofile}, net.core.somaxconn {somaxconn()}"
    )
    print()
    print("\n".join(table(rows, args.connections)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
