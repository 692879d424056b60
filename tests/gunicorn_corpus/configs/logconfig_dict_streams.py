# Patterns: logconfig-dict-routing, logconfig-dict-built-by-update, ext-stream-handlers,
#   uppercase-constants, imported-modules, access-log-format-json.
# A project-wide logging dict copied and extended for Gunicorn's two loggers: access to
# stdout, errors to stderr.
import copy

BASE_LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s %(message)s"}},
    "handlers": {
        "out": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stdout"},
        "err": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"},
    },
    "root": {"level": "INFO", "handlers": ["err"]},
    "loggers": {},
}

gunicorn_loggers = dict(
    loggers={
        "gunicorn.error": {"level": "INFO", "handlers": ["err"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["out"], "propagate": False},
    },
)

_config = copy.deepcopy(BASE_LOGGING)
_config.update(gunicorn_loggers)
logconfig_dict = _config

workers = 1
access_log_format = '{"remote": "%(h)s", "request": "%(r)s", "status": %(s)s, "micros": %(D)s}'
