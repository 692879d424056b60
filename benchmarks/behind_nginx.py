"""forkserve behind nginx, the way the README deploys it, against Gunicorn
sync and granian behind the same nginx.

nginx runs with conf/nginx.conf itself (one worker process, upstream
keep-alive over a unix socket; only its TLS block is left out), in the
foreground, with its own prefix in a temp dir, on 127.0.0.1 with a port the
kernel picked (the socket is bound here and handed over, see servers.py). Each
server listens on its own unix socket in that temp dir. wrk drives nginx with
keep-alive connections; the server CPU and requests per worker are the
backend's, read from /proc. The system's own nginx service is never touched.

    python benchmarks/behind_nginx.py [--apps hello,django] [--concurrency 16,64,256]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import deps
import loadgen
import servers
from servers import APPS, BASELINE, SERVERS, Context, Running

BACKENDS = ["forkserve", BASELINE, "granian"]


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def bench_backend(wrk: str, base: Context, name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Starts ``name`` on a unix socket and nginx in front of it, then measures
    every concurrency through nginx. Returns one point per concurrency."""
    sock = str(base.tmp / f"{base.app.name}-{name}.sock")
    ctx = dataclasses.replace(base, unix_socket=sock)
    script = loadgen.lua_script(base.tmp, upload=False)
    points = []
    with Running(SERVERS[name], ctx, base.tmp / f"{name}-{base.app.name}.log") as backend:
        backend.wait_unix_socket(sock)
        with Running(servers.NGINX_PROXY, ctx, base.tmp / f"nginx-{name}-{base.app.name}.log") as proxy:
            port = proxy.wait_ready()  # the smoke request goes through nginx to the server
            loadgen.warm_up(wrk, port, script)
            for conc in args.concurrency:
                m = loadgen.measure_point(
                    wrk, port, backend.pid, script=script, mode="keep-alive", concurrency=conc,
                    duration=args.duration, workers=args.workers,
                )  # fmt: skip
                m.update(app=base.app.name, server=name, concurrency=conc)
                say(
                    f"  {name:<14} c={conc:<4} {m['rps']:>8,.0f} req/s  p99 {m['p99_ms']:7.2f} ms"
                    f"  err {m['errors']}  per worker {'/'.join(map(str, m['worker_requests']))}"
                )
                points.append(m)
    return points


def table(points: list[dict[str, Any]]) -> list[str]:
    """Markdown rows with each figure's ratio to Gunicorn sync at the same point."""
    base = {(p["app"], p["concurrency"]): p for p in points if p["server"] == BASELINE}
    out = [
        "| app | c | server | req/s | × Gunicorn | p99 ms | p99 × Gunicorn | errors "
        "| server CPU µs/req | requests per worker |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    apps = {app: i for i, app in enumerate(dict.fromkeys(p["app"] for p in points))}
    # By app and concurrency; the stable sort keeps the servers in run order.
    for p in sorted(points, key=lambda p: (apps[p["app"]], p["concurrency"])):
        b = base.get((p["app"], p["concurrency"]))
        rps = f"×{p['rps'] / b['rps']:.2f}" if b and b["rps"] else "–"
        p99 = f"×{p['p99_ms'] / b['p99_ms']:.2f}" if b and b["p99_ms"] else "–"
        spread = " / ".join(f"{n:,}" for n in p["worker_requests"]) or "–"
        out.append(
            f"| {p['app']} | {p['concurrency']} | {SERVERS[p['server']].label} | {p['rps']:,.0f} | {rps} "
            f"| {p['p99_ms']:.2f} | {p99} | {p['errors']} | {p['cpu_us_per_req']:.0f} | {spread} |"
        )
    return out


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--apps", default="hello,django", help="comma-separated: hello, django (both)")
    p.add_argument("--servers", default=",".join(BACKENDS), help="comma-separated backends")
    p.add_argument("--concurrency", default="16,64,256", help="client connections to nginx")
    p.add_argument("--duration", type=float, default=5, help="seconds per point (5)")
    p.add_argument("--workers", type=int, default=2, help="worker processes per server (2)")
    args = p.parse_args()
    args.apps = [a for a in args.apps.split(",") if a]
    args.servers = [s for s in args.servers.split(",") if s]
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c]
    for app in args.apps:
        if app not in ("hello", "django"):
            p.error(f"unknown app {app!r}")
    for name in args.servers:
        if name not in BACKENDS:
            p.error(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    if BASELINE not in args.servers:
        args.servers.insert(0, BASELINE)  # the ratios need it
    return args


def main() -> int:
    args = parse_args()
    wrk = deps.ensure_wrk()
    deps.ensure_nginx()
    tmp = Path(tempfile.mkdtemp(prefix="forkserve-nginx-"))
    points: list[dict[str, Any]] = []
    failed = []
    try:
        for app in args.apps:
            base = servers.standalone_context(APPS[app], args.servers, args.workers, tmp)
            for name in args.servers:
                say(f"[{app}] {name} behind nginx")
                try:
                    points += bench_backend(wrk, base, name, args)
                except (servers.ServerError, RuntimeError, OSError) as exc:
                    say(f"  {name}: FAILED: {exc}")
                    failed.append(f"{name} / {app}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(
        f"Behind nginx (conf/nginx.conf, upstream over a unix socket), {args.workers} workers per "
        f"server, keep-alive clients, {args.duration:g} s per point"
    )
    print()
    print("\n".join(table(points)))
    if failed:
        say("FAILED: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
