"""The command line: ``main(argv) -> exit code``.

The parser is generated from the settings registry. Settings are merged
with this precedence (later wins): defaults < config file <
``FORKSERVE_CMD_ARGS`` < command line. This is the only place that turns
errors into exit codes and one-line messages:

    0  stopped cleanly (or --check-config passed)
    1  cannot listen
    2  bad flag, setting value or config file
    3  a worker crashed while booting
    4  the app cannot be loaded
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import __version__, configfile, logs, settings
from .apploader import DEMO_APP, AppLoadError, load_app
from .master import Master, Origin
from .process import EXIT_APP_LOAD_ERROR, daemonize
from .settings import SettingError, Settings
from .sockets import UPGRADE_FDS, BindError, inherited_listeners, open_listeners

EXIT_LISTEN = 1
EXIT_USAGE = 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse, raising instead of exiting so errors stay one line."""

    def error(self, message: str) -> NoReturn:
        raise SettingError(message)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="forkserve",
        description="A pre-fork WSGI server: serves APP from N worker processes.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"forkserve {__version__}")
    parser.add_argument(
        "--check-config", action="store_true", help="Validate the settings and load the app, then exit."
    )
    parser.add_argument(
        "--print-config", action="store_true", help="Print every setting, its value and where it came from."
    )
    for entry in settings.registry():
        spec = entry.spec
        if spec.hook or (not spec.flags and not spec.positional):
            continue  # config-file only
        if spec.positional:
            parser.add_argument(entry.name, nargs="?", default=argparse.SUPPRESS, help=spec.help)
            continue
        help_text = spec.help
        if spec.choices:
            help_text += f" One of: {', '.join(spec.choices)}."
        if entry.default not in ("", (), None, False):
            help_text += f" [default: {_show(entry.default)}]"
        if entry.kind is bool:
            parser.add_argument(
                *spec.flags,
                dest=entry.name,
                action="store_const",
                const=True,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            parser.add_argument(
                *spec.flags,
                dest=entry.name,
                action="append" if entry.kind not in (int, float, str) else "store",
                default=argparse.SUPPRESS,
                metavar=spec.metavar or entry.name.upper(),
                help=help_text.replace("%", "%%"),
            )
    return parser


def _show(value: Any) -> str:
    return ",".join(value) if isinstance(value, tuple) else str(value)


def parse_flags(parser: ArgumentParser, argv: Sequence[str], origin: str) -> dict[str, Any]:
    """Raw setting values given as flags (only those actually given)."""
    values, unknown = parser.parse_known_args(list(argv))
    if unknown:
        flags = [flag for action in parser._actions for flag in action.option_strings]
        word = unknown[0].split("=", 1)[0]
        raise SettingError(f"{origin}: unknown option {word}{settings.nearest(word, flags)}")
    return vars(values)


def load_settings(argv: Sequence[str]) -> tuple[Settings, dict[str, str], dict[str, bool]]:
    """Merged settings, where each came from, and the command flags given."""
    parser = build_parser()
    cli = parse_flags(parser, argv, "command line")
    env = parse_flags(parser, shlex.split(os.environ.get("FORKSERVE_CMD_ARGS", "")), "FORKSERVE_CMD_ARGS")
    commands = {name: bool(cli.pop(name) | env.pop(name)) for name in ("check_config", "print_config")}
    path = cli.get("config") or env.get("config")
    if not path and os.path.isfile(configfile.DEFAULT_PATH):
        path = configfile.DEFAULT_PATH
    from_file = configfile.load(path) if path else {}
    if path:
        from_file["config"] = path
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for origin, values in (
        (f"config file {path}", from_file),
        ("FORKSERVE_CMD_ARGS", env),
        ("command line", cli),
    ):
        merged.update(values)
        sources.update(dict.fromkeys(values, origin))
    config = settings.build(merged)
    if not config.app:
        config = dataclasses.replace(config, app=DEMO_APP)
        sources["app"] = "built-in demo app"
    return config, sources, commands


def print_config(config: Settings, sources: dict[str, str]) -> None:
    for entry in settings.registry():
        value = getattr(config, entry.name)
        if entry.spec.hook:
            value = getattr(value, "__qualname__", None)
        print(f"{entry.name} = {value!r}  # {sources.get(entry.name, 'default')}")


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
    os.umask(int(config.umask, 8))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    launch_dir = os.getcwd()
    try:
        config, sources, commands = load_settings(args)
        prepare_environment(config)
        logs.configure(config)
    except SettingError as error:
        print(f"forkserve: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if commands["print_config"]:
        print_config(config, sources)
        return 0
    if commands["check_config"]:
        return check_config(config)
    origin = Origin(argv=args, cwd=launch_dir, reload_settings=lambda: load_settings(args)[0])
    return serve(config, origin)


def check_config(config: Settings) -> int:
    log = logs.error_logger()
    try:
        load_app(config.app)
    except AppLoadError as error:
        log.error("%s", error)
        return EXIT_APP_LOAD_ERROR
    log.info("Config OK: app %s loads", config.app)
    return 0


def serve(config: Settings, origin: Origin) -> int:
    log = logs.error_logger()
    log.info("Starting forkserve %s", __version__)
    if config.app == DEMO_APP:
        log.info("No app named: serving the built-in demo app (%s)", DEMO_APP)
    else:
        log.info("Serving app: %s", config.app)
    try:
        origin.upgraded = UPGRADE_FDS in os.environ
        listeners = inherited_listeners(config.bind) or open_listeners(config.binds, config.backlog)
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
    try:
        master = Master(config, listeners, app, origin)
    except SettingError as error:
        log.error("%s", error)
        return EXIT_USAGE
    if config.daemon:
        daemonize()
    return master.run()
