"""The command line: ``main(argv) -> exit code``.

The parser is generated from the settings registry. This is the only place
that turns errors into exit codes and one-line messages:

    0  stopped cleanly          2  bad flag or setting value
    1  cannot listen            3  a worker crashed while booting
                                4  the app cannot be loaded
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from . import __version__, logs, settings
from .apploader import DEMO_APP, AppLoadError, load_app
from .master import Master
from .process import EXIT_APP_LOAD_ERROR
from .settings import SettingError, Settings
from .sockets import BindError, open_listeners

EXIT_USAGE = 2
EXIT_LISTEN = 1


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with one-line errors that name the nearest valid flag."""

    def error(self, message: str) -> NoReturn:
        raise SettingError(message)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="forkserve",
        description="A pre-fork WSGI server. Serves APP from N worker processes.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"forkserve {__version__}")
    for name, kind, default, spec in settings.registry():
        shown = default if default not in ("", ()) else None
        help_text = spec.help
        if spec.choices:
            help_text += f" One of: {', '.join(spec.choices)}."
        if shown is not None and kind is not bool:
            help_text += f" [default: {shown}]"
        if not spec.flags:
            parser.add_argument(
                name, nargs="?", default=argparse.SUPPRESS, help=spec.help, metavar=spec.metavar
            )
        elif kind is bool:
            parser.add_argument(
                *spec.flags,
                dest=name,
                action="store_const",
                const=True,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            parser.add_argument(
                *spec.flags,
                dest=name,
                action="append" if kind not in (int, float, str) else "store",
                default=argparse.SUPPRESS,
                metavar=spec.metavar or name.upper(),
                help=help_text,
            )
    return parser


def parse_args(argv: Sequence[str]) -> Settings:
    """Settings from the command line, with one-line errors for bad flags."""
    parser = build_parser()
    values, unknown = parser.parse_known_args(list(argv))
    if unknown:
        flags = [flag for action in parser._actions for flag in action.option_strings]
        word = unknown[0].split("=", 1)[0]
        raise SettingError(f"unknown option {word}{settings.nearest(word, flags)}")
    return settings.build(vars(values))


def prepare_environment(config: Settings) -> None:
    """--chdir, --pythonpath and --env: where the app will be imported from."""
    if config.chdir:
        try:
            os.chdir(config.chdir)
        except OSError as exc:
            raise SettingError(f"chdir: cannot change to {config.chdir!r}: {exc.strerror}") from None
    for entry in reversed(config.pythonpath):
        sys.path.insert(0, os.path.abspath(entry))
    # Like `python -m`, the current directory comes first so "myproject.wsgi" is found.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for pair in config.raw_env:
        key, _, value = pair.partition("=")
        os.environ[key] = value


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = parse_args(sys.argv[1:] if argv is None else argv)
        prepare_environment(config)
    except SettingError as error:
        print(f"forkserve: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    log, _ = logs.configure(config.loglevel, config.errorlog, config.accesslog)
    log.info("Starting forkserve %s", __version__)
    if not config.app:
        config = _with_demo_app(config)
        log.info("No app named: serving the built-in demo app (%s)", DEMO_APP)
    else:
        log.info("Serving app: %s", config.app)
    try:
        listeners = open_listeners(config.binds, config.backlog)
    except BindError as error:
        log.error("%s", error)
        return EXIT_LISTEN
    app = None
    if config.preload_app:
        try:
            app = load_app(config.app)
        except AppLoadError as error:
            log.error("%s", error)
            return EXIT_APP_LOAD_ERROR
    return Master(config, listeners, app).run()


def _with_demo_app(config: Settings) -> Settings:
    import dataclasses

    return dataclasses.replace(config, app=DEMO_APP)
