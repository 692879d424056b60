"""The command line: ``main(argv) -> exit code``.

The parser is generated from the settings registry. Settings are merged
with this precedence (later wins): defaults < config file <
``GUNICORN_CMD_ARGS`` < ``FORKSERVE_CMD_ARGS`` < command line. This is the only place that turns
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
from dataclasses import dataclass
from typing import Any, NoReturn

from . import __version__, configfile, logs, settings
from .apploader import DEMO_APP, PASTE_PREFIX, AppLoadError, load_app
from .master import Master, Origin
from .process import EXIT_APP_LOAD_ERROR, daemonize
from .settings import SettingError, Settings
from .sockets import UPGRADE_FDS, BindError, SocketOptions, inherited_listeners, open_listeners

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
        epilog="forkserve ctl COMMAND asks a running server (forkserve ctl --help).",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"forkserve {__version__}")
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
            help_text += f" [default: {settings.show_default(entry)}]"
        common: dict[str, Any] = {"dest": entry.name, "default": argparse.SUPPRESS, "help": help_text}
        if isinstance(entry.default, bool):
            # A switch: --reload sets True, --no-sendfile sets False.
            const = True if spec.const is None else spec.const
            parser.add_argument(*spec.flags, action="store_const", const=const, **common)
            continue
        common["help"] = help_text.replace("%", "%%")
        common["metavar"] = spec.metavar or entry.name.upper()
        if spec.const is not None:
            parser.add_argument(*spec.flags, nargs="?", const=spec.const, **common)
        elif isinstance(entry.default, tuple):
            parser.add_argument(*spec.flags, action="append", **common)
        else:
            parser.add_argument(*spec.flags, **common)
    return parser


def parse_flags(parser: ArgumentParser, argv: Sequence[str], origin: str) -> dict[str, Any]:
    """Raw setting values given as flags (only those actually given)."""
    values, unknown = parser.parse_known_args(list(argv))
    if unknown:
        flags = [flag for action in parser._actions for flag in action.option_strings]
        word = unknown[0].split("=", 1)[0]
        raise SettingError(f"{origin}: unknown option {word}{settings.nearest(word, flags)}")
    return vars(values)


ENV_ARGS = ("GUNICORN_CMD_ARGS", "FORKSERVE_CMD_ARGS")  # in order of precedence, later wins


@dataclass
class Loaded:
    """Merged settings, where each came from, and what the config file said about itself."""

    config: Settings
    sources: dict[str, str]
    warnings: list[str]


def load_settings(argv: Sequence[str], base: str = "") -> Loaded:
    """Merge defaults < config file < GUNICORN_CMD_ARGS < FORKSERVE_CMD_ARGS < command line.

    ``base``: the directory a relative config path is read from (a reload
    passes the directory forkserve started in, which --chdir has left).
    """
    parser = build_parser()
    layers = [(name, parse_flags(parser, shlex.split(os.environ.get(name, "")), name)) for name in ENV_ARGS]
    layers.append(("command line", parse_flags(parser, argv, "command line")))
    path = next((values["config"] for _, values in reversed(layers) if values.get("config")), "")
    if not path:
        path = next((p for p in configfile.DEFAULT_PATHS if os.path.isfile(os.path.join(base, p))), "")
    if path and base and not path.startswith("python:"):
        path = os.path.join(base, path.removeprefix("file:"))  # an absolute path stays as it is
    from_file = configfile.load(path) if path else configfile.Loaded({}, [])
    if path:
        from_file.values["config"] = path
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for origin, values in [(f"config file {path}", from_file.values), *layers]:
        merged.update(values)
        sources.update(dict.fromkeys(values, origin))
    config = settings.build(merged)
    if config.worker_class != "gevent" and patched_by_gevent():
        # The sync worker's epoll loop cannot run on gevent's patched modules.
        raise SettingError(
            f"worker_class: {config.worker_class!r}, but the config file ran gevent's "
            "monkey.patch_all(): set worker_class = 'gevent'"
        )
    if not config.app:
        app, why = pick_app(config)
        config = dataclasses.replace(config, app=app)
        sources["app"] = why
    return Loaded(config, sources, from_file.warnings)


def patched_by_gevent() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("select"))


def pick_app(config: Settings) -> tuple[str, str]:
    """The app when none is named on the command line: wsgi_app, a PasteDeploy file, or the demo."""
    if config.wsgi_app:
        return config.wsgi_app, "wsgi_app"
    if config.paste:
        return PASTE_PREFIX + os.path.abspath(config.paste), "paste"
    return DEMO_APP, "built-in demo app"


def print_config(config: Settings, sources: dict[str, str]) -> None:
    for entry in settings.registry():
        value = getattr(config, entry.name)
        if entry.spec.hook:
            value = getattr(value, "__qualname__", None)
        print(f"{entry.name} = {value!r}  # {sources.get(entry.name, 'default')} | {entry.spec.answer}")


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
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["ctl"]:
        from . import ctl

        return ctl.main(args[1:])
    launch_dir = os.getcwd()
    try:
        loaded = load_settings(args)
        config = loaded.config
        prepare_environment(config)
        logs.configure(config)
    except SettingError as error:
        print(f"forkserve: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if config.print_config:
        print_config(config, loaded.sources)
        return 0
    if config.check_config:
        explain_settings(config, loaded.warnings)
        return check_config(config)
    origin = Origin(argv=args, cwd=launch_dir, sources=loaded.sources)

    def reload_settings() -> Settings:
        again = load_settings(args, launch_dir)
        origin.sources = again.sources
        return again.config

    origin.reload_settings = reload_settings
    return serve(config, origin, loaded.warnings)


def explain_settings(config: Settings, warnings: list[str]) -> None:
    """Say what the config file got wrong and which Gunicorn settings forkserve does not need."""
    log = logs.error_logger()
    for line in warnings:
        log.warning("%s", line)
    for line in settings.not_needed(config):
        log.info("%s", line)


def check_config(config: Settings) -> int:
    log = logs.error_logger()
    try:
        load_app(config.app, config.raw_paste_global_conf)
    except AppLoadError as error:
        log.error("%s", error)
        return EXIT_APP_LOAD_ERROR
    log.info("Config OK: app %s loads", config.app)
    return 0


def serve(config: Settings, origin: Origin, warnings: list[str]) -> int:
    log = logs.error_logger()
    log.info("Starting forkserve %s", __version__)
    explain_settings(config, warnings)
    if config.app == DEMO_APP:
        log.info("No app named: serving the built-in demo app (%s)", DEMO_APP)
    else:
        log.info("Serving app: %s", config.app)
    try:
        origin.upgraded = UPGRADE_FDS in os.environ
        options = SocketOptions(config.backlog, config.umask, config.reuse_port)
        listeners = inherited_listeners(config.bind) or open_listeners(config.binds, options)
    except BindError as error:
        log.error("%s", error)
        return EXIT_LISTEN
    try:
        master = Master(config, listeners, origin)
    except SettingError as error:
        log.error("%s", error)
        return EXIT_USAGE
    if config.daemon:
        daemonize(keep_stdio=config.enable_stdio_inheritance)
        logs.capture_output(config)  # daemonize() pointed fd 1 and 2 elsewhere
    try:
        return master.run()
    except BindError as error:  # the control socket (control.py)
        log.error("%s", error)
        return EXIT_LISTEN
