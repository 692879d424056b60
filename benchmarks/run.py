"""Benchmarks forkserve against its peers and writes benchmarks/results/.

Owns the command line and the order of work: set up tools, then for every app,
repetition and server: start it on 127.0.0.1 port 0, warm it up, drive it with
wrk at each concurrency and connection mode while sampling its CPU and memory
from /proc, stop it; then measure how requests spread over workers, and write
results.md, results.json and results.png. Every figure is reported with its
ratio to Gunicorn sync from the same run, because absolute numbers drift on a
shared machine.

    python benchmarks/run.py            # everything, ~75 min on 2 cores
    python benchmarks/run.py --quick    # smoke test, about a minute
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import deps
import loadgen
import report
import servers
from servers import APPS, BASELINE, SERVERS, App, Context, Running, Server

HERE = Path(__file__).resolve().parent
DEFAULT_APPS = ["hello", "django", "download", "upload"]
MODES = ["keep-alive", "close"]
QUICK = {
    "servers": ["forkserve", "gunicorn-sync", "floor", "forkserve-gevent", "gunicorn-gevent"],
    "apps": ["hello"],
    "concurrency": [16],
    "modes": ["keep-alive"],
    "duration": 3.0,
    "repeat": 1,
}
WARMUP_S = 1.0


def csv(kind: type = str):
    def parse(text: str) -> list:
        return [kind(x.strip()) for x in text.split(",") if x.strip()]

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark forkserve against Gunicorn, waitress, granian, "
        "Django runserver, a minimal pre-fork Python server and nginx, on loopback.",
        epilog="Servers: " + ", ".join(SERVERS) + ". Apps: " + ", ".join(DEFAULT_APPS) + ".",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test (~1 min): hello app, forkserve + gunicorn-sync + floor + both gevent workers, c=16, "
        "keep-alive, 1 x 3 s; results go to a temp dir unless --out is given",
    )
    p.add_argument("--servers", type=csv(), help="comma-separated server names")
    p.add_argument("--apps", type=csv(), help="comma-separated apps (default: all four)")
    p.add_argument("--concurrency", type=csv(int), help="open connections per point (default 1,16,64,256)")
    p.add_argument("--modes", type=csv(), help="keep-alive and/or close (default: both)")
    p.add_argument("--duration", type=float, help="seconds per wrk run (default 5)")
    p.add_argument("--repeat", type=int, help="repetitions per point, median reported (default 3)")
    p.add_argument("--workers", type=int, default=2, help="worker processes per server (2)")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (1: it shares the cores)")
    p.add_argument("--out", type=Path, help="results dir (default benchmarks/results/)")
    p.add_argument("--no-spread", action="store_true", help="skip the spread-over-workers test")
    p.add_argument("--no-chart", action="store_true", help="skip the PNG (and matplotlib)")
    p.add_argument("--keep-tmp", action="store_true", help="keep logs and configs in the temp dir")
    args = p.parse_args(argv)
    full = {
        "servers": servers.DEFAULT_SERVERS,
        "apps": DEFAULT_APPS,
        "concurrency": [1, 16, 64, 256],
        "modes": MODES,
        "duration": 5.0,
        "repeat": 3,
    }
    for key, value in (QUICK if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.out is None:
        args.out = (
            Path(tempfile.mkdtemp(prefix="forkserve-bench-results-")) if args.quick else HERE / "results"
        )
    if args.no_spread is False and args.quick:
        args.no_spread = True  # the smoke test stays on the hello app
    for name in args.servers:
        if name not in SERVERS:
            p.error(f"unknown server {name!r}; choose from {', '.join(SERVERS)}")
    for name in args.apps:
        if name not in APPS or name == "whoami":
            p.error(f"unknown app {name!r}; choose from {', '.join(DEFAULT_APPS)}")
    for mode in args.modes:
        if mode not in MODES:
            p.error(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    if BASELINE not in args.servers:
        # Ratios need the baseline measured in the same run.
        args.servers = [BASELINE, *args.servers]
    if args.workers < 1 or args.repeat < 1 or args.duration <= 0:
        p.error("--workers, --repeat and --duration must be positive")
    return args


def our_gevent() -> str:
    """gevent's version in this interpreter, where forkserve -k gevent runs."""
    try:
        return importlib.metadata.version("gevent")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Bench:
    """One benchmark session: tools, temp dir, measured points and failures."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="forkserve-bench-"))
        self.points: dict[tuple[str, str, str, int], dict[str, Any]] = {}
        self.failures: dict[tuple[str, str], str] = {}
        self.commands: dict[str, str] = {}
        self.versions: dict[str, str] = {}
        self.spread: list[dict[str, Any]] = []
        self.forkserve_env: dict[str, str] = {}
        self.nginx = ""
        self.peers_site = ""
        self.started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")

    # ------------------------------------------------------------- setup

    def setup(self) -> None:
        args = self.args
        self.wrk = deps.ensure_wrk()
        self.versions["wrk"] = deps.tool_version([self.wrk, "--version"])
        chosen = [SERVERS[n] for n in args.servers]
        if "nginx" in args.servers and "hello" in args.apps:
            self.nginx = deps.ensure_nginx()
            self.versions["nginx"] = deps.tool_version([self.nginx, "-v"]).split("/")[-1]
        need = set().union(*(s.peers for s in chosen))
        if "django" in args.apps:
            need.add("django")
        have = deps.ensure_peers(need) if need else {}
        if not args.no_chart:
            # The chart is a nicety: a failed matplotlib install costs only the PNG.
            try:
                deps.ensure_peers({"matplotlib"})
            except (deps.SetupError, subprocess.SubprocessError) as exc:
                say(f"warning: no chart, matplotlib unavailable: {exc}")
                args.no_chart = True
        for pkg in ("gunicorn", "waitress", "granian", "django", "gevent"):
            if pkg in have:
                self.versions[pkg] = have[pkg]
        self.peers_site = deps.peers_site_packages() if need else ""
        ours = [name for name in args.servers if name.startswith("forkserve")]
        if ours:
            found = deps.forkserve_env()
            if found is None:
                for name in ours:
                    for app in args.apps:
                        self.failures[(name, app)] = (
                            "forkserve does not import from this interpreter "
                            f"({sys.executable}); run `pip install -e .` in the repo"
                        )
            else:
                self.versions["forkserve"], self.forkserve_env = found
        self.env = servers.base_env(self.tmp)
        if "django" in args.apps:
            say("[setup] django: migrate (creates the SQLite db and its one row)")
            servers.migrate_django(self.env)

    def context(self, app: App) -> Context:
        return Context(
            app=app,
            workers=self.args.workers,
            tmp=self.tmp,
            peers_bin=deps.peers_bin(),
            peers_site=self.peers_site,
            forkserve_env=self.forkserve_env,
            nginx=self.nginx,
            env=self.env,
        )

    def start(self, server: Server, app: App, tag: str) -> Running:
        log = self.tmp / f"{server.name}-{app.name}-{tag}.log"
        running = Running(server, self.context(app), log)
        if app.name == "hello" or server.name not in self.commands:
            self.commands[server.name] = self._show(running.launch.argv)
        return running

    def _show(self, argv: list[str]) -> str:
        text = shlex.join(argv)
        for path, short in (
            (str(deps.peers_bin()) + "/", ""),
            (sys.executable, "python"),
            (str(self.tmp), "$TMP"),
            (str(HERE), "benchmarks"),
        ):
            text = text.replace(path, short)
        return text

    # ------------------------------------------------------------- measure

    def measure_point(self, run: Running, port: int, script: Path, mode: str, conc: int) -> dict[str, Any]:
        args = self.args
        m = loadgen.measure_point(
            self.wrk, port, run.pid, script=script, mode=mode, concurrency=conc,
            duration=args.duration, threads=args.wrk_threads, workers=args.workers,
        )  # fmt: skip
        if run.proc.poll() is not None:
            raise servers.ServerError(f"{run.server.name} exited during the run:\n{run.log_tail()}")
        return m

    def bench_server(self, server: Server, app: App, rep: int) -> None:
        args = self.args
        script = loadgen.lua_script(self.tmp, upload=app.name == "upload")
        with self.start(server, app, f"r{rep}") as run:
            port = run.wait_ready()
            loadgen.warm_up(self.wrk, port, script, args.wrk_threads, WARMUP_S)
            for mode in args.modes:
                for conc in args.concurrency:
                    m = self.measure_point(run, port, script, mode, conc)
                    key = (app.name, server.name, mode, conc)
                    self.points.setdefault(key, {"runs": []})["runs"].append(m)
                    say(
                        f"  {server.name:<17} {mode:<10} c={conc:<3} {m['rps']:>9,.0f} req/s"
                        f"  p99 {m['p99_ms']:7.2f} ms  err {m['errors']:<5}"
                        f" cpu {m['cpu_us_per_req']:6.0f} µs/req  wrk {m['wrk_cpu_pct']:3.0f}%"
                        f"  per worker {'/'.join(map(str, m['worker_requests']))}"
                    )

    def run_app(self, app: App) -> None:
        args = self.args
        chosen = [SERVERS[n] for n in args.servers if servers.supports(SERVERS[n], app)]
        for rep in range(args.repeat):
            say(f"[{app.name}] repetition {rep + 1}/{args.repeat}")
            # Rotate the order so no server is always measured first or last.
            order = chosen[rep % len(chosen) :] + chosen[: rep % len(chosen)]
            for server in order:
                if (server.name, app.name) in self.failures:
                    continue
                try:
                    self.bench_server(server, app, rep)
                except (servers.ServerError, RuntimeError, OSError) as exc:
                    self.failures[(server.name, app.name)] = str(exc)
                    say(f"  {server.name}: FAILED: {exc}")
                    # A point half-measured before the failure is dropped.
                    for key in [k for k in self.points if k[:2] == (app.name, server.name)]:
                        del self.points[key]

    def measure_spread(self) -> None:
        app = APPS["whoami"]
        for name in self.args.servers:
            server = SERVERS[name]
            if server.reference or not servers.supports(server, app):
                continue
            if (name, self.args.apps[0]) in self.failures:
                continue
            try:
                with self.start(server, app, "spread") as run:
                    port = run.wait_ready()
                    record: dict[str, Any] = {"server": name, "label": server.label}
                    expected = 1 if name in ("waitress", "django-runserver") else self.args.workers
                    record["expected_workers"] = expected
                    for mode in MODES:
                        counts = loadgen.worker_spread(port, keepalive=mode == "keep-alive")
                        record[mode] = dict(counts)
                        # Workers that answered nothing make the spread infinite.
                        ok = len(counts) >= expected and min(counts.values()) > 0
                        record[mode + "_max_min"] = (
                            max(counts.values()) / min(counts.values()) if ok else None
                        )
                    self.spread.append(record)
                    say(f"  spread {name}: {record['keep-alive']} / {record['close']}")
            except (servers.ServerError, RuntimeError, OSError, TimeoutError) as exc:
                say(f"  spread {name}: FAILED: {exc}")

    # ------------------------------------------------------------- results

    def results(self) -> dict[str, Any]:
        args = self.args
        order = {name: i for i, name in enumerate(args.servers)}
        points = []
        for (app, server, mode, conc), data in self.points.items():
            points.append(
                {
                    "app": app,
                    "server": server,
                    "label": SERVERS[server].label,
                    "order": order[server],
                    "mode": mode,
                    "concurrency": conc,
                    "runs": data["runs"],
                    "median": report.median_of(data["runs"]),
                }
            )
        report.add_ratios(points, BASELINE)
        gunicorn = self.versions.get("gunicorn", "?")
        versions = {
            "forkserve": self.versions.get("forkserve", "not importable"),
            "forkserve-threads": self.versions.get("forkserve", "not importable"),
            "forkserve-metrics": self.versions.get("forkserve", "not importable"),
            "gunicorn-sync": self.versions.get("gunicorn", "?"),
            "gunicorn-gthread": self.versions.get("gunicorn", "?"),
            "forkserve-gevent": self.versions.get("forkserve", "not importable") + f", gevent {our_gevent()}",
            "gunicorn-gevent": f"{gunicorn}, gevent {self.versions.get('gevent', '?')}",
            "waitress": self.versions.get("waitress", "?"),
            "granian": self.versions.get("granian", "?"),
            "django-runserver": "Django " + self.versions.get("django", "?"),
            "floor": "benchmarks/floor.py",
            "nginx": self.versions.get("nginx", "?"),
        }
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        return {
            "meta": {
                "started": self.started,
                "machine": f"{os.cpu_count()} cores, {mem_gib:.0f} GiB, "
                f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
                "workers": args.workers,
                "duration_s": args.duration,
                "repeat": args.repeat,
                "quick": args.quick,
                "baseline": BASELINE,
                "baseline_label": SERVERS[BASELINE].label,
                "wrk": self.versions.get("wrk", "?"),
                "wrk_threads": args.wrk_threads,
                "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            },
            "apps": [a for a in args.apps],
            "servers": [
                {
                    "name": n,
                    "label": SERVERS[n].label,
                    "model": SERVERS[n].model.format(w=args.workers),
                    "version": versions[n],
                    "command": self.commands.get(n, "(not started)"),
                }
                for n in args.servers
            ],
            "points": points,
            "targets": report.targets(points),
            "spread": self.spread,
            "failures": [{"server": s, "app": a, "error": e} for (s, a), e in self.failures.items()],
            "notes": NOTES,
        }

    def write(self, results: dict[str, Any]) -> list[Path]:
        out: Path = self.args.out
        out.mkdir(parents=True, exist_ok=True)
        js, md, png = out / "results.json", out / "results.md", out / "results.png"
        js.write_text(json.dumps(results, indent=1) + "\n")
        md.write_text(report.markdown(results))
        written = [js, md]
        if self.args.no_chart or not results["points"]:
            return written
        try:
            try:
                report.write_chart(results, png)
            except ImportError:
                # matplotlib lives in the peers venv, not in forkserve's.
                subprocess.run(
                    [str(deps.peers_python()), str(HERE / "report.py"), "chart", str(js), str(png)],
                    check=True,
                    timeout=300,
                    capture_output=True,
                )
            written.append(png)
        except (subprocess.SubprocessError, OSError) as exc:
            say(f"warning: no chart: {exc}")
        return written

    def verdict(self, results: dict[str, Any]) -> list[str]:
        """Problems that make the run fail: a server that never answered, or a
        point without a ratio (no baseline figure to compare with)."""
        problems = [f"{f['server']} / {f['app']}: {f['error']}" for f in results["failures"]]
        for name in self.args.servers:
            for app in self.args.apps:
                if not servers.supports(SERVERS[name], APPS[app]):
                    continue
                if (name, app) in self.failures:
                    continue
                pts = [p for p in results["points"] if p["server"] == name and p["app"] == app]
                if not pts or any(p["median"]["rps"] <= 0 for p in pts):
                    problems.append(f"{name} / {app}: no successful request measured")
                elif any(p["ratio"]["rps"] is None for p in pts):
                    problems.append(f"{name} / {app}: no ratio (baseline missing)")
        return problems


NOTES = [
    "Gunicorn's sync worker closes the connection after every response, so its "
    "'keep-alive' rows still open one connection per request.",
    "waitress is single-process by design (4 threads); Django runserver is one "
    "process with a thread per connection. Neither uses --workers.",
    "Python floor = benchmarks/floor.py, a pre-fork server that does not parse "
    "HTTP; nginx answers from its config. Both are reference lines (hello only), "
    "and both send the same 13-byte body as the hello app.",
    "server CPU µs/req = user+system CPU of the master and all its descendants "
    "during the wrk run, divided by completed requests; workers that exit "
    "mid-run are counted through their parent's cutime/cstime. With "
    "'Connection: close' every request has its own connection, so it is the "
    "server CPU per closed connection.",
    "requests per worker = the run's requests split in proportion to the CPU "
    "each of the --workers busiest child processes used during the run (an "
    "estimate that needs no access log, so it works for every server); "
    "busiest worker % is the first of them over their sum (50 = even for 2 workers).",
    "RSS double-counts pages shared by forked workers; PSS splits them fairly "
    "between processes. Both are summed over the master and every descendant "
    "right after each wrk run.",
    "wrk CPU % = CPU time of wrk itself / run time (100 = one core). wrk shares "
    "the machine's cores with the server, so a high value means the load "
    "generator limited the result.",
    "errors = socket errors (connect, read, write, timeout) + non-2xx/3xx answers, as wrk counts them.",
    "Django runserver closes on 'Connection: close' without saying so in its answer; wrk "
    "then counts a read error per request, so its close-mode errors are not failed requests.",
]


def brief(error: str) -> str:
    """First line of an error, plus its last line (e.g. a traceback's cause)."""
    lines = [x.strip() for x in error.strip().splitlines() if x.strip()] or ["?"]
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"


def estimate_seconds(args: argparse.Namespace) -> float:
    starts = points = 0
    for app in args.apps:
        n = sum(servers.supports(SERVERS[s], APPS[app]) for s in args.servers)
        starts += n * args.repeat
        points += n * args.repeat * len(args.modes) * len(args.concurrency)
    return starts * (3 + WARMUP_S) + points * (args.duration + 0.5)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args)
    t0 = time.monotonic()
    try:
        try:
            bench.setup()
        except (deps.SetupError, subprocess.SubprocessError, OSError) as exc:
            say(f"FAILED during setup: {exc}")
            return 2
        say(
            f"[plan] servers: {', '.join(args.servers)}; apps: {', '.join(args.apps)}; "
            f"~{estimate_seconds(args) / 60:.1f} min"
        )
        for name in args.apps:
            bench.run_app(APPS[name])
        if not args.no_spread:
            say("[spread] counting answers per worker (whoami app)")
            bench.measure_spread()
    finally:
        if args.keep_tmp:
            say(f"[tmp] logs and configs kept in {bench.tmp}")
        else:
            shutil.rmtree(bench.tmp, ignore_errors=True)
    results = bench.results()
    written = bench.write(results)
    print(report.markdown(results))
    say(f"[done] in {time.monotonic() - t0:.0f} s; wrote " + ", ".join(map(str, written)))
    problems = bench.verdict(results)
    if problems:
        say("FAILED:\n  " + "\n  ".join(map(brief, problems)))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
