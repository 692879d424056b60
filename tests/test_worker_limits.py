"""A worker at the edge of its limits: file descriptors and memory.

- Out of file descriptors, accept() fails with EMFILE while connections keep
  waiting: the worker stops watching the listening sockets for a moment (or
  until one of its connections closes) instead of spinning on them, logs once,
  and serves the connections it holds.
- At start the soft RLIMIT_NOFILE is raised to the hard limit.
- --max-worker-memory is checked after every request, so a leaking worker is
  recycled within a request or two of crossing its limit.

Servers run under ``prlimit`` (util-linux) where a test needs a descriptor limit.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import TESTS, Server, wait_until

needs_prlimit = pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class LimitedServer(Server):
    """A forkserve started as ``prlimit --nofile=SOFT:HARD -- python -m forkserve ...``."""

    def __init__(self, nofile: str, args: list[str], cwd: Path, log_path: Path) -> None:
        self.log_path = log_path
        self.log_file = open(log_path, "wb")  # noqa: SIM115 - lives as long as the server
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join([str(TESTS / "apps"), env.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen(
            ["prlimit", f"--nofile={nofile}", "--", sys.executable, "-m", "forkserve", *args],
            cwd=cwd,
            env=env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.pid = self.proc.pid  # prlimit execs python: the same process
        self.urls = []


@contextlib.contextmanager
def limited(tmp_path: Path, nofile: str, *args: str) -> Iterator[LimitedServer]:
    server = LimitedServer(nofile, [*args, "--bind", "127.0.0.1:0"], tmp_path, tmp_path / "server.log")
    try:
        server.wait_ready()
        yield server
    finally:
        leftovers = server.shutdown()
    assert not leftovers, f"forkserve processes survived the test: {leftovers}"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def nofile_limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError(f"no 'Max open files' in /proc/{pid}/limits")


def shared_mib(pid: int) -> float:
    """Resident MiB a process shares with others (RSS less its private pages)."""
    kib = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split()[:2]
        kib[name] = int(value)
    return (kib["Rss:"] - kib["Private_Clean:"] - kib["Private_Dirty:"]) / 1024


def get(sock: socket.socket, path: str = "/") -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"closed without an answer: {data!r}"
        data += chunk
    return data


@needs_prlimit
def test_out_of_descriptors_backs_off_instead_of_spinning(tmp_path):
    with limited(tmp_path, "64:64", "limits_app:app", "--workers", "1", "--header-timeout", "60") as server:
        worker = server.workers()[0]
        sockets = []
        try:
            for _ in range(100):
                sockets.append(server.connect())
            # The worker has taken what its descriptors allow; the rest wait in the backlog.
            assert server.wait_for_log("Too many open files", timeout=10), server.log()
            time.sleep(0.5)
            before, started = cpu_seconds(worker), time.monotonic()
            time.sleep(2.0)
            share = (cpu_seconds(worker) - before) / (time.monotonic() - started)
            assert share < 0.2, f"the worker used {share:.0%} of a core while out of descriptors"
            warnings = len(re.findall("Too many open files", server.log()))
            assert warnings <= 3, f"{warnings} warnings about accept()"
            # A connection it accepted is still served.
            assert b" 200 " in get(sockets[0]).split(b"\r\n", 1)[0] + b" "
        finally:
            for sock in sockets:
                sock.close()
        # Its connections closed: new ones are served again.
        assert wait_until(lambda: requests.get(server.url, timeout=5).status_code == 200, timeout=10)
        for _ in range(5):
            assert requests.get(server.url, timeout=5).text == str(worker)
        assert server.proc.poll() is None


@needs_prlimit
def test_soft_descriptor_limit_is_raised_to_the_hard_limit(tmp_path):
    with limited(tmp_path, "256:1024", "limits_app:app", "--workers", "2") as server:
        assert wait_until(lambda: len(server.workers()) == 2, 10)
        for worker in server.workers():
            assert nofile_limits(worker) == (1024, 1024)
        said = r"file descriptors: 1024; a worker holds at most about \d+ connections"
        assert re.search(said, server.log()), server.log()
        assert requests.get(server.url, timeout=5).status_code == 200


def test_memory_limit_is_checked_after_every_request(serve):
    server = serve("limits_app:app", "--workers", "1", "--max-worker-memory", "80")
    first = server.workers()[0]
    shared = shared_mib(first)  # resident but not unique: the interpreter's and libraries' pages
    answers = []
    for _ in range(150):
        response = requests.get(server.url + "/leak", timeout=10)
        assert response.status_code == 200
        answers.append(response.text)
        if response.text != str(first):
            break
    recycling = r"Worker \d+ uses \d+ MiB \(limit 80 MiB\); recycling"
    assert server.wait_for_log(recycling, timeout=10), server.log()
    said = re.search(r"uses (\d+) MiB \(limit 80 MiB\); recycling \(resident (\d+) MiB\)", server.log())
    assert said, server.log()
    used, resident = int(said.group(1)), int(said.group(2))
    # 2 MiB a request: recycled within a request or two of crossing the limit, not hundreds.
    assert used <= 86, f"recycled at {used} MiB"
    assert resident <= 86 + shared + 2, f"recycled at {resident} MiB resident ({shared:.0f} MiB shared)"
    served_by_first = answers.count(str(first))
    assert served_by_first <= 45, f"the first worker served {served_by_first} leaking requests"
    assert wait_until(lambda: server.workers() and first not in server.workers(), 10)
    assert requests.get(server.url, timeout=10).status_code == 200
    assert "Error" not in server.log()


def test_memory_limit_off_leaves_the_worker_alone(serve):
    server = serve("limits_app:app", "--workers", "1")
    first = server.workers()[0]
    for _ in range(20):
        assert requests.get(server.url + "/leak", timeout=10).text == str(first)
    assert "recycling" not in server.log()
    assert server.workers() == [first]
