"""Runs the fuzz targets under atheris, each for a bounded time; exits 1 if any finds a crash.

    python tests/fuzz/run.py                      # every target, 20 s each
    python tests/fuzz/run.py parser --seconds 600 # one target, longer
    python tests/fuzz/run.py --runs 300           # a fixed number of inputs per target
    python tests/fuzz/run.py --runs 60000 --seed 1  # what CI runs: the same inputs every time

Each target runs in its own process (libFuzzer exits when it is done),
seeded from tests/fuzz/corpus/<target>. Inputs that add coverage go to
$FORKSERVE_FUZZ_WORK/<target> (default /tmp/forkserve-fuzz), and a
crashing input to $FORKSERVE_FUZZ_WORK/<target>-crash-<hash>: replay it with
``python tests/fuzz/fuzz_<target>.py FILE``, then add it to
tests/test_fuzz.py. Other arguments go to libFuzzer as they are
(``-jobs=2``, ``-max_len=8192`` ...).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent
TARGETS = ("parser", "chunked", "proxy")


def run_target(
    target: str, seconds: float, runs: int | None, extra: list[str], seed: int | None = None
) -> tuple[int, str]:
    work = Path(os.environ.get("FORKSERVE_FUZZ_WORK", "/tmp/forkserve-fuzz"))
    work.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(FUZZ_DIR / f"fuzz_{target}.py"), "-print_final_stats=1"]
    command.append(f"-artifact_prefix={work / target}-")
    command += [f"-runs={runs}"] if runs is not None else [f"-max_total_time={max(1, round(seconds))}"]
    env = dict(os.environ)
    if seed is not None:
        # libFuzzer's seed fixes its mutations; Python's hash seed fixes set and dict order
        # in the code under test, so the same commit explores the same inputs every run.
        command.append(f"-seed={seed}")
        env["PYTHONHASHSEED"] = str(seed)
    started = time.monotonic()
    done = subprocess.run([*command, *extra], capture_output=True, text=True, errors="replace", env=env)
    elapsed = time.monotonic() - started
    output = done.stderr + done.stdout
    summary = _summary(output)
    print(f"{target}: exit {done.returncode} in {elapsed:.1f}s; {summary}", flush=True)
    if done.returncode != 0:
        print(output[-6000:], file=sys.stderr)
        for line in output.splitlines():
            if "Test unit written to" in line:
                print(f"{target}: crashing input {line.split('written to ')[-1]}", file=sys.stderr)
    return done.returncode, output


def _summary(output: str) -> str:
    """execs, execs/s and coverage from libFuzzer's last status line and final stats."""
    runs = re.findall(r"stat::number_of_executed_units:\s+(\d+)", output)
    speed = re.findall(r"stat::average_exec_per_sec:\s+(\d+)", output)
    cov = re.findall(r"cov: (\d+) ft: (\d+) corp: (\d+)", output)
    parts = []
    if runs:
        parts.append(f"{runs[-1]} inputs")
    if speed:
        parts.append(f"{speed[-1]} execs/s")
    if cov:
        parts.append("cov {} ft {} corpus {}".format(*cov[-1]))
    return ", ".join(parts) or "no stats (did the target start?)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("targets", nargs="*", help=f"any of {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--seconds", type=float, default=20.0, help="per target (default 20)")
    parser.add_argument("--runs", type=int, help="a number of inputs per target instead of a time")
    parser.add_argument("--seed", type=int, help="a fixed seed: the same inputs on every run")
    args, extra = parser.parse_known_args(argv)
    extra = [arg for arg in extra if arg != "--"]
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown target {', '.join(sorted(unknown))}; choose from {', '.join(TARGETS)}")
    failed = [
        t for t in args.targets or TARGETS if run_target(t, args.seconds, args.runs, extra, args.seed)[0] != 0
    ]
    if failed:
        print(f"fuzzing found a crash in: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
