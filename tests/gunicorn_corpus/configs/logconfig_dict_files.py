# Patterns: logconfig-dict-routing, logconfig-file-handlers, rotating-file-handler,
#   log-paths-under-env-dir, root-logger.
# gunicorn.error and gunicorn.access each routed to their own file; the root logger to stderr.
import os

_LOGS = os.path.join(os.environ["CORPUS_DIR"], "logs")
os.makedirs(_LOGS, exist_ok=True)

workers = 2
bind = "0.0.0.0:8080"
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "INFO", "handlers": ["console"]},
    "loggers": {
        "gunicorn.error": {
            "level": "INFO",
            "handlers": ["error_file"],
            "propagate": False,
            "qualname": "gunicorn.error",
        },
        "gunicorn.access": {
            "level": "INFO",
            "handlers": ["access_file"],
            "propagate": False,
            "qualname": "gunicorn.access",
        },
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "generic", "stream": "ext://sys.stderr"},
        "error_file": {
            "class": "logging.handlers.RotatingFileHandler",
            "maxBytes": 10 * 1024 * 1024,
            "backupCount": 2,
            "formatter": "generic",
            "filename": os.path.join(_LOGS, "corpus-error.log"),
        },
        "access_file": {
            "class": "logging.FileHandler",
            "formatter": "access",
            "filename": os.path.join(_LOGS, "corpus-access.log"),
        },
    },
    "formatters": {
        "generic": {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"},
        "access": {"format": "%(message)s"},
    },
}
