"""Read a config file into raw setting values: Python (as Gunicorn reads it) or TOML.

A Python config file is run as Python, as Gunicorn runs it, and every
top-level name that is a setting is taken, however it was defined (under
an ``if``, twice, or as an alias of an imported function). Names that are
not settings (helper variables, imported modules, a ``logger``, obsolete
Gunicorn names) are ignored as Gunicorn ignores them; one that looks like
a misspelt setting (``keep_alive``, ``preload``) gets a warning naming the
right one, never a stop. ``python:package.module`` reads an importable
module instead of a file. A TOML file holds plain settings (no hooks), as
top-level keys or under a ``[forkserve]`` table; being forkserve's own
format, an unknown key there is an error.
"""

from __future__ import annotations

import importlib
import runpy
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .settings import SettingError, nearest, registry

DEFAULT_PATHS = ("forkserve.conf.py", "gunicorn.conf.py")  # looked for in the current directory

# Names real config files use for a setting, where the spelling is too far
# from the setting's own name for a close-match search to find it.
SPELLINGS = {
    "preload": "preload_app",
    "access_logfile": "accesslog",
    "access_log": "accesslog",
    "error_logfile": "errorlog",
    "error_log": "errorlog",
    "log_file": "errorlog",
    "logfile": "errorlog",
    "log_level": "loglevel",
    "num_workers": "workers",
    "keep_alive": "keepalive",
    "log_config": "logconfig",
}
# Gunicorn settings that Gunicorn itself dropped long ago and now ignores.
OBSOLETE = ("x_forwarded_for_header", "debug", "django_settings", "secure_scheme_header", "keyfile_password")


@dataclass
class Loaded:
    """Raw values keyed by setting name, and warnings about the file."""

    values: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def load(location: str) -> Loaded:
    """Raw values from a file path, ``file:PATH`` or ``python:MODULE``."""
    if location.startswith("python:"):
        return _from_namespace(location, vars(_import(location[len("python:") :])))
    path = Path(location.removeprefix("file:"))
    if not path.is_file():
        raise SettingError(f"config: no such file {str(path)!r}")
    if path.suffix == ".toml":
        return Loaded(_load_toml(path))
    return _from_namespace(str(path), _run(path))


def _import(module_name: str) -> dict[str, Any]:
    try:
        return importlib.import_module(module_name)  # type: ignore[return-value]
    except Exception as exc:
        raise SettingError(f"config python:{module_name}: importing it raised {exc!r}") from None


def _run(path: Path) -> dict[str, Any]:
    try:
        return runpy.run_path(str(path), run_name="__config__")
    except SettingError:
        raise
    except Exception as exc:
        raise SettingError(f"config {path}: running it raised {exc!r}") from None


def _load_toml(file: Path) -> dict[str, Any]:
    import tomllib  # on use: few setups need it, every worker would carry it

    try:
        data = tomllib.loads(file.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingError(f"config {file}: {exc}") from None
    data = data.get("forkserve", data)
    entries = {entry.name: entry for entry in registry()}
    for name in data:
        entry = entries.get(name)
        if entry is None:
            raise SettingError(f"config {file}: unknown setting {name!r}{nearest(name, list(entries))}")
        if entry.spec.hook:
            raise SettingError(f"config {file}: hook {name!r} can only be set in a Python config file")
    return dict(data)


def _from_namespace(where: str, namespace: dict[str, Any]) -> Loaded:
    names = [entry.name for entry in registry()]
    loaded = Loaded({})
    for name, value in namespace.items():
        if name in names:
            loaded.values[name] = value
        elif (meant := _misspelt(name, value, names)) is not None:
            loaded.warnings.append(
                f"config {where}: {name!r} is not a setting and is ignored (did you mean {meant}?)"
            )
    return loaded


def _misspelt(name: str, value: Any, names: list[str]) -> str | None:
    """The setting a non-setting name was probably meant to be, or None."""
    if name.startswith("_") or name.isupper() or name in OBSOLETE or _is_helper(value):
        return None
    if name in SPELLINGS:
        return SPELLINGS[name]
    import difflib  # only for a name that is not a setting

    close = difflib.get_close_matches(name, names, n=1, cutoff=0.8)
    return close[0] if close else None


def _is_helper(value: Any) -> bool:
    """Modules, classes, loggers and imported functions are the file's tools, not settings."""
    if isinstance(value, (types.ModuleType, type)):
        return True
    module = getattr(value, "__module__", None)
    return callable(value) and module not in (None, "__config__")
