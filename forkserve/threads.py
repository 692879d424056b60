"""--threads: request threads that a worker's event loop hands connections to.

The loop keeps accepting, reading request heads and beating the heartbeat;
a connection with a request ready to run goes to the pool and comes back
through a pipe when its thread is done. Each request's start time is kept
here, so the worker can time out one request even though its loop (and so
its heartbeat) is still alive — a stuck thread cannot stop the heartbeat.
"""

from __future__ import annotations

import os
import queue
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .connection import Connection
    from .http.parser import Request


class RequestThreads:
    def __init__(self, count: int) -> None:
        from concurrent.futures import ThreadPoolExecutor  # only with --threads: every worker would carry it

        self.pool = ThreadPoolExecutor(count, thread_name_prefix="forkserve-request")
        self.done_r, self.done_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.finished: queue.SimpleQueue[Connection] = queue.SimpleQueue()
        self.running: dict[Connection, float] = {}  # connection -> when its request started

    def submit(self, connection: Connection, request: Request) -> None:
        self.running[connection] = time.monotonic()
        self.pool.submit(self._serve, connection, request)

    def _serve(self, connection: Connection, request: Request) -> None:
        try:
            connection.run_in_thread(request)
        finally:
            self.finished.put(connection)
            os.write(self.done_w, b"\0")  # wakes the loop's epoll

    def collect(self) -> list[Connection]:
        """The connections whose threads are done (called when done_r is readable)."""
        os.read(self.done_r, 4096)
        done = []
        while not self.finished.empty():
            connection = self.finished.get()
            self.running.pop(connection, None)
            done.append(connection)
        return done

    def overdue(self, timeout: float) -> list[Connection]:
        now = time.monotonic()
        return [c for c, started in self.running.items() if not c.aborted and now - started > timeout]

    @property
    def busy(self) -> bool:
        """Requests still running that can finish (aborted ones are written off)."""
        return any(not connection.aborted for connection in self.running)
