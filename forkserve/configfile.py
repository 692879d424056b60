"""Read a config file into raw setting values: Python or TOML.

A Python config file is run as Python (as Gunicorn's is), and its
top-level names are read as settings and hooks. Modules, classes,
imported helpers, ``_private`` names and UPPER_CASE constants are ignored;
any other name must be a setting, so a typo
is an error naming the nearest setting rather than a silent no-op. A TOML
file holds plain settings (no hooks), as top-level keys or under a
``[forkserve]`` table.
"""

from __future__ import annotations

import runpy
import tomllib
import types
from pathlib import Path
from typing import Any

from .settings import SettingError, nearest, registry

DEFAULT_PATH = "forkserve.conf.py"


def load(path: str) -> dict[str, Any]:
    """Raw values, keyed by setting name, from the file at ``path``."""
    file = Path(path)
    if not file.is_file():
        raise SettingError(f"config: no such file {path!r}")
    if file.suffix == ".toml":
        return _load_toml(file)
    return _load_python(file)


def _load_toml(file: Path) -> dict[str, Any]:
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


def _load_python(file: Path) -> dict[str, Any]:
    try:
        namespace = runpy.run_path(str(file), run_name="forkserve_config")
    except SettingError:
        raise
    except Exception as exc:
        raise SettingError(f"config {file}: running it raised {exc!r}") from None
    names = [entry.name for entry in registry()]
    values = {}
    for name, value in namespace.items():
        if name.startswith("_") or name.isupper() or _is_helper(value):
            continue
        if name not in names:
            raise SettingError(f"config {file}: unknown setting {name!r}{nearest(name, names)}")
        values[name] = value
    return values


def _is_helper(value: Any) -> bool:
    """Modules, classes and imported functions are the file's tools, not settings."""
    if isinstance(value, (types.ModuleType, type)):
        return True
    module = getattr(value, "__module__", None)
    return callable(value) and module not in (None, "forkserve_config")
