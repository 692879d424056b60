"""TLS with the standard ``ssl`` module: one server context, built in the master.

The context is made before the fork, so a bad certificate path or key is
reported once at start-up, and every worker shares the loaded
certificate. Workers wrap each accepted socket and run the handshake
without blocking inside their event loop.
"""

from __future__ import annotations

import ssl

from .settings import SettingError, Settings

CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


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
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = VERSIONS[settings.tls_min_version]
    try:
        context.load_cert_chain(settings.certfile, settings.keyfile or None)
        if settings.ca_certs:
            context.load_verify_locations(settings.ca_certs)
        if settings.ciphers:
            context.set_ciphers(settings.ciphers)
    except (OSError, ssl.SSLError) as exc:
        raise SettingError(f"certfile/keyfile/ca_certs/ciphers: {exc}") from None
    context.verify_mode = CERT_REQS[settings.cert_reqs]
    if context.verify_mode != ssl.CERT_NONE and not settings.ca_certs:
        raise SettingError(f"cert_reqs: {settings.cert_reqs!r} needs ca_certs to check client certificates")
    context.set_alpn_protocols(["http/1.1"])
    return context
