"""The one registry of settings: name, flags, type, default, check and help.

Every setting is a field of ``Settings``. The command line, config files,
``FORKSERVE_CMD_ARGS`` and ``--help`` are all generated from these fields,
so adding a setting is one entry here. Field names are Gunicorn's config
names and flags are Gunicorn's flags, so a Gunicorn user's muscle memory
and config files carry over. Hooks are settings too, set only from a
Python config file.
"""

from __future__ import annotations

import dataclasses
import importlib
import ipaddress
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from .proxy import SECURE_SCHEME_HEADERS

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
CERT_REQS = ("none", "optional", "required")
TLS_VERSIONS = ("1.2", "1.3")
Hook = Callable[..., Any] | None


class SettingError(ValueError):
    """A setting has a value it cannot take; the message names the fix."""


Convert = Callable[[Any], Any]  # raw value -> the setting's value; ValueError/TypeError if it cannot


@dataclass(frozen=True)
class Spec:
    """How a setting appears outside Python: flags, help, conversion and forkserve's answer to it.

    Every one of Gunicorn's settings has an entry. Most are implemented.
    ``ignored`` says why forkserve does not need a setting (its value is
    accepted and a start-up line explains); ``refused`` says why a value
    other than the default would silently change what the user asked for,
    so forkserve stops with that reason instead.
    """

    flags: tuple[str, ...]
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    check: Callable[[Any], str | None] | None = None  # returns a problem, or None
    positional: bool = False
    hook: bool = False
    convert: Convert | None = None  # None: converted by the setting's type
    const: Any = None  # a flag whose value is optional (``--proxy-protocol [v1]``) gives this
    ignored: str = ""
    refused: str = ""
    allowed: tuple[Any, ...] = ()  # with ``refused``: values besides the default that are fine

    @property
    def answer(self) -> str:
        if self.refused:
            return f"refused unless default: {self.refused}"
        if self.ignored:
            return f"accepted, not needed: {self.ignored}"
        return "implemented"


def setting(
    default: Any,
    *flags: str,
    help: str,
    metavar: str | None = None,
    choices: Sequence[str] = (),
    check: Callable[[Any], str | None] | None = None,
    positional: bool = False,
    convert: Convert | None = None,
    const: Any = None,
    ignored: str = "",
    refused: str = "",
    allowed: Sequence[Any] = (),
) -> Any:
    spec = Spec(
        tuple(flags),
        help,
        metavar,
        tuple(choices),
        check,
        positional,
        False,
        convert,
        const,
        ignored,
        refused,
        tuple(allowed),
    )
    return field(default=default, metadata={"spec": spec})


def hook(help: str, refused: str = "") -> Any:
    return field(default=None, metadata={"spec": Spec((), help, hook=True, refused=refused)})


def compat(default: Any, *flags: str, ignored: str = "", refused: str = "", help: str = "") -> Any:
    """A Gunicorn setting forkserve accepts without needing it, or refuses unless default."""
    convert = {bool: to_bool, int: to_int}.get(type(default), as_given)
    return setting(
        default, *flags, help=help or ignored or refused, convert=convert, ignored=ignored, refused=refused
    )


# -- checks ----------------------------------------------------------------


def at_least(minimum: float) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value >= minimum else f"must be at least {minimum:g}"

    return check


def zero_or_at_least(minimum: float) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value == 0 or value >= minimum else f"must be 0 (no limit) or at least {minimum:g}"

    return check


def each_key_value(values: tuple[str, ...]) -> str | None:
    return next((f"{v!r} is not KEY=VALUE" for v in values if "=" not in v.strip("=")), None)


def networks(values: tuple[str, ...]) -> str | None:
    for value in values:
        if value != "*":
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                return f"{value!r} is not an IP address or CIDR range (or '*')"
    return None


def statsd_address(value: str) -> str | None:
    from .statsd import parse_address

    try:
        if value:
            parse_address(value)
    except ValueError:
        return "is not HOST:PORT or unix:PATH"
    return None


def metrics_address(value: str) -> str | None:
    from .sockets import BindError, parse_bind

    if not value:
        return None
    try:
        address = parse_bind(value)
    except BindError as error:
        return str(error)
    return "takes HOST:PORT or unix:PATH, not fd://" if address.fd >= 0 or address.name else None


def url_path(value: str) -> str | None:
    return None if not value or value.startswith("/") else "must be empty or start with /"


def umask_range(value: int) -> str | None:
    return None if 0 <= value <= 0o777 else "must be between 0 and 0o777"


# -- converters: Gunicorn's value habits (numbers and booleans as strings, None for "unset") --


def as_given(value: Any) -> Any:
    return value


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", "none", ""):
        return False
    raise ValueError(value)


def to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(value)
        return int(value)
    return int(str(value).strip()) if isinstance(value, str) else int(value)


def to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(value)
    return float(value)


def to_str(value: Any) -> str:
    if value is None:
        return ""  # Gunicorn's "unset"
    if not isinstance(value, str):
        raise ValueError(value)
    return value


def to_strings(value: Any) -> tuple[str, ...]:
    """A list of strings, or one string (``raw_env = "A=1"``), or None."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(value)
    return tuple(value)


def comma_list(value: Any) -> tuple[str, ...]:
    """Comma-separated strings, given as one string or a list of them."""
    return tuple(part.strip() for v in to_strings(value) for part in v.split(",") if part.strip())


def to_dict(value: Any) -> dict[str, Any] | None:
    if value is None or value == {}:
        return None  # Gunicorn's default is an empty dict: "not set"
    if not isinstance(value, dict):
        raise ValueError(value)
    return value


def to_umask(value: Any) -> int:
    """Gunicorn's reading: an int, or a string where a leading 0 means octal ("022", "0o22")."""
    if isinstance(value, str):
        text = value.strip()
        if len(text) > 1 and text[0] == "0" and text[1].isdigit():
            text = "0o" + text[1:]
        return int(text, 0)
    return to_int(value)


def to_id(value: Any) -> str:
    """user/group: a name, a number, or None (stay as started)."""
    if value is None:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return to_str(value)


def to_cert_reqs(value: Any) -> str:
    """Gunicorn takes ssl.CERT_* numbers (0, 1, 2); forkserve also takes their names."""
    names = ("none", "optional", "required")
    if isinstance(value, str) and not value.strip().isdigit():
        return value.strip().lower().removeprefix("cert_")
    number = to_int(value)
    if not 0 <= number < len(names):
        raise ValueError(value)
    return names[number]


def to_proxy_protocol(value: Any) -> str:
    """off, auto (v1 or v2), v1 or v2; true/false as Gunicorn reads them."""
    if value is None or value is False:
        return "off"
    if value is True:
        return "auto"
    text = str(value).strip().lower()
    aliases = {
        "false": "off",
        "0": "off",
        "none": "off",
        "no": "off",
        "true": "auto",
        "1": "auto",
        "on": "auto",
    }
    return aliases.get(text, text)


def to_log_level(value: Any) -> str:
    level = to_str(value).strip().lower()
    return {"warn": "warning", "fatal": "critical"}.get(level, level)  # the logging module's aliases


def to_reload_engine(value: Any) -> str:
    engine = to_str(value)
    return "watchfiles" if engine == "inotify" else engine  # Gunicorn's name for the inotify watcher


WORKER_CLASSES = {
    "sync": "sync",
    "gthread": "gthread",
    "gevent": "gevent",
    # Gunicorn's gevent flavours all mean "a greenlet per connection".
    "gevent_wsgi": "gevent",
    "gevent_pywsgi": "gevent",
    "gunicorn.workers.sync.syncworker": "sync",
    "gunicorn.workers.gthread.threadworker": "gthread",
    "gunicorn.workers.ggevent.geventworker": "gevent",
    "gunicorn.workers.ggevent.geventpywsgiworker": "gevent",
}


def to_worker_class(value: Any) -> str:
    """Gunicorn's worker class names and paths, mapped to forkserve's three workers."""
    name = value.__module__ + "." + value.__qualname__ if isinstance(value, type) else to_str(value)
    key = name.strip().lower().removeprefix("egg:gunicorn#")
    if key in WORKER_CLASSES:
        return WORKER_CLASSES[key]
    if "asgi" in key or "uvicorn" in key or "uvloop" in key:
        raise SettingError(
            f"worker_class: {name!r} is an ASGI worker; forkserve serves WSGI apps "
            "(sync, gthread, gevent): serve an ASGI app with an ASGI server"
        )
    raise SettingError(
        f"worker_class: {name!r} is not one of sync, gthread, gevent "
        "(forkserve runs its own workers, not custom worker classes)"
    )


def to_http_protocols(value: Any) -> str:
    protocols = comma_list(value)
    return ",".join(protocols) if protocols else "h1"


def to_hook(value: Any) -> Any:
    """A callable, or Gunicorn's "module.function" string naming one."""
    if isinstance(value, str):
        module_name, _, name = value.rpartition(".")
        if not module_name:
            raise ValueError(value)
        try:
            value = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError) as exc:
            raise SettingError(f"hook {value!r}: cannot import it: {exc}") from None
    if value is not None and not callable(value):
        raise ValueError(value)
    return value


BY_TYPE: dict[Any, Convert] = {
    bool: to_bool,
    int: to_int,
    float: to_float,
    str: to_str,
    tuple[str, ...]: to_strings,
    dict[str, Any] | None: to_dict,
    dict[str, str] | None: to_dict,
}


def default_bind() -> tuple[str, ...]:
    # As in Gunicorn: platforms that hand out a port in $PORT get 0.0.0.0:$PORT.
    port = os.environ.get("PORT")
    return (f"0.0.0.0:{port}",) if port else ("127.0.0.1:8000",)


def default_workers() -> int:
    value = os.environ.get("WEB_CONCURRENCY", "1")
    return int(value) if value.isdigit() and int(value) > 0 else 1


NO_HTTP2 = "forkserve speaks HTTP/1.1; terminate HTTP/2 at the proxy in front (nginx, HAProxy)"
NO_ASGI = "forkserve serves WSGI apps; ASGI settings need an ASGI server"
NO_DIRTY = "forkserve has no dirty arbiters; run long tasks in a task queue or a separate pool"


@dataclass(frozen=True)
class Settings:
    """Every setting forkserve has, with its default: all of Gunicorn's, and forkserve's own."""

    # -- what to serve ---------------------------------------------------
    app: str = setting(
        "",
        help="The WSGI app as module:name, module, or module:factory(args). "
        "Without one, forkserve serves wsgi_app, else its built-in demo app.",
        metavar="APP",
        positional=True,
    )
    wsgi_app: str = setting("", help="The WSGI app, when none is named on the command line (config file).")
    paste: str = setting(
        "",
        "--paste",
        "--paster",
        help="Load the app from a PasteDeploy .ini file (needs PasteDeploy installed).",
        metavar="INI",
    )
    raw_paste_global_conf: tuple[str, ...] = setting(
        (),
        "--paste-global",
        help="KEY=VALUE passed to the PasteDeploy file as a global (repeatable).",
        metavar="KEY=VALUE",
        check=each_key_value,
    )
    config: str = setting(
        "",
        "-c",
        "--config",
        help="Config file: Python (Gunicorn's setting names, plus hooks), python:MODULE, or .toml. "
        "Default: ./forkserve.conf.py, else ./gunicorn.conf.py, when it exists.",
        metavar="FILE",
    )
    check_config: bool = setting(
        False, "--check-config", help="Check the settings and load the app, then exit."
    )
    print_config: bool = setting(
        False,
        "--print-config",
        help="Print every setting, its value, where it came from and forkserve's answer.",
    )
    chdir: str = setting("", "--chdir", help="Change to this directory before loading the app.")
    pythonpath: tuple[str, ...] = setting(
        (),
        "--pythonpath",
        help="Directories to add to sys.path (comma-separated or repeated).",
        metavar="DIRS",
        convert=comma_list,
    )
    raw_env: tuple[str, ...] = setting(
        (),
        "-e",
        "--env",
        help="Set an environment variable KEY=VALUE (repeatable).",
        metavar="KEY=VALUE",
        check=each_key_value,
    )
    preload_app: bool = setting(
        False,
        "--preload",
        help="Import the app once, in a template process the workers fork from; HUP loads new code.",
    )
    reload: bool = setting(
        False, "--reload", help="Restart workers when the app's source files change (development)."
    )
    reload_engine: str = setting(
        "auto",
        "--reload-engine",
        help="How --reload watches files: watchfiles (inotify) when installed, else stat polling "
        "(Gunicorn's 'inotify' means watchfiles).",
        choices=("auto", "poll", "watchfiles"),
        convert=to_reload_engine,
    )
    reload_extra_files: tuple[str, ...] = setting(
        (), "--reload-extra-file", help="More files to watch with --reload (repeatable).", metavar="FILE"
    )
    spew: bool = setting(False, "--spew", help="Print every line the workers execute (debugging; very slow).")

    # -- sockets ---------------------------------------------------------
    bind: tuple[str, ...] = setting(
        (),
        "-b",
        "--bind",
        help="Address to listen on: HOST:PORT, :PORT, [IPV6]:PORT, unix:PATH or fd://N "
        "(repeatable). Default 127.0.0.1:8000, or 0.0.0.0:$PORT when PORT is set.",
        metavar="ADDRESS",
    )
    backlog: int = setting(2048, "--backlog", help="Listen backlog of each socket.", check=at_least(1))
    reuse_port: bool = setting(
        False,
        "--reuse-port",
        help="Set SO_REUSEPORT on TCP sockets, so other servers may bind the same port.",
    )
    umask: int = setting(
        0,
        "-m",
        "--umask",
        help="umask for the unix socket files forkserve creates (0, as in Gunicorn, lets a proxy running "
        "as another user connect). A leading 0 means octal: 007, 0o007.",
        convert=to_umask,
        check=umask_range,
    )

    # -- processes -------------------------------------------------------
    workers: int = setting(
        0,
        "-w",
        "--workers",
        help="Number of worker processes. Default: $WEB_CONCURRENCY, else 1.",
        check=at_least(0),
    )
    worker_class: str = setting(
        "sync",
        "-k",
        "--worker-class",
        help="How a worker runs requests: 'sync' (an event loop; --threads for a thread pool), "
        "'gthread' (the same, for Gunicorn configs), or 'gevent' (a greenlet per connection). "
        "Gunicorn's class paths for these are accepted.",
        choices=("sync", "gthread", "gevent"),
        convert=to_worker_class,
    )
    threads: int = setting(
        1,
        "--threads",
        help="Threads per worker running requests, while the worker's loop keeps accepting.",
        check=at_least(1),
    )
    worker_connections: int = setting(
        1000,
        "--worker-connections",
        help="Most client connections one worker holds at once.",
        check=at_least(1),
    )
    timeout: float = setting(
        30.0,
        "-t",
        "--timeout",
        help="Seconds one request may run (a worker may stay silent) before it is "
        "aborted and replaced. 0 disables.",
        check=at_least(0),
    )
    workers_max: int = setting(
        0,
        "--workers-max",
        help="Let the pool grow up to this many workers while connections wait or all workers are busy, "
        "and shrink back to --workers when it is quiet. 0: a fixed pool.",
        check=at_least(0),
    )
    scale_down_after: float = setting(
        30.0,
        "--scale-down-after",
        help="With --workers-max: seconds of quiet before one extra worker is retired.",
        metavar="SECONDS",
        check=at_least(0.1),
    )
    reload_mode: str = setting(
        "all",
        "--reload-mode",
        help="How HUP replaces workers: 'all' starts every new worker, then retires the old ones; "
        "'chain' replaces them one at a time, so the pool never holds more than one extra worker.",
        choices=("all", "chain"),
    )
    graceful_timeout: float = setting(
        30.0,
        "--graceful-timeout",
        help="Seconds workers get to finish in-flight requests when stopping.",
        check=at_least(0),
    )
    shutdown_delay: float = setting(
        0.0,
        "--shutdown-delay",
        metavar="SECONDS",
        check=at_least(0),
        help="On SIGTERM, keep accepting and serving for this many seconds while --health-path "
        "already answers 503 (load balancers and Kubernetes take the host out), then stop as usual.",
    )
    health_path: str = setting(
        "",
        "--health-path",
        metavar="PATH",
        check=url_path,
        help="Answer GET/HEAD of this path in the worker, without calling the app: 200 while serving, "
        "503 once a graceful stop has begun. Not logged, not counted in metrics. Off when empty.",
    )
    max_requests: int = setting(
        0, "--max-requests", help="Recycle a worker after this many requests. 0 disables.", check=at_least(0)
    )
    max_requests_jitter: int = setting(
        0,
        "--max-requests-jitter",
        help="Add a random 0..N to max_requests per worker, so workers do not recycle together.",
        check=at_least(0),
    )
    max_worker_memory: int = setting(
        0,
        "--max-worker-memory",
        help="Recycle a worker whose unique memory (USS) passes this many MiB. 0 disables.",
        metavar="MIB",
        check=at_least(0),
    )
    proc_name: str = setting("", "-n", "--name", help="Name shown in process titles.")
    pidfile: str = setting("", "-p", "--pid", help="Write the master's pid to this file.", metavar="FILE")
    user: str = setting(
        "", "-u", "--user", help="Switch worker processes to this user (name or uid).", convert=to_id
    )
    group: str = setting(
        "", "-g", "--group", help="Switch worker processes to this group (name or gid).", convert=to_id
    )
    initgroups: bool = setting(
        False, "--initgroups", help="With --user, also take that user's supplementary groups."
    )
    daemon: bool = setting(
        False, "-D", "--daemon", help="Detach from the terminal and run in the background."
    )

    # -- connections and limits ------------------------------------------
    keepalive: float = setting(
        5.0,
        "--keep-alive",
        help="Seconds an idle keep-alive connection is kept open. 0 disables keep-alive.",
        check=at_least(0),
    )
    header_timeout: float = setting(
        10.0,
        "--header-timeout",
        help="Seconds a client gets to send a complete request head, and again to send its body "
        "(or its first --body-prebuffer bytes); the app runs only after that.",
        check=at_least(0.1),
    )
    body_prebuffer: int = setting(
        65536,
        "--body-prebuffer",
        help="Request body bytes collected before the app runs, so slow uploads do not hold a worker.",
        check=at_least(0),
    )
    body_min_rate: int = setting(
        500,
        "--body-min-rate",
        metavar="BYTES_PER_SECOND",
        help="Slowest request body, in bytes per second, the app waits for once --body-prebuffer is "
        "in: after a --header-timeout grace, each such byte buys 1/rate seconds; a slower client gets "
        "408 (or a close, if the response began). 0: no minimum.",
        check=at_least(0),
    )
    io_timeout: float = setting(
        30.0,
        "--io-timeout",
        help="Seconds a body read or response write may stall before the connection is closed.",
        check=at_least(0.1),
    )
    sendfile: bool = setting(
        True,
        "--no-sendfile",
        help="Send wsgi.file_wrapper files with os.sendfile; --no-sendfile reads and writes them instead.",
        const=False,
        convert=lambda value: value is None or to_bool(value),  # Gunicorn's None: on
    )
    limit_request_line: int = setting(
        4094,
        "--limit-request-line",
        help="Maximum request line length (414 past it). 0: only limit_request_head bounds it.",
        check=zero_or_at_least(16),
    )
    limit_request_fields: int = setting(
        100,
        "--limit-request-fields",
        help="Maximum number of header fields (431 past it). 0: 32768.",
        check=at_least(0),
    )
    limit_request_field_size: int = setting(
        8190,
        "--limit-request-field_size",
        "--limit-request-field-size",
        help="Maximum size of one header line (431 past it). 0: only limit_request_head bounds it.",
        check=zero_or_at_least(16),
    )
    limit_request_head: int = setting(
        65536,
        "--limit-request-head",
        help="Maximum size of the whole request head (431 past it).",
        check=at_least(64),
    )
    limit_chunk_extension: int = setting(
        1024,
        "--limit-chunk-extension",
        help="Maximum length of a chunk-size line with its extensions (400 past it).",
        check=at_least(16),
    )
    limit_request_trailers: int = setting(
        8190,
        "--limit-request-trailers",
        help="Maximum size of the trailer section of a chunked body (431 past it).",
        check=at_least(16),
    )
    limit_request_body: int = setting(
        0,
        "--limit-request-body",
        help="Maximum request body in bytes (413 past it). 0: no limit.",
        check=at_least(0),
    )
    header_map: str = setting(
        "drop",
        "--header-map",
        help="Header names with '_': 'drop' them (they could pose as '-' names), or 'refuse' the "
        "request with 400. ('dangerous' is refused: it lets a client forge proxy headers.)",
        choices=("drop", "refuse"),
    )
    root_path: str = setting(
        "",
        "--root-path",
        help="The path the app is mounted at behind a proxy: becomes SCRIPT_NAME, and is taken "
        "off the front of PATH_INFO.",
    )

    # -- proxies ---------------------------------------------------------
    forwarded_allow_ips: tuple[str, ...] = setting(
        ("127.0.0.1", "::1"),
        "--forwarded-allow-ips",
        help="Proxies (IPs or CIDR ranges, comma-separated; '*' for any) whose "
        "X-Forwarded-* and Forwarded headers are believed.",
        metavar="IPS",
        convert=comma_list,
        check=networks,
    )
    secure_scheme_headers: dict[str, str] | None = setting(
        None,
        help="Headers (and values) from a trusted proxy that mean the client used HTTPS (config file). "
        "Default: Gunicorn's X-FORWARDED-PROTOCOL: ssl, X-FORWARDED-PROTO: https, X-FORWARDED-SSL: on.",
    )
    forwarder_headers: tuple[str, ...] = setting(
        ("SCRIPT_NAME", "PATH_INFO"),
        "--forwarder-headers",
        help="Headers a trusted proxy may send to set these environ keys directly "
        "(SCRIPT_NAME, PATH_INFO, REMOTE_USER, ...; comma-separated).",
        metavar="NAMES",
        convert=comma_list,
    )
    proxy_protocol: str = setting(
        "off",
        "--proxy-protocol",
        help="Expect a PROXY protocol header from --proxy-allow-from peers: off, auto (v1 or v2), v1, v2. "
        "The flag alone means auto.",
        choices=("off", "auto", "v1", "v2"),
        convert=to_proxy_protocol,
        const="auto",
    )
    proxy_allow_ips: tuple[str, ...] = setting(
        ("127.0.0.1", "::1"),
        "--proxy-allow-from",
        help="Peers (IPs or CIDR ranges; '*' for any) allowed to send a PROXY protocol header.",
        metavar="IPS",
        convert=comma_list,
        check=networks,
    )

    # -- TLS -------------------------------------------------------------
    certfile: str = setting("", "--certfile", help="TLS certificate file (PEM); enables HTTPS.")
    keyfile: str = setting("", "--keyfile", help="TLS private key file (PEM).")
    ca_certs: str = setting("", "--ca-certs", help="CA certificates to verify client certificates.")
    cert_reqs: str = setting(
        "none",
        "--cert-reqs",
        help="Client certificate requirement (Gunicorn's 0, 1, 2 also work).",
        choices=("none", "optional", "required"),
        convert=to_cert_reqs,
    )
    ciphers: str = setting("", "--ciphers", help="OpenSSL cipher list for TLS 1.2.")
    tls_min_version: str = setting(
        "1.2", "--tls-min-version", help="Lowest TLS version accepted.", choices=TLS_VERSIONS
    )
    ssl_context: Hook = hook(
        "ssl_context(config, default_ssl_context_factory): returns the server SSLContext."
    )

    # -- logging ---------------------------------------------------------
    loglevel: str = setting(
        "info",
        "--log-level",
        help="Error log level.",
        choices=LOG_LEVELS,
        convert=to_log_level,
    )
    errorlog: str = setting("-", "--error-logfile", "--log-file", help="Error log file; '-' is stderr.")
    accesslog: str = setting("", "--access-logfile", help="Access log file; '-' is stdout. Off when empty.")
    access_log_format: str = setting(
        "",
        "--access-logformat",
        "--access-log-format",
        help="Access log format with Gunicorn's atoms, or 'json'. Default: combined plus %%(D)s.",
        metavar="FORMAT",
    )
    logconfig: str = setting("", "--log-config", help="A logging fileConfig file; takes over logging.")
    logconfig_dict: dict[str, Any] | None = setting(
        None, help="A logging dictConfig dictionary (config file only); takes over logging."
    )
    logconfig_json: str = setting(
        "", "--log-config-json", help="A JSON file holding a logging dictConfig; takes over logging."
    )
    capture_output: bool = setting(
        False, "--capture-output", help="Send the app's stdout and stderr to the error log file."
    )
    enable_stdio_inheritance: bool = setting(
        False,
        "-R",
        "--enable-stdio-inheritance",
        help="Under --daemon, keep stdout and stderr instead of sending them to /dev/null.",
    )
    syslog: bool = setting(False, "--log-syslog", help="Also send the error log to syslog.")
    syslog_addr: str = setting(
        "udp://localhost:514",
        "--log-syslog-to",
        help="Where syslog lines go: udp://HOST:PORT, tcp://HOST:PORT or unix://PATH.",
    )
    syslog_prefix: str = setting("", "--log-syslog-prefix", help="Program name in syslog lines.")
    syslog_facility: str = setting("user", "--log-syslog-facility", help="Syslog facility name.")
    disable_redirect_access_to_syslog: bool = setting(
        False,
        "--disable-redirect-access-to-syslog",
        help="With --log-syslog, keep the access log out of syslog.",
    )
    statsd_host: str = setting(
        "",
        "--statsd-host",
        help="Send Gunicorn's StatsD metrics to HOST[:PORT] (UDP, port 8125 by default) or unix:PATH.",
        metavar="ADDRESS",
        check=statsd_address,
    )
    statsd_prefix: str = setting("", "--statsd-prefix", help="Put this in front of every StatsD metric name.")
    dogstatsd_tags: str = setting(
        "", "--dogstatsd-tags", help="DogStatsD tags added to every metric: comma-separated key:value."
    )
    enable_backlog_metric: bool = setting(
        False, "--enable-backlog-metric", help="Also send the listen queue's length as gunicorn.backlog."
    )
    metrics_bind: str = setting(
        "",
        "--metrics-bind",
        help="Serve Prometheus metrics from the master at http://ADDRESS/metrics: HOST:PORT or "
        "unix:PATH, as --bind. Off when empty.",
        metavar="ADDRESS",
        check=metrics_address,
    )
    logger_class: str = setting(
        "gunicorn.glogging.Logger",
        "--logger-class",
        help="Gunicorn's logger class: forkserve logs through the logging module's forkserve.error and "
        "forkserve.access (or gunicorn.error/gunicorn.access) loggers; shape them with logconfig_dict.",
        convert=lambda v: to_str(
            v if isinstance(v, str) or v is None else f"{v.__module__}.{v.__qualname__}"
        ),
        refused="a custom logger class runs Gunicorn's logging code; use logconfig_dict to shape the logs",
        allowed=("gunicorn.glogging.Logger", "gunicorn.instrument.statsd.Statsd"),
    )

    # -- the control socket (forkserve ctl; see control.py) --------------
    control_socket: str = setting(
        "",
        "--control-socket",
        help="The master's unix socket for `forkserve ctl`. Default: $XDG_RUNTIME_DIR/forkserve.ctl, "
        "else ~/.forkserve/forkserve.ctl (taken only if no live server holds it). A relative path is "
        "taken from the working directory after --chdir.",
        metavar="PATH",
    )
    control_socket_mode: int = setting(
        0o600,
        "--control-socket-mode",
        help="Permission bits of the control socket file (0o660 lets the group in; other users "
        "are refused anyway unless root).",
        metavar="MODE",
        convert=to_umask,
        check=umask_range,
    )
    control_socket_disable: bool = setting(
        False, "--no-control-socket", help="Run without a control socket (`forkserve ctl` cannot reach it)."
    )

    # -- Gunicorn settings forkserve does not need ------------------------
    worker_tmp_dir: Any = compat(
        None, "--worker-tmp-dir", ignored="the heartbeat lives in shared memory, not in a temporary file"
    )
    tmp_upload_dir: Any = compat(
        None, ignored="request bodies are streamed to the app, never spooled to disk"
    )
    do_handshake_on_connect: Any = compat(
        False,
        "--do-handshake-on-connect",
        ignored="TLS handshakes run in the worker's event loop, never blocking",
    )
    suppress_ragged_eofs: Any = compat(
        True,
        "--suppress-ragged-eofs",
        ignored="a TLS client that leaves without close_notify is treated as gone",
    )
    ssl_version: Any = compat(
        None, "--ssl-version", ignored="TLS 1.2 and 1.3 are negotiated; set tls_min_version for the floor"
    )
    http_parser: Any = compat("auto", "--http-parser", ignored="forkserve always uses its own strict parser")
    default_proc_name: Any = compat("", ignored="process titles come from proc_name, else the app")
    uwsgi_allow_ips: Any = compat(
        ("127.0.0.1", "::1"),
        "--uwsgi-allow-from",
        ignored="used only with protocol 'uwsgi', which is refused",
    )
    http2_max_concurrent_streams: Any = compat(100, "--http2-max-concurrent-streams", ignored=NO_HTTP2)
    http2_initial_window_size: Any = compat(65535, "--http2-initial-window-size", ignored=NO_HTTP2)
    http2_max_frame_size: Any = compat(16384, "--http2-max-frame-size", ignored=NO_HTTP2)
    http2_max_header_list_size: Any = compat(65536, "--http2-max-header-list-size", ignored=NO_HTTP2)

    # -- Gunicorn settings refused unless left at their default ----------
    protocol: str = setting(
        "http",
        "--protocol",
        help="The protocol spoken to clients: http.",
        convert=lambda v: to_str(v).lower(),
        refused="forkserve speaks HTTP; the uwsgi protocol needs a uWSGI-speaking server",
    )
    http_protocols: str = setting(
        "h1",
        "--http-protocols",
        help="HTTP versions offered: h1.",
        convert=to_http_protocols,
        refused=NO_HTTP2,
    )
    http2_cleartext: str = setting(
        "off",
        "--http2-cleartext",
        help="HTTP/2 without TLS: off.",
        convert=lambda v: "off" if v is False or v is None else to_str(str(v)).lower(),
        refused=NO_HTTP2,
    )
    permit_obsolete_folding: Any = compat(
        False,
        "--permit-obsolete-folding",
        refused="forkserve's parser stays strict: folded header lines are a request-smuggling risk",
    )
    strip_header_spaces: Any = compat(
        False,
        "--strip-header-spaces",
        refused="forkserve's parser stays strict: space before ':' is a request-smuggling risk",
    )
    permit_unconventional_http_method: Any = compat(
        False,
        "--permit-unconventional-http-method",
        refused="forkserve's parser accepts only RFC 9110 methods",
    )
    permit_unconventional_http_version: Any = compat(
        False, "--permit-unconventional-http-version", refused="forkserve speaks HTTP/1.0 and HTTP/1.1 only"
    )
    casefold_http_method: Any = compat(
        False, "--casefold-http-method", refused="methods are case-sensitive (RFC 9110); 'get' is refused"
    )
    asgi_loop: Any = compat("auto", "--asgi-loop", refused=NO_ASGI)
    asgi_lifespan: Any = compat("auto", "--asgi-lifespan", refused=NO_ASGI)
    asgi_disconnect_grace_period: Any = compat(3, "--asgi-disconnect-grace-period", refused=NO_ASGI)
    websocket_max_message_size: Any = compat(16777216, "--websocket-max-message-size", refused=NO_ASGI)
    dirty_apps: Any = compat((), "--dirty-app", refused=NO_DIRTY)
    dirty_workers: Any = compat(0, "--dirty-workers", refused=NO_DIRTY)
    dirty_timeout: Any = compat(300, "--dirty-timeout", refused=NO_DIRTY)
    dirty_threads: Any = compat(1, "--dirty-threads", refused=NO_DIRTY)
    dirty_graceful_timeout: Any = compat(30, "--dirty-graceful-timeout", refused=NO_DIRTY)
    on_dirty_starting: Hook = hook("on_dirty_starting(arbiter)", refused=NO_DIRTY)
    dirty_post_fork: Hook = hook("dirty_post_fork(arbiter, worker)", refused=NO_DIRTY)
    dirty_worker_init: Hook = hook("dirty_worker_init(worker)", refused=NO_DIRTY)
    dirty_worker_exit: Hook = hook("dirty_worker_exit(arbiter, worker)", refused=NO_DIRTY)

    # -- hooks (Gunicorn's names and signatures; config file only) ------
    on_starting: Hook = hook("on_starting(server): before the master opens sockets.")
    on_reload: Hook = hook("on_reload(server): when SIGHUP starts a reload.")
    when_ready: Hook = hook("when_ready(server): after the first workers are forked.")
    pre_fork: Hook = hook("pre_fork(server, worker): in the master, before forking a worker.")
    post_fork: Hook = hook("post_fork(server, worker): in the worker, right after the fork.")
    post_worker_init: Hook = hook("post_worker_init(worker): in the worker, after the app is loaded.")
    worker_int: Hook = hook("worker_int(worker): in the worker, on SIGINT or SIGQUIT.")
    worker_abort: Hook = hook("worker_abort(worker): in the worker, when its request timed out.")
    pre_exec: Hook = hook("pre_exec(server): in the new master, before it re-executes itself (SIGUSR2).")
    pre_request: Hook = hook("pre_request(worker, req): in the worker, before the app is called.")
    post_request: Hook = hook("post_request(worker, req, environ, resp): after the response is sent.")
    child_exit: Hook = hook("child_exit(server, worker): in the master, after a worker exited.")
    worker_exit: Hook = hook("worker_exit(server, worker): in the worker, as it leaves.")
    nworkers_changed: Hook = hook("nworkers_changed(server, new_value, old_value): pool size changed.")
    on_exit: Hook = hook("on_exit(server): just before the master exits.")

    @property
    def worker_count(self) -> int:
        return self.workers or default_workers()

    @property
    def binds(self) -> tuple[str, ...]:
        return self.bind or default_bind()

    @property
    def scheme_headers(self) -> dict[str, str]:
        """secure_scheme_headers, with Gunicorn's default when unset."""
        return SECURE_SCHEME_HEADERS if self.secure_scheme_headers is None else self.secure_scheme_headers


@dataclass(frozen=True)
class Entry:
    """One setting of the registry."""

    name: str
    kind: Any
    default: Any
    spec: Spec


def registry() -> list[Entry]:
    """Every setting, in declaration order."""
    hints = get_type_hints(Settings)
    return [Entry(f.name, hints[f.name], f.default, f.metadata["spec"]) for f in dataclasses.fields(Settings)]


def nearest(word: str, candidates: Sequence[str]) -> str:
    """A ' (did you mean X?)' suffix naming the closest candidate, or ''."""
    import difflib  # only on a mistake: every worker would carry it

    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.5)
    return f" (did you mean {close[0]}?)" if close else ""


WANTED = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def coerce(entry: Entry, value: Any) -> Any:
    """Turn a raw value (a string from a flag, or a Python/TOML value) into the setting's type."""
    convert = to_hook if entry.spec.hook else entry.spec.convert or BY_TYPE[entry.kind]
    try:
        return convert(value)
    except SettingError:
        raise
    except (TypeError, ValueError):
        wanted = "a callable" if entry.spec.hook else WANTED.get(entry.kind, "a list of strings")
        raise SettingError(f"{entry.name}: {value!r} is not {wanted}") from None


def build(values: dict[str, Any]) -> Settings:
    """A validated ``Settings`` from raw values keyed by setting name."""
    known = {entry.name: entry for entry in registry()}
    clean = {}
    for name, raw in values.items():
        entry = known.get(name)
        if entry is None:
            raise SettingError(f"unknown setting {name!r}{nearest(name, list(known))}")
        value = coerce(entry, raw)
        spec = entry.spec
        if spec.refused and not is_default(entry, value) and value not in spec.allowed:
            raise SettingError(f"{name}: {value!r} is not supported: {spec.refused}")
        if spec.choices and value not in spec.choices:
            hint = nearest(str(value), spec.choices)
            raise SettingError(f"{name}: {value!r} is not one of {', '.join(spec.choices)}{hint}")
        problem = spec.check(value) if spec.check else None
        if problem:
            raise SettingError(f"{name}: {value!r} {problem}")
        clean[name] = value
    config = Settings(**clean)
    if config.workers_max and config.workers_max < config.worker_count:
        raise SettingError(
            f"workers_max: {config.workers_max} is below workers ({config.worker_count}); "
            f"set it to at least {config.worker_count}, or 0 for a fixed pool"
        )
    return config


def not_needed(config: Settings) -> list[str]:
    """One line for each Gunicorn setting given a value that forkserve accepts but does not need."""
    return [
        f"{entry.name} = {getattr(config, entry.name)!r} changes nothing in forkserve: {entry.spec.ignored}"
        for entry in registry()
        if entry.spec.ignored and not is_default(entry, getattr(config, entry.name))
    ]


EMPTY: tuple[Any, ...] = ("", None, (), [], {})


def is_default(entry: Entry, value: Any) -> bool:
    """Is this the setting's default? (Any empty value counts as an empty default.)"""
    if value == entry.default:
        return True
    return any(value == e for e in EMPTY) and any(entry.default == e for e in EMPTY)


# forkserve's own settings; every other entry of the registry is one of Gunicorn's.
FORKSERVE_ONLY = frozenset(
    {
        "app",
        "header_timeout",
        "body_prebuffer",
        "body_min_rate",
        "io_timeout",
        "max_worker_memory",
        "limit_request_head",
        "limit_chunk_extension",
        "limit_request_trailers",
        "limit_request_body",
        "tls_min_version",
        "workers_max",
        "scale_down_after",
        "reload_mode",
        "shutdown_delay",
        "health_path",
    }
)


def markdown_table() -> str:
    """The settings forkserve implements as a Markdown table, for the README (a test keeps them in step)."""
    rows = ["| setting | flags | default | meaning |", "| --- | --- | --- | --- |"]
    for entry in registry():
        spec = entry.spec
        if spec.ignored or spec.refused:
            continue  # in gunicorn_table()
        shown = f"`{show_default(entry)}`" if show_default(entry) else ""
        meaning = spec.help
        if spec.choices:
            meaning += f" One of: {', '.join(spec.choices)}."
        rows.append(f"| `{entry.name}` | {_flags(spec)} | {shown} | {_cell(meaning)} |")
    return "\n".join(rows) + "\n"


def show_default(entry: Entry) -> str:
    """A setting's default as people write it ('' when it has none worth showing)."""
    default = entry.default
    if default in ("", (), None):
        return ""
    if entry.spec.convert is to_umask and default:
        return f"0o{default:o}"  # a mode or umask
    return ",".join(default) if isinstance(default, tuple) else str(default)


def gunicorn_table() -> str:
    """Gunicorn's settings that forkserve accepts without needing them, or refuses, and why."""
    rows = ["| Gunicorn setting | flags | forkserve's answer |", "| --- | --- | --- |"]
    for entry in registry():
        spec = entry.spec
        if spec.ignored or spec.refused:
            rows.append(f"| `{entry.name}` | {_flags(spec)} | {_cell(spec.answer)} |")
    return "\n".join(rows) + "\n"


def _flags(spec: Spec) -> str:
    return ", ".join(f"`{flag}`" for flag in spec.flags) or (
        "positional" if spec.positional else "config file"
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("%%", "%")


def update_readme(path: str) -> None:
    """Rewrite both generated tables of the README in place."""
    with open(path) as file:
        text = file.read()
    for marker, table in (("settings", markdown_table()), ("gunicorn", gunicorn_table())):
        begin, end = f"<!-- {marker}:begin -->\n", f"<!-- {marker}:end -->"
        before, _, rest = text.partition(begin)
        text = before + begin + table + end + rest.partition(end)[2]
    with open(path, "w") as file:
        file.write(text)


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--readme"]:
        update_readme(sys.argv[2])
    else:
        print(gunicorn_table() if sys.argv[1:] == ["gunicorn"] else markdown_table(), end="")
