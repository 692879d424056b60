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
import difflib
import ipaddress
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, get_type_hints

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
CERT_REQS = ("none", "optional", "required")
TLS_VERSIONS = ("1.2", "1.3")
Hook = Callable[..., Any] | None


class SettingError(ValueError):
    """A setting has a value it cannot take; the message names the fix."""


@dataclass(frozen=True)
class Spec:
    """How a setting appears outside Python: flags, help and validation."""

    flags: tuple[str, ...]
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    check: Callable[[Any], str | None] | None = None  # returns a problem, or None
    positional: bool = False
    hook: bool = False


def setting(
    default: Any,
    *flags: str,
    help: str,
    metavar: str | None = None,
    choices: Sequence[str] = (),
    check: Callable[[Any], str | None] | None = None,
    positional: bool = False,
) -> Any:
    spec = Spec(tuple(flags), help, metavar, tuple(choices), check, positional)
    return field(default=default, metadata={"spec": spec})


def hook(help: str) -> Any:
    return field(default=None, metadata={"spec": Spec((), help, hook=True)})


def at_least(minimum: float) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value >= minimum else f"must be at least {minimum:g}"

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


def octal_umask(value: str) -> str | None:
    try:
        number = int(value, 8)
    except ValueError:
        return "is not an octal number such as 022"
    return None if 0 <= number <= 0o777 else "must be between 000 and 777"


def default_bind() -> tuple[str, ...]:
    # As in Gunicorn: platforms that hand out a port in $PORT get 0.0.0.0:$PORT.
    port = os.environ.get("PORT")
    return (f"0.0.0.0:{port}",) if port else ("127.0.0.1:8000",)


def default_workers() -> int:
    value = os.environ.get("WEB_CONCURRENCY", "1")
    return int(value) if value.isdigit() and int(value) > 0 else 1


@dataclass(frozen=True)
class Settings:
    """Every setting forkserve has, with its default."""

    # -- what to serve ---------------------------------------------------
    app: str = setting(
        "",
        help="The WSGI app as module:name, module, or module:factory(args). "
        "Without one, forkserve serves its built-in demo app.",
        metavar="APP",
        positional=True,
    )
    config: str = setting(
        "",
        "-c",
        "--config",
        help="Config file: Python (Gunicorn's setting names, plus hooks) or .toml. "
        "Default: ./forkserve.conf.py when it exists.",
        metavar="FILE",
    )
    chdir: str = setting("", "--chdir", help="Change to this directory before loading the app.")
    pythonpath: tuple[str, ...] = setting(
        (),
        "--pythonpath",
        help="Directories to add to sys.path (comma-separated or repeated).",
        metavar="DIRS",
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
        False, "--preload", help="Load the app once in the master before forking workers."
    )
    reload: bool = setting(
        False, "--reload", help="Restart workers when the app's source files change (development)."
    )
    reload_engine: str = setting(
        "auto",
        "--reload-engine",
        help="How --reload watches files: watchfiles (inotify) when installed, else stat polling.",
        choices=("auto", "poll", "watchfiles"),
    )
    reload_extra_files: tuple[str, ...] = setting(
        (), "--reload-extra-file", help="More files to watch with --reload (repeatable).", metavar="FILE"
    )

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
    umask: str = setting(
        "022",
        "-m",
        "--umask",
        help="Octal umask for files and unix sockets forkserve creates.",
        check=octal_umask,
    )

    # -- processes -------------------------------------------------------
    workers: int = setting(
        0,
        "-w",
        "--workers",
        help="Number of worker processes. Default: $WEB_CONCURRENCY, else 1.",
        check=at_least(0),
    )
    threads: int = setting(
        1,
        "--threads",
        help="Threads per worker running requests, while the worker's loop keeps accepting.",
        check=at_least(1),
    )
    worker_class: str = setting(
        "sync",
        "-k",
        "--worker-class",
        help="How a worker runs requests: 'sync' (an event loop; --threads for a thread pool), "
        "'gthread' (the same, for Gunicorn configs), or 'gevent' (a greenlet per connection).",
        choices=("sync", "gthread", "gevent"),
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
    graceful_timeout: float = setting(
        30.0,
        "--graceful-timeout",
        help="Seconds workers get to finish in-flight requests when stopping.",
        check=at_least(0),
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
    user: str = setting("", "-u", "--user", help="Switch worker processes to this user (name or uid).")
    group: str = setting("", "-g", "--group", help="Switch worker processes to this group (name or gid).")
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
    io_timeout: float = setting(
        30.0,
        "--io-timeout",
        help="Seconds a body read or response write may stall before the connection is closed.",
        check=at_least(0.1),
    )
    limit_request_line: int = setting(
        4094,
        "--limit-request-line",
        help="Maximum request line length (414 past it).",
        check=at_least(16),
    )
    limit_request_fields: int = setting(
        100,
        "--limit-request-fields",
        help="Maximum number of header fields (431 past it).",
        check=at_least(1),
    )
    limit_request_field_size: int = setting(
        8190,
        "--limit-request-field_size",
        "--limit-request-field-size",
        help="Maximum size of one header line (431 past it).",
        check=at_least(16),
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

    # -- proxies and TLS -------------------------------------------------
    forwarded_allow_ips: tuple[str, ...] = setting(
        ("127.0.0.1", "::1"),
        "--forwarded-allow-ips",
        help="Proxies (IPs or CIDR ranges, comma-separated; '*' for any) whose "
        "X-Forwarded-* and Forwarded headers are believed.",
        metavar="IPS",
        check=networks,
    )
    proxy_protocol: bool = setting(
        False, "--proxy-protocol", help="Expect a PROXY protocol v1/v2 header from trusted proxies."
    )
    certfile: str = setting("", "--certfile", help="TLS certificate file (PEM); enables HTTPS.")
    keyfile: str = setting("", "--keyfile", help="TLS private key file (PEM).")
    ca_certs: str = setting("", "--ca-certs", help="CA certificates to verify client certificates.")
    cert_reqs: str = setting("none", "--cert-reqs", help="Client certificate requirement.", choices=CERT_REQS)
    ciphers: str = setting("", "--ciphers", help="OpenSSL cipher list for TLS 1.2.")
    tls_min_version: str = setting(
        "1.2", "--tls-min-version", help="Lowest TLS version accepted.", choices=TLS_VERSIONS
    )

    # -- logging ---------------------------------------------------------
    loglevel: str = setting("info", "--log-level", help="Error log level.", choices=LOG_LEVELS)
    errorlog: str = setting("-", "--error-logfile", "--log-file", help="Error log file; '-' is stderr.")
    accesslog: str = setting("", "--access-logfile", help="Access log file; '-' is stdout. Off when empty.")
    access_log_format: str = setting(
        "",
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
        help="Keep stdout/stderr unbuffered-compatible under --daemon (nothing redirected to /dev/null).",
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
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.5)
    return f" (did you mean {close[0]}?)" if close else ""


WANTED = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def coerce(entry: Entry, value: Any) -> Any:
    """Turn a raw value (a string from a flag, or a Python/TOML value) into the setting's type."""
    kind = entry.kind
    try:
        if entry.spec.hook:
            if value is not None and not callable(value):
                raise ValueError
            return value
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int or kind is float:
            if isinstance(value, bool) or (kind is int and isinstance(value, float)):
                raise ValueError
            if entry.name == "umask" and isinstance(value, int):
                return format(value, "03o")
            return kind(value)
        if kind is str:
            if (
                isinstance(value, int)
                and not isinstance(value, bool)
                and entry.name in ("umask", "user", "group")
            ):
                return format(value, "03o") if entry.name == "umask" else str(value)
            if not isinstance(value, str):
                raise ValueError
            return value
        if kind == dict[str, Any] | None:
            if value is not None and not isinstance(value, dict):
                raise ValueError
            return value
        # tuple[str, ...]: a list, or one string; some settings split on commas.
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError
        if entry.name in ("pythonpath", "forwarded_allow_ips"):
            return tuple(part.strip() for v in value for part in v.split(",") if part.strip())
        return tuple(value)
    except (TypeError, ValueError):
        wanted = "a callable" if entry.spec.hook else WANTED.get(kind, "a list of strings")
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
        if spec.choices and value not in spec.choices:
            hint = nearest(str(value), spec.choices)
            raise SettingError(f"{name}: {value!r} is not one of {', '.join(spec.choices)}{hint}")
        problem = spec.check(value) if spec.check else None
        if problem:
            raise SettingError(f"{name}: {value!r} {problem}")
        clean[name] = value
    return Settings(**clean)


def markdown_table() -> str:
    """The settings as a Markdown table, for the README (a test keeps the two in step)."""
    rows = ["| setting | flags | default | meaning |", "| --- | --- | --- | --- |"]
    for entry in registry():
        spec = entry.spec
        flags = ", ".join(f"`{flag}`" for flag in spec.flags) or (
            "positional" if spec.positional else "config file"
        )
        default = entry.default
        shown = (
            ""
            if default in ("", (), None)
            else f"`{','.join(default) if isinstance(default, tuple) else default}`"
        )
        meaning = spec.help.replace("|", "\\|").replace("%%", "%")
        if spec.choices:
            meaning += f" One of: {', '.join(spec.choices)}."
        rows.append(f"| `{entry.name}` | {flags} | {shown} | {meaning} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
