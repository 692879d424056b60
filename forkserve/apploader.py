"""Turn "module:attr", "module" or "module:factory(args)" into a WSGI callable.

Factory arguments must be Python literals; they are read with
``ast.literal_eval`` and nothing is ever passed to ``eval``. An app named
``paste:/path/to/app.ini[#name]`` comes from a PasteDeploy file (the
``paste`` setting), when PasteDeploy is installed.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable
from typing import Any

DEMO_APP = "forkserve.demo:app"
PASTE_PREFIX = "paste:"


class AppLoadError(Exception):
    """The app named on the command line cannot be loaded; the message says why."""


def load_app(spec: str, paste_globals: tuple[str, ...] = ()) -> Callable[..., Any]:
    """The WSGI callable that ``spec`` names; AppLoadError says why it cannot be had."""
    if spec.startswith(PASTE_PREFIX):
        return _load_paste(spec[len(PASTE_PREFIX) :], paste_globals)
    module_name, _, expression = spec.partition(":")
    if not module_name:
        raise AppLoadError(f"app {spec!r}: expected module:name, e.g. myproject.wsgi:application")
    module = _import(module_name, spec)
    if not expression:
        for name in ("application", "app"):
            if callable(getattr(module, name, None)):
                return getattr(module, name)  # type: ignore[no-any-return]
        raise AppLoadError(f"app {spec!r}: module {module_name!r} has no 'application' or 'app'")
    name, args, kwargs = _parse_expression(spec, expression)
    try:
        target = getattr(module, name)
    except AttributeError:
        raise AppLoadError(f"app {spec!r}: module {module_name!r} has no attribute {name!r}") from None
    if args is not None:
        if not callable(target):
            raise AppLoadError(f"app {spec!r}: {name!r} is not callable, so it is not a factory")
        try:
            target = target(*args, **kwargs)
        except Exception as exc:
            raise AppLoadError(f"app {spec!r}: factory {name}() raised {exc!r}") from exc
    if not callable(target):
        raise AppLoadError(f"app {spec!r}: {name!r} is {type(target).__name__}, not a WSGI callable")
    return target  # type: ignore[no-any-return]


def _load_paste(ini: str, paste_globals: tuple[str, ...]) -> Callable[..., Any]:
    try:
        from paste.deploy import loadapp
    except ImportError:
        raise AppLoadError(f"paste {ini!r}: PasteDeploy is not installed (pip install PasteDeploy)") from None
    path, _, name = ini.partition("#")
    global_conf = dict(pair.split("=", 1) for pair in paste_globals)
    try:
        app = loadapp(f"config:{path}", name=name or None, global_conf=global_conf)
    except Exception as exc:
        raise AppLoadError(f"paste {ini!r}: loading it raised {exc!r}") from exc
    return app  # type: ignore[no-any-return]


def _import(module_name: str, spec: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise AppLoadError(
                f"app {spec!r}: no module named {exc.name!r} (sys.path[0] is {sys.path[0]!r})"
            ) from None
        raise AppLoadError(f"app {spec!r}: importing {module_name!r} failed: {exc!r}") from exc
    except Exception as exc:
        raise AppLoadError(f"app {spec!r}: importing {module_name!r} raised {exc!r}") from exc


def _parse_expression(spec: str, expression: str) -> tuple[str, tuple[Any, ...] | None, dict[str, Any]]:
    """Split 'name' or 'name(literal args)' without evaluating any code."""
    try:
        node = ast.parse(expression.strip(), mode="eval").body
    except SyntaxError:
        raise AppLoadError(f"app {spec!r}: {expression!r} is not a name or a call") from None
    if isinstance(node, ast.Name):
        return node.id, None, {}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        try:
            args = tuple(ast.literal_eval(arg) for arg in node.args)
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
        except ValueError:
            raise AppLoadError(f"app {spec!r}: factory arguments must be literals") from None
        if any(kw.arg is None for kw in node.keywords):
            raise AppLoadError(f"app {spec!r}: **kwargs are not allowed in a factory call")
        return node.func.id, args, kwargs
    raise AppLoadError(f"app {spec!r}: {expression!r} is not a name or a call")
