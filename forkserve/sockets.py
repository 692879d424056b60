"""Listening sockets: parse ``--bind`` values, create, bind and listen.

The master calls ``open_listeners()`` before forking, so every worker
inherits the same sockets and the kernel spreads connections among them.
With port 0 the kernel picks a port; ``Listener.url`` reports the real one.

A unix socket file is created under the ``umask`` setting alone, whose
default is 0 as in Gunicorn: the socket is connectable by any user (a
proxy such as nginx usually runs as another user), and the directory it
lives in decides who can reach it.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import sys
from dataclasses import dataclass, field

UPGRADE_FDS = "FORKSERVE_FDS"  # the listening fds a new master inherits on SIGUSR2


class BindError(ValueError):
    """A bind address that cannot be parsed or opened."""


@dataclass(frozen=True, slots=True)
class SocketOptions:
    """How listening sockets are made: --backlog, --umask, --reuse-port."""

    backlog: int = 2048
    umask: int = 0
    reuse_port: bool = False


@dataclass(frozen=True, slots=True)
class Address:
    """One parsed --bind value."""

    family: socket.AddressFamily
    host: str = ""
    port: int = 0
    path: str = ""  # unix sockets
    fd: int = -1  # fd://N
    name: str = ""  # fd://NAME: a socket systemd passed under that name


@dataclass(slots=True)
class Listener:
    """A bound, listening socket and where it really listens."""

    sock: socket.socket
    address: Address
    diag: UnixQueueProbe | None = field(default=None, compare=False, repr=False)  # unix sockets, per process

    @property
    def url(self) -> str:
        if self.address.family == socket.AF_UNIX:
            return f"unix:{self.sock.getsockname()}"
        host, port = self.sock.getsockname()[:2]
        shown = f"[{host}]" if self.sock.family == socket.AF_INET6 else host
        return f"http://{shown}:{port}"

    @property
    def server_name(self) -> tuple[str, str]:
        """SERVER_NAME and SERVER_PORT for requests arriving here."""
        if self.sock.family == socket.AF_UNIX:
            return "localhost", ""
        host, port = self.sock.getsockname()[:2]
        return host, str(port)

    def waiting(self) -> int | None:
        """How many connections wait in the accept queue (None where the kernel will not say)."""
        queue = self.queue()
        return None if queue is None else queue[0]

    def queue(self) -> tuple[int, int] | None:
        """The accept queue's length and its limit (None where the kernel will not say)."""
        if self.sock.family == socket.AF_UNIX:
            if self.diag is None or self.diag.pid != os.getpid():  # a forked worker asks on its own socket
                self.diag = UnixQueueProbe(self.sock)
            return self.diag.queue()
        # struct tcp_info: on a listening socket, tcpi_unacked (offset 24) is the
        # accept queue's length and tcpi_sacked (offset 28) its limit (Linux).
        try:
            info = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 32)
        except OSError:  # a kernel or sandbox without it: balancing falls back to batches
            return None
        return int.from_bytes(info[24:28], sys.byteorder), int.from_bytes(info[28:32], sys.byteorder)

    def close(self, remove_file: bool = True) -> None:
        self.sock.close()
        if remove_file and self.address.family == socket.AF_UNIX and self.address.path:
            remove_socket_file(self.address.path)


class UnixQueueProbe:
    """Reads a listening unix socket's accept queue, as ``ss -xl`` does.

    A unix socket has no TCP_INFO, and ``SIOCINQ`` refuses a listening one;
    the kernel's socket-diagnostics netlink family answers instead (the
    length in ``udiag_rqueue``, the limit in ``udiag_wqueue``). One netlink
    socket per process, so that a worker never reads an answer meant for a
    sibling. Where netlink is not allowed (some sandboxes) the probe says
    None, and balancing falls back to batches.
    """

    # <linux/netlink.h>, <linux/sock_diag.h>, <linux/unix_diag.h>
    NETLINK_SOCK_DIAG = 4
    SOCK_DIAG_BY_FAMILY = 20
    NLMSG_ERROR = 2
    NLM_F_REQUEST = 1
    UDIAG_SHOW_RQLEN = 0x10
    UNIX_DIAG_RQLEN = 4
    NO_COOKIE = 0xFFFFFFFF
    HEADER = struct.Struct("=IHHII")  # nlmsghdr
    REQUEST = struct.Struct("=BBHIII2I")  # unix_diag_req
    MESSAGE = 16  # sizeof(struct unix_diag_msg), after which the attributes start

    def __init__(self, sock: socket.socket) -> None:
        self.pid = os.getpid()
        self.inode = os.fstat(sock.fileno()).st_ino
        self.netlink: socket.socket | None = None
        self.request = b""
        try:
            self.netlink = socket.socket(
                socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, self.NETLINK_SOCK_DIAG
            )
        except OSError:
            return
        body = self.REQUEST.pack(
            socket.AF_UNIX, 0, 0, 0, self.inode, self.UDIAG_SHOW_RQLEN, self.NO_COOKIE, self.NO_COOKIE
        )
        header = self.HEADER.pack(
            self.HEADER.size + len(body), self.SOCK_DIAG_BY_FAMILY, self.NLM_F_REQUEST, 1, 0
        )
        self.request = header + body

    def queue(self) -> tuple[int, int] | None:
        """(waiting connections, backlog limit), or None if the kernel did not answer."""
        if self.netlink is None:
            return None
        try:
            self.netlink.send(self.request)
            reply = self.netlink.recv(512)
        except OSError:
            reply = b""
        length, kind = self.HEADER.unpack_from(reply)[:2] if len(reply) >= self.HEADER.size else (0, 0)
        if not length or kind == self.NLMSG_ERROR:
            # Not allowed here, or no unix_diag in this kernel: it will not answer later either.
            self.netlink.close()
            self.netlink = None
            return None
        offset = self.HEADER.size + self.MESSAGE
        while offset + 4 <= min(length, len(reply)):  # struct rtattr: length, type, payload (4-aligned)
            size, attribute = struct.unpack_from("=HH", reply, offset)
            if size < 4:
                break
            if attribute == self.UNIX_DIAG_RQLEN and size >= 12:
                waiting, limit = struct.unpack_from("=II", reply, offset + 4)
                return waiting, limit
            offset += (size + 3) & ~3
        return None


def parse_bind(value: str) -> Address:
    """Parse one bind value: HOST:PORT, :PORT, [IPV6]:PORT, unix:PATH, fd://N (tcp:// allowed)."""
    value = value.strip().removeprefix("tcp://")
    if value.startswith("unix:"):
        path = value[5:]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise BindError(f"bind {value!r}: unix: needs a path, e.g. unix:/run/app.sock")
        return Address(socket.AF_UNIX, path=path)
    if value.startswith("fd://"):
        number = value[5:]
        if number.isdigit():
            return Address(socket.AF_INET, fd=int(number))
        if not number:
            raise BindError(f"bind {value!r}: fd:// needs a file descriptor number, e.g. fd://3")
        return Address(socket.AF_INET, name=number)
    if value.startswith("["):
        host, sep, port = value[1:].partition("]")
        if not sep or (port and not port.startswith(":")):
            raise BindError(f"bind {value!r}: expected [IPV6]:PORT, e.g. [::1]:8000")
        return Address(socket.AF_INET6, host, _port(value, port[1:] or "8000"))
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = value, "8000"  # a bare host, as in Gunicorn
    if ":" in host:
        raise BindError(f"bind {value!r}: put an IPv6 address in brackets, e.g. [::1]:8000")
    return Address(socket.AF_INET, host or "0.0.0.0", _port(value, port))


def _port(value: str, port: str) -> int:
    if not port.isdigit() or int(port) > 65535:
        raise BindError(f"bind {value!r}: port must be a number from 0 to 65535")
    return int(port)


def open_listener(address: Address, options: SocketOptions) -> Listener:
    backlog = options.backlog
    if address.name:
        raise BindError(f"bind fd://{address.name}: named sockets come from systemd socket activation")
    if address.fd >= 0:
        sock = socket.socket(fileno=address.fd)
        if sock.type != socket.SOCK_STREAM:
            raise BindError(f"fd://{address.fd} is not a stream socket")
        sock.listen(backlog)
        return Listener(sock, Address(sock.family, fd=address.fd))
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        if address.family == socket.AF_UNIX:
            remove_socket_file(address.path)
            old_umask = os.umask(options.umask)
            try:
                sock.bind(address.path)
            finally:
                os.umask(old_umask)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if options.reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if address.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address.host, address.port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        where = address.path or f"{address.host}:{address.port}"
        raise BindError(f"cannot listen on {where}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return Listener(sock, address)


def open_listeners(binds: tuple[str, ...], options: SocketOptions) -> list[Listener]:
    listeners: list[Listener] = []
    try:
        for value in binds:
            listeners.append(open_listener(parse_bind(value), options))
    except BindError:
        for listener in listeners:
            listener.close()
        raise
    return listeners


def inherited_listeners(binds: tuple[str, ...]) -> list[Listener]:
    """Sockets handed over by a previous master (SIGUSR2) or by systemd.

    Either way nothing is bound anew, so no connection is refused while
    the handover happens, and we never remove these sockets' files. Under
    socket activation, ``--bind fd://NAME`` picks the sockets systemd
    passed under those names (``FileDescriptorName=``); without such binds
    every passed socket is used.
    """
    from . import systemd

    handed = os.environ.pop(UPGRADE_FDS, "")
    if handed:
        chosen = [int(fd) for fd in handed.split(",") if fd.isdigit()]
    else:
        passed = systemd.listen_fds()
        names = [address.name for address in map(parse_bind, binds) if address.name]
        chosen = [fd for fd, name in passed if not names or name in names]
        missing = set(names) - {name for _, name in passed}
        if passed and missing:
            raise BindError(f"bind fd://{sorted(missing)[0]}: systemd passed no socket with that name")
    listeners = []
    for fd in chosen:
        sock = socket.socket(fileno=fd)
        sock.set_inheritable(True)
        listeners.append(Listener(sock, Address(sock.family, fd=fd)))
    return listeners


def remove_socket_file(path: str) -> None:
    """Remove a stale unix socket file, but never a file that is not a socket."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise BindError(f"cannot listen on {path}: it exists and is not a socket")
    os.unlink(path)
