"""The failover table: the fleet scenarios of tests/test_fleet.py, with longer load if asked.

    sudo python benchmarks/fleet.py                 # a few seconds of load per scenario
    sudo python benchmarks/fleet.py --seconds 30    # 30 s more steady load around each event

Builds the test bed of tests/fleet.py (three forkserve hosts in network
namespaces, a fourth that joins, nginx and HAProxy in front), runs each
scenario under load through both balancers at once, and prints, per
scenario x balancer x kind, the requests sent and failed, and the slowest
request. Needs root, iproute2, nginx and haproxy (tests/install.sh).
Everything it creates is removed at exit, even after an error.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fleet import Fleet, Load, alive, failover_table, fleet, wait_until


def graceful_stop(bed: Fleet, load: Load, args: argparse.Namespace) -> None:
    master = bed.host("h1").master()
    os.kill(master, signal.SIGTERM)
    wait_until(lambda: not alive(master), 30)


def kill(bed: Fleet, load: Load, args: argparse.Namespace) -> None:
    bed.host("h2").kill()


def cut_link(bed: Fleet, load: Load, args: argparse.Namespace) -> None:
    host = bed.host("h3")
    host.cut_link()
    load.run_for(args.cut_seconds)
    host.restore_link()


def rolling_upgrade(bed: Fleet, load: Load, args: argparse.Namespace) -> None:
    for host in bed.serving_hosts():
        host.upgrade("v2")
        load.wait_for(100)
    for host in bed.serving_hosts():
        host.write_app("v3")
        host.restart()
        load.wait_for(100)


def rolling_reload(bed: Fleet, load: Load, args: argparse.Namespace) -> None:
    for host in bed.serving_hosts():
        host.reload("c2")
        load.wait_for(100)


def join(bed: Fleet, load: Load, args: argparse.Namespace) -> None:
    bed.host("h4").start()
    joined = time.monotonic()
    wait_until(lambda: sum(s.host == "h4" for s in load.since(joined)) >= 20, 15)


SCENARIOS: list[tuple[str, Callable[[Fleet, Load, argparse.Namespace], None]]] = [
    ("1 SIGTERM (graceful)", graceful_stop),
    ("2 SIGKILL", kill),
    ("3 link cut", cut_link),
    ("4 rolling upgrade", rolling_upgrade),
    ("5 rolling reload (HUP)", rolling_reload),
    ("6 host joins", join),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="steady load before and after each event")
    parser.add_argument("--cut-seconds", type=float, default=4.0, help="how long the link stays cut")
    args = parser.parse_args()
    results: dict[str, Load] = {}
    with tempfile.TemporaryDirectory(prefix="forkserve-fleet-") as root, fleet(Path(root)) as bed:
        for name, event in SCENARIOS:
            bed.heal()
            began = time.monotonic()
            with bed.load(max_seconds=args.seconds * 2 + args.cut_seconds + 120) as load:
                load.run_for(args.seconds)
                event(bed, load, args)
                load.run_for(args.seconds)
            results[name] = load
            print(f"{name}: {time.monotonic() - began:.1f}s", file=sys.stderr)
    print("\n".join(failover_table(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
