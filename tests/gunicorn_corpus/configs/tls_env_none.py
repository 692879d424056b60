# Patterns: certfile-from-env-none, capture-output, stdio-inheritance, pythonpath-site-packages,
#   rotating-file-handler, logconfig-dict-routing.
# TLS only when the deployment provides a certificate (here it does not: certfile is None),
# and a rotating file handler for each Gunicorn logger.
import os

pythonpath = "/usr/local/lib/python3/site-packages"
bind = "0.0.0.0:8000"
workers = 1
threads = 3
capture_output = True
enable_stdio_inheritance = True
certfile = os.getenv("CORPUS_GUNI_CERT")
keyfile = os.getenv("CORPUS_GUNI_KEY")
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "INFO", "handlers": ["error_file", "access_file"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["error_file"], "propagate": 1},
        "gunicorn.access": {"level": "INFO", "handlers": ["access_file"], "propagate": 0},
    },
    "handlers": {
        "error_file": {
            "class": "logging.handlers.RotatingFileHandler",
            "maxBytes": 1024 * 1024,
            "backupCount": 1,
            "formatter": "generic",
            "filename": "rotating.error.log",
        },
        "access_file": {
            "class": "logging.handlers.RotatingFileHandler",
            "maxBytes": 1024 * 1024,
            "backupCount": 1,
            "formatter": "generic",
            "filename": "rotating.access.log",
        },
    },
    "formatters": {
        "generic": {
            "format": "[%(asctime)s] %(levelname)s [%(filename)s:%(lineno)s] %(message)s",
            "datefmt": "[%Y-%m-%d %H:%M:%S %z]",
            "class": "logging.Formatter",
        }
    },
}
