"""The Python floor: the least work a pre-fork Python server can do per request.

A reference line for the benchmarks, not a server to use. It never parses
HTTP: it reads until a blank line (``\\r\\n\\r\\n``) ends a request head and
writes one fixed response, keeping the connection open unless the head
contains ``Connection: close`` (checked as a substring). It has no WSGI, no
request bodies, no timeouts. A master binds one listening socket and forks N
children that each run an epoll loop accepting on that shared socket.

Usage: python floor.py --bind 127.0.0.1:0 --workers 2
Logs ``Listening at: http://HOST:PORT (pid MASTERPID)`` to stderr, like
forkserve. SIGTERM to the master (or its process group) stops everything; it
also stops by itself after --lifetime seconds so it can never linger.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import socket
import sys
import time

BODY = b"Hello, world!"
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n" % len(BODY)
KEEP = HEAD + b"\r\n" + BODY
CLOSE = HEAD + b"Connection: close\r\n\r\n" + BODY
MAX_HEAD = 64 * 1024  # drop a client whose "request" never ends


def send_all(conn: socket.socket, data: bytes) -> None:
    try:
        sent = conn.send(data)
    except BlockingIOError:
        sent = 0
    if sent < len(data):
        # Rare for a 100-byte answer: finish it blocking (bounded by a timeout).
        conn.settimeout(5)
        conn.sendall(data[sent:])
        conn.setblocking(False)


def serve(listener: socket.socket, deadline: float) -> None:
    """One child's event loop: accept, answer, repeat until the deadline."""
    ep = select.epoll()
    # EPOLLEXCLUSIVE: wake one child per new connection, not all of them.
    ep.register(listener.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)
    conns: dict[int, tuple[socket.socket, bytearray]] = {}
    lfd = listener.fileno()
    while time.monotonic() < deadline:
        for fd, _events in ep.poll(1.0):
            if fd == lfd:
                for _ in range(64):  # bounded: leave some for the siblings
                    try:
                        conn, _addr = listener.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    conn.setblocking(False)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conns[conn.fileno()] = (conn, bytearray())
                    ep.register(conn.fileno(), select.EPOLLIN)
                continue
            conn, buf = conns[fd]
            try:
                data = conn.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            closing = not data
            buf += data
            # Answer every complete request head in the buffer (pipelining).
            while not closing and (end := buf.find(b"\r\n\r\n")) >= 0:
                closing = b"connection: close" in bytes(buf[:end]).lower()
                del buf[: end + 4]
                try:
                    send_all(conn, CLOSE if closing else KEEP)
                except OSError:
                    closing = True
            if closing or len(buf) > MAX_HEAD:
                ep.unregister(fd)
                del conns[fd]
                conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bind", default="127.0.0.1:0", help="HOST:PORT (port 0: any)")
    parser.add_argument("--workers", type=int, default=2, help="child processes")
    parser.add_argument("--lifetime", type=float, default=3600, help="exit after this many seconds")
    args = parser.parse_args()
    host, _, port = args.bind.rpartition(":")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, int(port)))
    listener.listen(1024)
    listener.setblocking(False)
    real_port = listener.getsockname()[1]
    print(
        f"Listening at: http://{host}:{real_port} (pid {os.getpid()})",
        file=sys.stderr,
        flush=True,
    )
    deadline = time.monotonic() + args.lifetime
    children = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            try:
                serve(listener, deadline)
            finally:
                os._exit(0)
        children.append(pid)

    def stop(_signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # Reap every child; they end on SIGTERM or at the deadline.
    for _ in children:
        try:
            os.wait()
        except ChildProcessError:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
