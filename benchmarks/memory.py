"""Memory per process of the Django bench project, with and without --preload.

Starts each variant (forkserve and Gunicorn sync, each with and without
--preload, 2 workers), sends a few seconds of requests so every worker has
imported and used Django, then reads RSS, PSS and USS of the master and each
worker from /proc/PID/smaps_rollup and prints a table.

USS (private pages) is what a process would give back if it exited; PSS adds
its fair share of pages shared with siblings (copy-on-write after fork), so
the PSS column sums to the real total. Preloading the app (forkserve: in
a template process the workers fork from; Gunicorn: in the master) should
move Django's pages from each worker's USS into shared pages.

    python benchmarks/memory.py [--workers 2] [--servers forkserve,gunicorn-sync]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
from pathlib import Path

import deps
import loadgen
import measure
import servers
from servers import APPS, SERVERS, Running


def per_process(master: int) -> list[tuple[str, int, measure.Memory]]:
    """(role, pid, memory) for the master and every direct child (workers)."""
    rows = [("master", master, measure.process_memory(master))]
    for pid in measure.tree_pids(master):
        st = measure.read_stat(pid)
        if pid != master and st is not None and st.ppid == master:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
            role = "template" if title.startswith(b"forkserve: template") else "worker"
            rows.append((role, pid, measure.process_memory(pid)))
    return rows


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", default="forkserve,gunicorn-sync", help="comma-separated")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--load-seconds", type=float, default=3, help="wrk run before reading")
    args = p.parse_args()
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    for n in names:
        if n not in ("forkserve", "gunicorn-sync", "gunicorn-gthread"):
            p.error(f"{n!r}: only servers with --preload: forkserve, gunicorn-sync/gthread")
    wrk = deps.ensure_wrk()
    tmp = Path(tempfile.mkdtemp(prefix="forkserve-memory-"))
    table: list[str] = []
    failed = False
    try:
        base = servers.standalone_context(APPS["django"], names, args.workers, tmp)
        script = loadgen.lua_script(tmp, upload=False)
        for name in names:
            for preload in (False, True):
                variant = f"{SERVERS[name].label}{' --preload' if preload else ''}"
                print(f"[{variant}] starting", file=sys.stderr, flush=True)
                ctx = dataclasses.replace(base, extra_args=["--preload"] if preload else [])
                log = tmp / f"{name}-{preload}.log"
                try:
                    with Running(SERVERS[name], ctx, log) as run:
                        port = run.wait_ready()
                        res = loadgen.run_wrk(
                            wrk, port, script=script, concurrency=8,
                            duration=args.load_seconds, keepalive=True,
                        )  # fmt: skip
                        rows = per_process(run.pid)
                except (servers.ServerError, RuntimeError) as exc:
                    print(f"[{variant}] FAILED: {exc}", file=sys.stderr)
                    failed = True
                    continue
                total = measure.Memory()
                for role, pid, mem in rows:
                    total = total + mem
                    table.append(
                        f"| {variant} | {role} {pid} | {mib(mem.rss_kib)} | "
                        f"{mib(mem.pss_kib)} | {mib(mem.uss_kib)} | |"
                    )
                table.append(
                    f"| **{variant}** | **total ({total.processes} processes)** | "
                    f"{mib(total.rss_kib)} | **{mib(total.pss_kib)}** | "
                    f"{mib(total.uss_kib)} | {res.requests:,} ({res.errors} errors) |"
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(
        f"Django bench project, {args.workers} workers, after {args.load_seconds:g}s of "
        "requests (MiB; PSS sums to the real total, USS = private to the process)"
    )
    print()
    print("| variant | process | RSS | PSS | USS | requests served |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    print("\n".join(table))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
