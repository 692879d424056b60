"""The error log and the access log, both on the standard ``logging`` module.

``forkserve.error`` and ``forkserve.access`` are plain loggers. The access
log uses Gunicorn's atoms (``%(h)s``, ``%(r)s``, ``%(s)s`` ...), so a
Gunicorn ``access_log_format`` carries over; the default is Apache's
combined format plus the request time in microseconds.
``--access-log-format json`` writes one JSON object a line.

How ``configure`` sets logging up, in Gunicorn's order (``glogging.Logger.setup``):

1. ``--capture-output`` with an error log file points fd 1 and 2 at that
   file, so what the app prints lands in the error log.
2. The error logger gets ``--log-level``, the access logger INFO;
   ``propagate`` is off on both.
3. A user's config is applied: ``logconfig_dict``, else ``logconfig_json``
   (a JSON file holding the same dict), else ``logconfig`` (fileConfig),
   always with ``disable_existing_loggers`` off unless the config says
   otherwise.
4. Our own handlers go on the error and access loggers the config did not
   name (itself or through a parent): ``--error-logfile`` (stderr by
   default), ``--access-logfile`` and ``--log-syslog`` (``SysLogHandler``;
   the access log too unless ``--disable-redirect-access-to-syslog``).
   This is what a user sees under Gunicorn, which attaches them before the
   config and lets ``logging.config`` replace them; attaching them after
   spares them being closed by ``logging.config`` (a closed syslog socket
   would fail on every record).

Which loggers steps 2 to 4 work on depends on the user's config. One that
names ``forkserve`` or a ``forkserve.*`` logger is ours: it is applied as
given and the loggers are ``forkserve.error`` / ``forkserve.access``. Any
other config is treated as written for Gunicorn: steps 2 to 4 run on
``gunicorn.error`` / ``gunicorn.access``, a dict or JSON config is merged
into Gunicorn's defaults (``GUNICORN_DEFAULTS``, a shallow ``update`` as
Gunicorn does, so a dict that sets only ``root`` still logs to
stderr/stdout), and ``forkserve.error`` / ``forkserve.access`` then hold a
single ``Forward`` handler that hands every record, renamed to the Gunicorn
logger, to that logger. Levels, filters, handlers and propagation are the
ones the config gave Gunicorn's loggers, so the same lines reach the same
handlers and files as under Gunicorn.

When, after all this, an error record would reach no handler (or an
access record, with access logging asked for), one warning line goes to
stderr: a silent server is worse than a noisy start.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import socket
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .settings import SettingError

if TYPE_CHECKING:
    from .settings import Settings

ERROR_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"
ACCESS_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)s'
SYSLOG_FORMAT = "[%(process)d] %(message)s"
JSON_ATOMS = ("h", "t", "m", "U", "q", "H", "s", "B", "f", "a", "D")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1 (latin-1 decoded obs-text)

# Handlers forkserve attaches itself are named with this prefix, so a new
# configure() (SIGHUP) can take them off again without touching the user's.
OWN = "forkserve:"

# gunicorn.glogging.CONFIG_DEFAULTS (Gunicorn 27): what a logconfig_dict or
# logconfig_json written for Gunicorn is merged into.
GUNICORN_DEFAULTS: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "INFO", "handlers": ["console"]},
    "loggers": {
        "gunicorn.error": {
            "level": "INFO",
            "handlers": ["error_console"],
            "propagate": True,
            "qualname": "gunicorn.error",
        },
        "gunicorn.access": {
            "level": "INFO",
            "handlers": ["console"],
            "propagate": True,
            "qualname": "gunicorn.access",
        },
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "generic", "stream": "ext://sys.stdout"},
        "error_console": {
            "class": "logging.StreamHandler",
            "formatter": "generic",
            "stream": "ext://sys.stderr",
        },
    },
    "formatters": {
        "generic": {
            "format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s",
            "datefmt": "[%Y-%m-%d %H:%M:%S %z]",
            "class": "logging.Formatter",
        }
    },
}


def error_logger() -> logging.Logger:
    return logging.getLogger("forkserve.error")


def access_logger() -> logging.Logger:
    return logging.getLogger("forkserve.access")


def access_wanted(config: Settings) -> bool:
    """Whether access lines should be written at all (Gunicorn's ``access_log_enabled``)."""
    return bool(
        config.accesslog
        or config.logconfig_dict
        or config.logconfig_json
        or config.logconfig
        or (config.syslog and not config.disable_redirect_access_to_syslog)
    )


@dataclass(frozen=True)
class UserConfig:
    """A user's logging config, read but not applied yet."""

    setting: str  # which setting it came from, for error messages
    loggers: frozenset[str]  # the logger names it configures (root left out)
    dict_config: dict[str, Any] | None = None  # logconfig_dict / logconfig_json
    file_config: str = ""  # logconfig (fileConfig)

    def names_family(self, family: str) -> bool:
        return any(name == family or name.startswith(family + ".") for name in self.loggers)

    def apply(self, gunicorn: bool) -> frozenset[str]:
        """Apply it (merged into Gunicorn's defaults when ``gunicorn``); the logger names it set."""
        import configparser  # on use: few setups need it, every worker would carry it
        import logging.config

        configured = self.loggers
        try:
            if self.dict_config is not None:
                config = {**GUNICORN_DEFAULTS, **self.dict_config} if gunicorn else dict(self.dict_config)
                config.setdefault("disable_existing_loggers", False)
                configured = _dict_loggers(config)
                logging.config.dictConfig(copy.deepcopy(config))
            else:
                defaults = {"__file__": self.file_config, "here": os.path.dirname(self.file_config)}
                logging.config.fileConfig(self.file_config, defaults, disable_existing_loggers=False)
        except (ValueError, TypeError, AttributeError, ImportError, KeyError, configparser.Error) as exc:
            hint = ""
            if gunicorn and self.dict_config is not None and "handlers" in self.dict_config:
                hint = (
                    " (as in Gunicorn, the dict is merged into Gunicorn's defaults, whose loggers"
                    " use the handlers 'console' and 'error_console')"
                )
            raise SettingError(f"{self.setting}: {exc}{hint}") from None
        return configured


def read_user_config(config: Settings) -> UserConfig | None:
    """The user's logging config, Gunicorn's precedence: dict, then JSON, then fileConfig."""
    if config.logconfig_dict:
        return UserConfig("logconfig_dict", _dict_loggers(config.logconfig_dict), config.logconfig_dict)
    if config.logconfig_json:
        path = config.logconfig_json
        try:
            with open(path, encoding="utf-8") as file:
                data = json.load(file)
        except OSError as exc:
            raise SettingError(f"logconfig_json: cannot read {path!r}: {exc.strerror}") from None
        except ValueError as exc:
            raise SettingError(f"logconfig_json: {path!r} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise SettingError(f"logconfig_json: {path!r} must hold a JSON object")
        return UserConfig("logconfig_json", _dict_loggers(data), data)
    if config.logconfig:
        if not os.path.isfile(config.logconfig):
            raise SettingError(f"logconfig: no such file {config.logconfig!r}")
        return UserConfig("logconfig", _file_loggers(config.logconfig), file_config=config.logconfig)
    return None


def _dict_loggers(data: dict[str, Any]) -> frozenset[str]:
    loggers = data.get("loggers") or {}
    return frozenset(loggers) if isinstance(loggers, dict) else frozenset()


def _file_loggers(path: str) -> frozenset[str]:
    import configparser  # on use: few setups need it, every worker would carry it

    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
        keys = parser.get("loggers", "keys", fallback="")
        names = {parser.get(f"logger_{key.strip()}", "qualname", fallback="") for key in keys.split(",")}
    except configparser.Error as exc:
        raise SettingError(f"logconfig: {exc}") from None
    return frozenset(name for name in names if name)


class Forward(logging.Handler):
    """Hands forkserve's records to the logger a Gunicorn config set up, under its name.

    The target decides as it would for its own records: its level, its
    filters, its handlers, its propagation.
    """

    def __init__(self, target: logging.Logger) -> None:
        super().__init__()
        self.target = target
        self.name = OWN + "forward"

    def handle(self, record: logging.LogRecord) -> bool:
        if self.target.isEnabledFor(record.levelno):
            record.name = self.target.name
            self.target.handle(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)


def parse_syslog_address(address: str) -> tuple[socket.SocketKind | None, str | tuple[str, int]]:
    """(socket type, address) for SysLogHandler, from Gunicorn's ``syslog_addr`` forms.

    ``unix://PATH`` (``#dgram`` or ``#stream`` to choose; else both are
    tried), ``udp://HOST:PORT``, ``tcp://HOST:PORT``, ``[IPv6]:PORT`` in
    either; the port defaults to 514 and the host to localhost.
    """
    if address.startswith("unix://"):
        path, _, kind = address.removeprefix("unix://").partition("#")
        kinds: dict[str, socket.SocketKind | None] = {
            "": None,
            "dgram": socket.SOCK_DGRAM,
            "stream": socket.SOCK_STREAM,
        }
        if kind not in kinds or not path:
            raise SettingError(f"syslog_addr: bad unix address {address!r}")
        return kinds[kind], path
    if address.startswith("udp://"):
        socktype, rest = socket.SOCK_DGRAM, address.removeprefix("udp://")
    elif address.startswith("tcp://"):
        socktype, rest = socket.SOCK_STREAM, address.removeprefix("tcp://")
    else:
        raise SettingError(f"syslog_addr: {address!r} must start with udp://, tcp:// or unix://")
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port = tail.removeprefix(":")
    else:
        host, _, port = rest.partition(":")
    if port and not port.isdigit():
        raise SettingError(f"syslog_addr: {port!r} is not a port number")
    return socktype, (host.lower() or "localhost", int(port) if port else 514)


def _syslog_facility(config: Settings) -> int:
    import logging.handlers  # on use: few setups need it, every worker would carry it

    facility = logging.handlers.SysLogHandler.facility_names.get(config.syslog_facility.lower())
    if facility is None:
        raise SettingError(f"syslog_facility: unknown facility {config.syslog_facility!r}")
    return facility


def _syslog_handler(config: Settings, kind: str) -> logging.Handler:
    import logging.handlers

    facility = _syslog_facility(config)
    socktype, address = parse_syslog_address(config.syslog_addr)
    try:
        handler = logging.handlers.SysLogHandler(address, facility, socktype)
    except OSError as exc:
        raise SettingError(f"syslog_addr: cannot reach {config.syslog_addr}: {exc.strerror or exc}") from None
    prefix = config.syslog_prefix or (config.proc_name or config.app).replace(":", ".")
    tag = f"forkserve.{prefix}.{kind}".replace("%", "%%")
    handler.setFormatter(logging.Formatter(f"{tag}: {SYSLOG_FORMAT}"))
    handler.name = OWN + "syslog"
    return handler


def _handler(path: str, default: Any, fmt: logging.Formatter) -> logging.Handler:
    # FileHandler reopens its file after close(), which is what SIGUSR1 relies on.
    handler: logging.Handler
    if path == "-":
        handler = logging.StreamHandler(default)
    else:
        try:
            handler = logging.FileHandler(path, encoding="utf-8", errors="backslashreplace")
        except OSError as exc:
            raise SettingError(f"cannot open log file {path!r}: {exc.strerror}") from None
    handler.setFormatter(fmt)
    handler.name = OWN + "file"
    return handler


@dataclass
class Capture:
    """Where ``--capture-output`` pointed fd 1 and 2; as process-wide as the fds themselves."""

    path: str = ""

    def point(self, path: str) -> None:
        """Point fd 1 and 2 at ``path`` (append), or leave them alone when ``path`` is empty."""
        self.path = path
        if not path:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SettingError(f"capture_output: cannot open {path!r}: {exc.strerror}") from None
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)


CAPTURE = Capture()


def capture_output(config: Settings) -> None:
    """``--capture-output``: fd 1 and 2 to the error log file (not when it is stderr).

    ``configure`` calls it; call it again after anything that points fd 1
    and 2 elsewhere (``--daemon`` sends them to /dev/null).
    """
    CAPTURE.point(config.errorlog if config.capture_output and config.errorlog != "-" else "")


def configure(config: Settings) -> None:
    """Set logging up from the settings and the user's logging config (see the module docstring)."""
    user = read_user_config(config)
    if config.syslog:  # bad syslog settings stop us before anything changes
        _syslog_facility(config)
        parse_syslog_address(config.syslog_addr)
    gunicorn = user is not None and not user.names_family("forkserve")
    family = "gunicorn" if gunicorn else "forkserve"
    for name in ("forkserve.error", "forkserve.access", "gunicorn.error", "gunicorn.access"):
        logger = logging.getLogger(name)
        clear_all = name.startswith("forkserve.") and (user is None or gunicorn)
        for handler in list(logger.handlers):
            if clear_all or (handler.name or "").startswith(OWN):
                logger.removeHandler(handler)
                handler.close()
    capture_output(config)
    error = logging.getLogger(f"{family}.error")
    access = logging.getLogger(f"{family}.access")
    for logger in (error, access):
        logger.propagate = False
        logger.disabled = False
    error.setLevel(config.loglevel.upper())
    access.setLevel(logging.INFO if access_wanted(config) else logging.CRITICAL + 1)
    configured = user.apply(gunicorn) if user is not None else frozenset()
    if not _named(error.name, configured):
        error.addHandler(_handler(config.errorlog, sys.stderr, logging.Formatter(ERROR_FORMAT, DATE_FORMAT)))
        if config.syslog:
            error.addHandler(_syslog_handler(config, "error"))
    if not _named(access.name, configured):
        if config.accesslog:
            access.addHandler(_handler(config.accesslog, sys.stdout, logging.Formatter("%(message)s")))
        if config.syslog and not config.disable_redirect_access_to_syslog:
            access.addHandler(_syslog_handler(config, "access"))
    if gunicorn:
        for source, target in ((error_logger(), error), (access_logger(), access)):
            source.addHandler(Forward(target))
            source.setLevel(target.getEffectiveLevel())
            source.propagate = False
            source.disabled = False
    for warning in silent_loggers(config, user):
        print(f"forkserve: warning: {warning}", file=sys.stderr, flush=True)


def _named(name: str, configured: frozenset[str]) -> bool:
    """Whether a logging config naming ``configured`` set logger ``name`` (itself or via a parent)."""
    return any(name == other or name.startswith(other + ".") for other in configured)


def reaches_handler(logger: logging.Logger, level: int) -> bool:
    """Whether a record of ``level`` logged on ``logger`` would meet a handler (not lastResort)."""
    if not logger.isEnabledFor(level):
        return False
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if isinstance(handler, Forward):
                if reaches_handler(handler.target, level):
                    return True
            elif handler is not logging.lastResort and level >= handler.level:
                return True
        if not current.propagate:
            return False
        current = current.parent
    return False


def silent_loggers(config: Settings, user: UserConfig | None) -> list[str]:
    """What the logging set-up leaves unheard, one sentence each."""
    found = []
    if not reaches_handler(error_logger(), logging.CRITICAL):
        found.append(
            "the logging config attaches no handler to forkserve.error or gunicorn.error;"
            " nothing will be logged"
        )
    access_asked = bool(
        config.accesslog
        or (config.syslog and not config.disable_redirect_access_to_syslog)
        or (user is not None and user.loggers & {"forkserve.access", "gunicorn.access"})
    )
    if access_asked and not reaches_handler(access_logger(), logging.INFO):
        found.append(
            "access logging is on but the logging config attaches no handler to forkserve.access"
            " or gunicorn.access at level INFO; no access line will be written"
        )
    return found


def reopen_files() -> None:
    """Reopen every log file (after logrotate): file handlers, and the captured fd 1 and 2."""
    if CAPTURE.path:
        CAPTURE.point(CAPTURE.path)
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.copy().values()]
    for logger in loggers:
        if isinstance(logger, logging.Logger):
            for handler in logger.handlers:
                if isinstance(handler, logging.FileHandler):
                    # Closed, a FileHandler opens its file again on the next record.
                    handler.close()


def clean(value: str) -> str:
    """Escape control characters, so a request cannot forge log lines."""
    return CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)


class Atoms(dict[str, Any]):
    """Access-log atoms; ``%({name}i)s`` / ``%({name}o)s`` look headers up lazily."""

    def __init__(
        self, base: dict[str, Any], environ: dict[str, Any], out_headers: list[tuple[str, str]]
    ) -> None:
        super().__init__(base)
        self.environ = environ
        self.out_headers = out_headers

    def __missing__(self, key: str) -> str:
        if key.startswith("{") and key[-2:] in ("}i", "}o", "}e"):
            name = key[1:-2]
            kind = key[-1]
            if kind == "i":
                value = self.environ.get("HTTP_" + name.upper().replace("-", "_"))
            elif kind == "e":
                value = self.environ.get(name)
            else:
                value = next((v for k, v in self.out_headers if k.lower() == name.lower()), None)
            return clean(str(value)) if value is not None else "-"
        return "-"


def atoms(
    environ: dict[str, Any], status: int, sent: int, duration: float, out_headers: list[tuple[str, str]]
) -> Atoms:
    query = environ.get("QUERY_STRING") or ""
    base = {
        "h": environ.get("REMOTE_ADDR") or "-",
        "l": "-",
        "u": "-",
        "t": time.strftime("[%d/%b/%Y:%H:%M:%S %z]"),
        "r": clean(f"{environ['REQUEST_METHOD']} {environ.get('RAW_URI', '')} {environ['SERVER_PROTOCOL']}"),
        "m": environ["REQUEST_METHOD"],
        "U": clean(environ.get("PATH_INFO", "")),
        "q": clean(query),
        "H": environ["SERVER_PROTOCOL"],
        "s": status,
        "b": str(sent) if sent else "-",
        "B": sent,
        "f": clean(environ.get("HTTP_REFERER", "-")),
        "a": clean(environ.get("HTTP_USER_AGENT", "-")),
        "T": int(duration),
        "D": int(duration * 1_000_000),
        "M": int(duration * 1000),
        "L": f"{duration:.6f}",
        "p": f"<{os.getpid()}>",
    }
    return Atoms(base, environ, out_headers)


def access_line(
    fmt: str,
    environ: dict[str, Any],
    status: int,
    sent: int,
    duration: float,
    out_headers: list[tuple[str, str]],
) -> str:
    """One access-log line for a finished request."""
    values = atoms(environ, status, sent, duration, out_headers)
    if fmt == "json":
        return json.dumps({key: values[key] for key in JSON_ATOMS})
    return (fmt or ACCESS_FORMAT) % values
