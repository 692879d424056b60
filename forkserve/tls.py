"""TLS with the standard ``ssl`` module: one server context, built in the master.

The context is made before the fork, so a bad certificate path or key is
reported once at start-up, and every worker shares the loaded
certificate. Workers wrap each accepted socket and run the handshake
without blocking inside their event loop.

The ``ssl`` module is imported only when TLS is on: loading OpenSSL costs
every process of the pool megabytes (about 1.3 MiB of its own memory and
3 MiB of mapped libraries, measured), which a server without TLS (behind
nginx, say) would carry for nothing.
"""

from __future__ import annotations

import functools
import sys
from typing import TYPE_CHECKING, NamedTuple

from .settings import SettingError, Settings

if TYPE_CHECKING:
    import socket
    import ssl


class Waits(NamedTuple):
    """The exceptions by which a socket says "not now": BlockingIOError, and TLS's own."""

    read: tuple[type[OSError], ...]  # wait until readable
    write: tuple[type[OSError], ...]  # wait until writable
    tls_read: tuple[type[OSError], ...]  # TLS only (renegotiation): a send must wait to read
    tls_write: tuple[type[OSError], ...]  # TLS only: a read must wait to write
    either: tuple[type[OSError], ...]  # any of them


PLAIN_WAITS = Waits((BlockingIOError,), (BlockingIOError,), (), (), (BlockingIOError,))


def is_tls(sock: socket.socket) -> bool:
    """Is it a TLS socket? Without importing ssl: one exists only once ssl was imported."""
    ssl = sys.modules.get("ssl")
    return ssl is not None and isinstance(sock, ssl.SSLSocket)


@functools.cache
def tls_waits() -> Waits:
    """A TLS socket's Waits: ssl's SSLWantReadError and SSLWantWriteError too."""
    import ssl

    read, write = ssl.SSLWantReadError, ssl.SSLWantWriteError
    return Waits(
        (BlockingIOError, read), (BlockingIOError, write), (read,), (write,), (BlockingIOError, read, write)
    )


def make_context(settings: Settings) -> ssl.SSLContext | None:
    """The server context for --certfile/--keyfile, or None when TLS is off.

    An ``ssl_context(config, default_ssl_context_factory)`` hook, as in
    Gunicorn, gets the settings and a function building the default context,
    and returns the context to use (to add SNI callbacks, say).
    """
    if not settings.certfile:
        if settings.keyfile:
            raise SettingError("keyfile: set certfile too, or leave both empty")
        return None
    import ssl  # TLS is on: now it is worth its memory

    if settings.ssl_context is None:
        return default_context(settings)
    try:
        context = settings.ssl_context(settings, lambda: default_context(settings))
    except SettingError:
        raise
    except Exception as exc:
        raise SettingError(f"ssl_context hook raised {exc!r}") from None
    if not isinstance(context, ssl.SSLContext):
        raise SettingError(f"ssl_context hook returned {type(context).__name__}, not an ssl.SSLContext")
    return context


def default_context(settings: Settings) -> ssl.SSLContext:
    import ssl

    versions = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
    cert_reqs = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = versions[settings.tls_min_version]
    try:
        context.load_cert_chain(settings.certfile, settings.keyfile or None)
        if settings.ca_certs:
            context.load_verify_locations(settings.ca_certs)
        if settings.ciphers:
            context.set_ciphers(settings.ciphers)
    except (OSError, ssl.SSLError) as exc:
        raise SettingError(f"certfile/keyfile/ca_certs/ciphers: {exc}") from None
    context.verify_mode = cert_reqs[settings.cert_reqs]
    if context.verify_mode != ssl.CERT_NONE and not settings.ca_certs:
        raise SettingError(f"cert_reqs: {settings.cert_reqs!r} needs ca_certs to check client certificates")
    context.set_alpn_protocols(["http/1.1"])
    return context
