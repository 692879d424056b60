"""The one registry of settings: name, flags, type, default, check and help.

Every setting is a field of ``Settings``. The command line, config files,
``FORKSERVE_CMD_ARGS`` and ``--help`` are all generated from these fields,
so adding a setting is one entry here. Field names are Gunicorn's config
names and flags are Gunicorn's flags, so a Gunicorn user's muscle memory
and config files carry over.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, get_type_hints

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


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


def setting(
    default: Any,
    *flags: str,
    help: str,
    metavar: str | None = None,
    choices: Sequence[str] = (),
    check: Callable[[Any], str | None] | None = None,
) -> Any:
    spec = Spec(tuple(flags), help, metavar, tuple(choices), check)
    return field(default=default, metadata={"spec": spec})


def at_least(minimum: float) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value >= minimum else f"must be at least {minimum}"

    return check


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
        check=lambda values: next(
            (f"{v!r} is not KEY=VALUE" for v in values if "=" not in v.strip("=")), None
        ),
    )
    preload_app: bool = setting(
        False, "--preload", help="Load the app once in the master before forking workers."
    )

    # -- sockets and processes -------------------------------------------
    bind: tuple[str, ...] = setting(
        (),
        "-b",
        "--bind",
        help="Address to listen on: HOST:PORT, :PORT, [IPV6]:PORT, unix:PATH or fd://N "
        "(repeatable). Default 127.0.0.1:8000, or 0.0.0.0:$PORT when PORT is set.",
        metavar="ADDRESS",
    )
    backlog: int = setting(2048, "--backlog", help="Listen backlog of each socket.", check=at_least(1))
    workers: int = setting(
        0,
        "-w",
        "--workers",
        help="Number of worker processes. Default: $WEB_CONCURRENCY, else 1.",
        check=at_least(0),
    )
    timeout: float = setting(
        30.0,
        "-t",
        "--timeout",
        help="Seconds a worker may stay silent (stuck in one request) before it is "
        "aborted and replaced. 0 disables.",
        check=at_least(0),
    )
    graceful_timeout: float = setting(
        30.0,
        "--graceful-timeout",
        help="Seconds workers get to finish in-flight requests when stopping.",
        check=at_least(0),
    )
    keepalive: float = setting(
        5.0,
        "--keep-alive",
        help="Seconds an idle keep-alive connection is kept open. 0 disables keep-alive.",
        check=at_least(0),
    )
    header_timeout: float = setting(
        10.0,
        "--header-timeout",
        help="Seconds a client gets to send a complete request head (and start its body).",
        check=at_least(0.1),
    )
    io_timeout: float = setting(
        30.0,
        "--io-timeout",
        help="Seconds a body read or response write may stall before the connection is closed.",
        check=at_least(0.1),
    )
    max_requests: int = setting(
        0,
        "--max-requests",
        help="Recycle a worker after this many requests. 0 disables.",
        check=at_least(0),
    )
    proc_name: str = setting("", "-n", "--name", help="Name shown in process titles.")

    # -- limits on requests ----------------------------------------------
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
    limit_request_body: int = setting(
        0,
        "--limit-request-body",
        help="Maximum request body in bytes (413 past it). 0: no limit.",
        check=at_least(0),
    )

    # -- logging ---------------------------------------------------------
    loglevel: str = setting("info", "--log-level", help="Error log level.", choices=LOG_LEVELS)
    errorlog: str = setting("-", "--error-logfile", "--log-file", help="Error log file; '-' is stderr.")
    accesslog: str = setting("", "--access-logfile", help="Access log file; '-' is stdout. Off when empty.")

    @property
    def worker_count(self) -> int:
        return self.workers or default_workers()

    @property
    def binds(self) -> tuple[str, ...]:
        return self.bind or default_bind()


def registry() -> list[tuple[str, type, Any, Spec]]:
    """Every setting as (name, type, default, spec), in declaration order."""
    hints = get_type_hints(Settings)
    return [(f.name, hints[f.name], f.default, f.metadata["spec"]) for f in dataclasses.fields(Settings)]


def names() -> list[str]:
    return [f.name for f in dataclasses.fields(Settings)]


def nearest(word: str, candidates: Sequence[str]) -> str:
    """A ' (did you mean X?)' suffix naming the closest candidate, or ''."""
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.5)
    return f" (did you mean {close[0]}?)" if close else ""


def coerce(name: str, kind: type, value: Any) -> Any:
    """Turn a raw value (a string from a flag, or a Python/TOML value) into ``kind``."""
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind is str:
            if not isinstance(value, str):
                raise ValueError
            return value
        # tuple[str, ...]: a list, or one string that may be comma-separated
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError
        if name == "pythonpath":
            return tuple(part for v in value for part in v.split(",") if part)
        return tuple(value)
    except (TypeError, ValueError):
        wanted = {bool: "true or false", int: "a whole number", float: "a number"}
        raise SettingError(
            f"{name}: {value!r} is not {wanted.get(kind, 'a string' if kind is str else 'a list of strings')}"
        ) from None


def build(values: dict[str, Any]) -> Settings:
    """A validated ``Settings`` from raw values keyed by setting name."""
    known = {name: (kind, spec) for name, kind, _, spec in registry()}
    clean = {}
    for name, raw in values.items():
        if name not in known:
            raise SettingError(f"unknown setting {name!r}{nearest(name, list(known))}")
        kind, spec = known[name]
        value = coerce(name, kind, raw)
        if spec.choices and value not in spec.choices:
            raise SettingError(
                f"{name}: {value!r} is not one of {', '.join(spec.choices)}"
                f"{nearest(str(value), spec.choices)}"
            )
        problem = spec.check(value) if spec.check else None
        if problem:
            raise SettingError(f"{name}: {value!r} {problem}")
        clean[name] = value
    return Settings(**clean)
