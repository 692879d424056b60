"""A bounded stream of client requests, run in threads while a test acts on the server.

Each client thread sends requests in a loop until told to stop (or a hard
cap of time and count is hit), half of them over keep-alive sessions and
half on fresh connections, and records every failure with its reason.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import requests

MAX_SECONDS = 120.0
MAX_REQUESTS_PER_CLIENT = 20_000


@dataclass
class Traffic:
    url: str
    clients: int = 4
    path: str = "/pid"
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    pids: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._client, args=(i % 2 == 0,), daemon=True)
            for i in range(self.clients)
        ]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        """Block until at least ``count`` more requests succeeded (bounded)."""
        target = self.ok + count
        deadline = time.monotonic() + timeout
        while self.ok < target and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.ok >= target, f"traffic stalled at {self.ok} (failures: {self.failures[:5]})"

    def _client(self, keep_alive: bool) -> None:
        session = requests.Session() if keep_alive else None
        started = time.monotonic()
        for _ in range(MAX_REQUESTS_PER_CLIENT):
            if self._stop.is_set() or time.monotonic() - started > MAX_SECONDS:
                break
            try:
                if session is not None:
                    response = session.get(self.url + self.path, timeout=30)
                else:
                    response = requests.get(self.url + self.path, timeout=30, headers={"Connection": "close"})
                good = response.status_code == 200
                reason = f"status {response.status_code}"
            except requests.RequestException as exc:
                good, reason = False, repr(exc)
            with self._lock:
                if good:
                    self.ok += 1
                    self.pids.add(response.text)
                else:
                    self.failures.append(reason)
        if session is not None:
            session.close()


class PoolSampler:
    """Counts the master's workers every ~20 ms in a thread (bounded in time), as a reload or scaling runs."""

    def __init__(self, server, interval: float = 0.02, max_seconds: float = 90.0) -> None:
        self.server = server
        self.interval = interval
        self.max_seconds = max_seconds
        self.counts: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PoolSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.counts.append(len(self.server.workers()))
            self._stop.wait(self.interval)
