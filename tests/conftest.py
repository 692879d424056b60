"""Fixtures that run forkserve as a real process on a real socket.

``serve(...)`` starts ``python -m forkserve`` in its own process group,
learns the real address from the "Listening at:" log line (every test
binds port 0), and at teardown stops it and checks that no process of
that group survived. Only processes the test started are ever signalled.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from procs import group_pids, wait_until

TESTS = Path(__file__).resolve().parent
LISTENING = re.compile(r"Listening at: (\S+) \(pid (\d+)\)")


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def workers_of(pid: int) -> list[int]:
    """The master's worker processes: its children, less a --preload template process."""
    workers = []
    for child in children_of(pid):
        try:
            title = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if not title.startswith(b"forkserve: template"):
            workers.append(child)
    return workers


class Server:
    """One forkserve process tree started by a test."""

    def __init__(self, args: list[str], cwd: Path, log_path: Path, env: dict[str, str] | None) -> None:
        self.log_path = log_path
        self.log_file = open(log_path, "wb")  # noqa: SIM115 - lives as long as the server
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join([str(TESTS / "apps"), full_env.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "forkserve", *args],
            cwd=cwd,
            env=full_env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self.urls: list[str] = []

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 10.0, count: int = 1) -> bool:
        regex = re.compile(pattern)
        return wait_until(lambda: len(regex.findall(self.log())) >= count, timeout)

    def wait_ready(self, listeners: int = 1, workers: int = 1, timeout: float = 15.0) -> None:
        ok = wait_until(
            lambda: (
                self.proc.poll() is not None
                or (
                    len(LISTENING.findall(self.log())) >= listeners
                    and len(re.findall(r"Booting worker", self.log())) >= workers
                )
            ),
            timeout,
        )
        if not ok or self.proc.poll() is not None:
            raise AssertionError(f"forkserve did not become ready:\n{self.log()}")
        # With --preload a worker can say it booted a moment before the template's
        # intermediate process exits and hands it to the master: let it arrive.
        # (No assertion: a test may start workers that are meant to die.)
        wait_until(lambda: len(workers_of(self.pid)) >= workers, 5)
        self.urls = [url for url, _ in LISTENING.findall(self.log())]

    @property
    def url(self) -> str:
        return self.urls[0]

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        return host.strip("[]"), int(port)

    def connect(self, timeout: float = 10.0) -> socket.socket:
        host, port = self.address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect((host, port))
        return sock

    def workers(self) -> list[int]:
        return workers_of(self.pid)

    def send_signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the master and wait for it; returns its exit code."""
        if self.proc.poll() is None:
            self.send_signal(signum)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"forkserve did not stop on {signal.Signals(signum).name}:\n{self.log()}"
            ) from None

    def kill(self) -> None:
        for pid in group_pids(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)

    def survivors(self) -> list[int]:
        return group_pids(self.pid)

    def shutdown(self) -> list[int]:
        """Stop the tree if it still runs; returns the pids that outlived it (killed now)."""
        if self.proc.poll() is None:
            self.stop(signal.SIGTERM)
        # The group may still hold workers for a moment after the master exits.
        wait_until(lambda: not self.survivors(), timeout=10)
        leftovers = self.survivors()
        self.kill()
        self.log_file.close()
        return leftovers


@contextmanager
def running(
    args: list[str],
    cwd: Path,
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
    workers: int = 1,
) -> Iterator[Server]:
    """A forkserve server that outlives one test (module fixtures), with the same survivor check."""
    server = Server([*args, "--bind", "127.0.0.1:0"], cwd, log_path or cwd / "server.log", env)
    try:
        server.wait_ready(workers=workers)
        yield server
    finally:
        leftovers = server.shutdown()
    assert not leftovers, f"forkserve processes survived: {leftovers}"


def run_forkserve(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run forkserve expecting it to exit by itself (errors, --check-config, --print-config)."""
    full_env = {**os.environ, "PYTHONPATH": str(TESTS / "apps"), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "forkserve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=cwd,
        start_new_session=True,
    )


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start forkserve: ``serve("app:name", "--workers", "2")`` -> ready Server."""
    started: list[Server] = []

    def start(
        *args: str,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        ready: bool = True,
        listeners: int = 1,
        workers: int = 1,
    ) -> Server:
        argv = list(args)
        if not any(a in ("-b", "--bind") or a.startswith("--bind=") for a in argv):
            argv += ["--bind", "127.0.0.1:0"]
        server = Server(argv, cwd or tmp_path, tmp_path / f"server{len(started)}.log", env)
        started.append(server)
        if ready:
            server.wait_ready(listeners=listeners, workers=workers)
        return server

    yield start
    leftovers = []
    for server in started:
        leftovers += server.shutdown()
    assert not leftovers, f"forkserve processes survived the test: {leftovers}"


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory other users may enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="forkserve-sock-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def http_exchange(sock: socket.socket, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes and read until the server closes the connection."""
    sock.settimeout(timeout)
    sock.sendall(data)
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


class ResponseReader:
    """Reads successive raw responses from one socket, keeping leftover bytes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _need(self, n: int) -> None:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed early; have {self.buf[:200]!r}")
            self.buf += chunk

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._need(len(self.buf) + 1)
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def read(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        """One response: (status, lower-cased headers, body)."""
        while b"\r\n\r\n" not in self.buf:
            self._need(len(self.buf) + 1)
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if head_only or status < 200 or status in (204, 304):
            return status, headers, b""
        if "content-length" in headers:
            n = int(headers["content-length"])
            self._need(n)
            body, self.buf = self.buf[:n], self.buf[n:]
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int(self._line(), 16)
                self._need(size + 2)
                body += self.buf[:size]
                self.buf = self.buf[size + 2 :]
                if size == 0:
                    break
        else:
            body = self.rest()
        return status, headers, body

    def rest(self) -> bytes:
        """Everything until the server closes the connection."""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            self.buf += chunk
        data, self.buf = self.buf, b""
        return data

    def closed(self) -> bool:
        """True when the server closed the connection with nothing more to say."""
        return self.rest() == b""
