"""Waiting for a condition, finding the processes of a group, and starting nginx: shared by
the fixtures (conftest.py), the nginx tests and the fleet test bed (fleet.py), which
benchmarks/fleet.py also runs."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is truthy or ``timeout`` passes (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) processes in a process group, read from /proc."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def launch_nginx(prefix: Path, config: Path, listeners: Iterable[socket.socket]) -> subprocess.Popen[bytes]:
    """nginx in the foreground of its own session, on listening sockets it inherits.

    nginx takes inherited sockets from its NGINX variable; its output goes to
    ``prefix/stderr.log``. The caller closes its own copies of the sockets.
    The test's temporary folders belong to root with mode 700, so nginx's
    workers run as root too (a deployment uses its own user, e.g. www-data).
    """
    fds = [sock.fileno() for sock in listeners]
    with open(prefix / "stderr.log", "wb") as log:
        return subprocess.Popen(
            ["nginx", "-p", str(prefix), "-c", str(config), "-g", "daemon off; user root root;"],
            env={**os.environ, "NGINX": "".join(f"{fd};" for fd in fds)},
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=fds,
            start_new_session=True,
        )
