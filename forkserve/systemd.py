"""systemd integration with the standard library only.

Socket activation: ``listen_fds()`` takes the sockets systemd passed
(``LISTEN_FDS`` / ``LISTEN_PID`` / ``LISTEN_FDNAMES``). Readiness:
``notify()`` sends ``READY=1``, ``RELOADING=1``, ``STOPPING=1`` or
``MAINPID=`` to ``$NOTIFY_SOCKET`` for ``Type=notify`` units.
"""

from __future__ import annotations

import os
import socket

SD_LISTEN_FDS_START = 3


def listen_fds() -> list[tuple[int, str]]:
    """(fd, name) of each socket systemd passed to this process; consumes the variables."""
    try:
        if int(os.environ.get("LISTEN_PID", "")) != os.getpid():
            return []
        count = int(os.environ.get("LISTEN_FDS", ""))
    except ValueError:
        return []
    names = os.environ.get("LISTEN_FDNAMES", "").split(":")
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(key, None)  # children must not take them as their own
    fds = range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count)
    return [(fd, names[i] if i < len(names) and names[i] else f"fd{fd}") for i, fd in enumerate(fds)]


def notify(message: str) -> bool:
    """Send one sd_notify message; False when not run under a notify socket."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), address)
    except OSError:
        return False
    return True
